"""Text -> image sampling with the DeepFloyd IF cascade (stage I 64 px, stage II 256 px), as diffusers'
IFPipeline and IFSuperResolutionPipeline do it, in JAX.

The DDPM step is written here because diffusers' FlaxDDPMScheduler differs from the PyTorch
DDPMScheduler that IF ships with: it steps to t−1 whatever the number of inference steps, mixes the
learned-range variance linearly instead of in log space, and has no dynamic thresholding. The step below
follows the PyTorch scheduler (checked against it in tests/test_sampling.py), and so does the noise
schedule (sds.ddpm_alphas_cumprod).

UNets enter as a pure function and its parameters: stage I `unet_fn(params, x [B,H,W,3], t [B], emb [B,L,D])
-> [B,H,W,6]`, stage II `unet_fn(params, x [B,H,W,6], t [B], emb [B,L,D], class_labels [B]) -> [B,H,W,6]`
(UNetApply(module) of a guidance.load_if_unet module).

Noise comes from one PRNG key for the whole batch, or from one key per image ([N] keys): then image n's
noise depends on its key alone, whatever batch, batch size or device count draws it. Across devices
(`mesh`, a jax.sharding.Mesh) each device runs the guided step on its own slice of the batch (shard_map)
with the parameters replicated; nothing but the final images crosses devices.
"""

import dataclasses
import functools
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm import tqdm

from guidance.if_unet import encode_text
from guidance.sds import ddpm_alphas_cumprod, text_rows

VARIANCE_TYPES = ("fixed_small", "fixed_large", "learned_range")
TIMESTEP_SPACINGS = ("leading", "trailing", "linspace")


@dataclasses.dataclass(frozen=True)
class SchedulerConfig:
    """The DDPMScheduler settings that sampling uses; defaults are IF-I-XL's scheduler_config.json."""
    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    variance_type: str = "learned_range"
    clip_sample: bool = True
    clip_sample_range: float = 1.0
    thresholding: bool = True
    dynamic_thresholding_ratio: float = 0.95
    sample_max_value: float = 1.5
    timestep_spacing: str = "leading"
    steps_offset: int = 0

    @classmethod
    def from_dict(cls, config: dict, source: str = "scheduler config") -> "SchedulerConfig":
        unsupported = {"prediction_type": "epsilon", "trained_betas": None, "rescale_betas_zero_snr": False,
                       "beta_schedule": "squaredcos_cap_v2"}
        for key, supported in unsupported.items():
            if config.get(key, supported) != supported:
                raise ValueError(f"{source}: {key} = {config[key]!r} is not supported (only {supported!r}).")
        fields = {f.name for f in dataclasses.fields(cls)}
        result = cls(**{k: v for k, v in config.items() if k in fields})
        if result.variance_type not in VARIANCE_TYPES:
            raise ValueError(f"{source}: variance_type = {result.variance_type!r}; supported: {VARIANCE_TYPES}.")
        if result.timestep_spacing not in TIMESTEP_SPACINGS:
            raise ValueError(f"{source}: timestep_spacing = {result.timestep_spacing!r}; supported: "
                             f"{TIMESTEP_SPACINGS}.")
        return result

    @classmethod
    def from_model_dir(cls, model_dir: str, subfolder: str = "scheduler") -> "SchedulerConfig":
        """`model_dir/subfolder/scheduler_config.json` if present, else the defaults (IF-I-XL's values)."""
        path = os.path.join(model_dir, subfolder, "scheduler_config.json")
        if not os.path.isfile(path):
            return cls()
        with open(path) as f:
            return cls.from_dict(json.load(f), path)

    def alphas_cumprod(self):
        return ddpm_alphas_cumprod(self.num_train_timesteps, self.beta_schedule)


def ddpm_timesteps(config: SchedulerConfig, num_steps: int) -> list[tuple[int, int]]:
    """[(t, previous t)] of a num_steps sampling run, as DDPMScheduler.set_timesteps/previous_timestep."""
    total = config.num_train_timesteps
    if not 1 <= num_steps <= total:
        raise ValueError(f"num_steps must be in [1, {total}]; got {num_steps}.")
    if config.timestep_spacing == "leading":
        steps = (np.arange(num_steps) * (total // num_steps)).round()[::-1] + config.steps_offset
    elif config.timestep_spacing == "trailing":
        steps = np.round(np.arange(total, 0, -total / num_steps)) - 1
    else:
        steps = np.linspace(0, total - 1, num_steps).round()[::-1]
    return [(int(t), int(t) - total // num_steps) for t in steps]


def dynamic_threshold(x0, ratio: float, max_value: float):
    """Imagen's dynamic thresholding per image: s = clamp(quantile_ratio(|x0|), 1, max_value); x0 -> clip(x0, ±s)/s."""
    flat = x0.reshape(x0.shape[0], -1)
    s = jnp.clip(jnp.quantile(jnp.abs(flat), ratio, axis=1, keepdims=True), 1.0, max_value)
    return (jnp.clip(flat, -s, s) / s).reshape(x0.shape)


def step_coefficients(config: SchedulerConfig, alphas_cumprod, t, prev_t):
    """The scalars of the step x_t -> x_{prev_t}, [..., 7] for t and prev_t of shape [...]: √(1−ᾱ_t),
    1/√ᾱ_t, the posterior mean's factors of x̂0 and of x_t, the fixed standard deviation (variance_type
    fixed_small or fixed_large), log β_t and the log posterior variance (the ends of learned_range)."""
    alphas_cumprod = jnp.asarray(alphas_cumprod, jnp.float32)
    ab_t = alphas_cumprod[t]
    ab_prev = jnp.where(prev_t >= 0, alphas_cumprod[jnp.maximum(prev_t, 0)], 1.0)
    alpha_t = ab_t / ab_prev
    beta_t = 1.0 - alpha_t
    variance = jnp.maximum((1.0 - ab_prev) / (1.0 - ab_t) * beta_t, 1e-20)
    fixed_std = jnp.sqrt(beta_t) if config.variance_type == "fixed_large" else jnp.sqrt(variance)
    return jnp.stack([jnp.sqrt(1.0 - ab_t), 1.0 / jnp.sqrt(ab_t), jnp.sqrt(ab_prev) * beta_t / (1.0 - ab_t),
                      jnp.sqrt(alpha_t) * (1.0 - ab_prev) / (1.0 - ab_t), fixed_std, jnp.log(beta_t),
                      jnp.log(variance)], -1)


def ddpm_step(config: SchedulerConfig, alphas_cumprod, model_output, t, prev_t, sample, noise):
    """x_t -> x_{prev_t} (DDPMScheduler.step). model_output [B,H,W,C] ε̂, or [B,H,W,2C] ε̂ and the learned
    variance interpolant in [−1, 1] (variance_type learned_range); noise [B,H,W,C] (unused at t = 0)."""
    return _ddpm_update(config, step_coefficients(config, alphas_cumprod, t, prev_t), model_output, t, sample, noise)


def _ddpm_update(config: SchedulerConfig, c, model_output, t, sample, noise):
    """ddpm_step given its step_coefficients c [7]."""
    channels = sample.shape[-1]
    if config.variance_type == "learned_range" and model_output.shape[-1] != 2 * channels:
        raise ValueError(f"ddpm_step: variance_type learned_range needs {2 * channels} output channels "
                         f"(ε̂ and variance); got {model_output.shape[-1]}.")
    x0 = (sample - c[0] * model_output[..., :channels]) * c[1]
    if config.thresholding:
        x0 = dynamic_threshold(x0, config.dynamic_thresholding_ratio, config.sample_max_value)
    elif config.clip_sample:
        x0 = jnp.clip(x0, -config.clip_sample_range, config.clip_sample_range)
    mean = c[2] * x0 + c[3] * sample
    if config.variance_type == "learned_range":
        frac = (model_output[..., channels:] + 1.0) / 2.0
        std = jnp.exp(0.5 * (frac * c[5] + (1.0 - frac) * c[6]))
    else:
        std = c[4]
    return mean + jnp.where(t > 0, std * noise, 0.0)


def _per_image_uncond(cond_emb, uncond_emb) -> bool:
    """Whether uncond_emb has a row per image, as cond_emb has, rather than one row for all."""
    return jax.tree_util.tree_leaves(uncond_emb)[0].ndim == jax.tree_util.tree_leaves(cond_emb)[0].ndim


def _per_image(key) -> bool:
    """Whether `key` is one PRNG key per image ([N] typed or [N,2] raw keys) rather than a single key."""
    return key.ndim == (1 if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key) else 2)


def _split(key):
    """Two keys from a single key, or two [N] arrays from per-image keys [N]."""
    if _per_image(key):
        pairs = jax.vmap(jax.random.split)(key)
        return pairs[:, 0], pairs[:, 1]
    first, second = jax.random.split(key)
    return first, second


def _fold_in(key, data):
    return jax.vmap(jax.random.fold_in, (0, None))(key, data) if _per_image(key) else jax.random.fold_in(key, data)


def _normal(key, shape):
    """Standard normal float32 [N,...]: the whole shape from a single key, or row n from key[n] alone."""
    if _per_image(key):
        return jax.vmap(lambda k: jax.random.normal(k, shape[1:], jnp.float32))(key)
    return jax.random.normal(key, shape, jnp.float32)


@functools.partial(jax.jit, static_argnames=("unet_fn", "scheduler", "guidance_scale", "mesh"))
def _guided_step(unet_fn, scheduler, guidance_scale, mesh, params, coefficients, x, t, key, step, cond_emb,
                 uncond_emb, cond_image, class_labels):
    def local(params, coefficients, x, t, key, step, cond_emb, uncond_emb, cond_image, class_labels):
        n, channels = x.shape[0], x.shape[-1]
        inputs = x if cond_image is None else jnp.concatenate([x, cond_image.astype(x.dtype)], -1)
        extra = () if class_labels is None else (jnp.concatenate([class_labels, class_labels]),)
        emb = jax.tree_util.tree_map(lambda c, u: jnp.concatenate([jnp.broadcast_to(u, c.shape), c]), cond_emb,
                                     uncond_emb)
        out = unet_fn(params, jnp.concatenate([inputs, inputs]), jnp.full((2 * n,), t), emb,
                      *extra).astype(jnp.float32)
        uncond, text = out[:n], out[n:]
        eps = uncond[..., :channels] + guidance_scale * (text[..., :channels] - uncond[..., :channels])
        out = jnp.concatenate([eps, text[..., channels:]], -1)
        return _ddpm_update(scheduler, coefficients, out, t, x, _normal(_fold_in(key, step), x.shape))

    args = (params, coefficients, x, t, key, step, cond_emb, uncond_emb, cond_image, class_labels)
    if mesh is None:
        return local(*args)
    # Each device doubles its own slice into the [unconditional; text] pair: under plain jit the
    # concatenation along the sharded batch axis would move activations between devices.
    batch, whole = P(mesh.axis_names), P()
    specs = (whole, whole, batch, whole, batch, whole, batch,
             batch if _per_image_uncond(cond_emb, uncond_emb) else whole, batch, batch)
    return jax.shard_map(local, mesh=mesh, in_specs=specs, out_specs=batch)(*args)


def sample_ddpm(unet_fn, params, key, cond_emb, uncond_emb, image_size: int, num_steps: int, guidance_scale: float,
                scheduler: SchedulerConfig, cond_image=None, class_labels=None, channels: int = 3,
                progress: bool = True, desc: str = "IF sampling", mesh: Mesh | None = None):
    """Classifier-free-guided DDPM sampling as the IF pipelines do it: ε̂ = ε̂_u + g·(ε̂_t − ε̂_u) with the
    text branch's learned variance. unet_fn(params, x, t, emb[, class_labels]) must be the same object from
    call to call (it is a static argument of the jitted step: a new function recompiles). cond_image
    [N,S,S,c] is concatenated to the UNet input and class_labels [N] passed on (stage II). key: a single
    PRNG key, or one per image [N] (image n's noise then comes from key[n] alone). mesh: the batch is split
    over the mesh's devices (N a multiple of their number, one key per image), params replicated. cond_emb
    and uncond_emb may be TextContexts of the embeddings (UNetApply.text_context) for an IF UNet's unet_fn.
    Returns [N,S,S,channels] in [−1, 1] (float32)."""
    n = text_rows(cond_emb, uncond_emb, "Sampling")
    if _per_image(key) and key.shape[0] != n:
        raise ValueError(f"Sampling: {key.shape[0]} per-image keys for {n} images.")
    if mesh is not None and (not _per_image(key) or n % mesh.size):
        raise ValueError(f"Sampling: across {mesh.size} devices the batch ({n}) must be a multiple of "
                         f"{mesh.size}, with one key per image.")
    steps = ddpm_timesteps(scheduler, num_steps)
    # The steps' scalars are computed here, once: inside the jitted step XLA may rewrite them (a division
    # into a product by a reciprocal) differently for different device counts, changing the last bits.
    coefficients = step_coefficients(scheduler, scheduler.alphas_cumprod(), *np.array(steps).T)
    key_init, key_steps = _split(key)
    x = _normal(key_init, (n, image_size, image_size, channels))
    if mesh is not None:
        whole, batch = NamedSharding(mesh, P()), NamedSharding(mesh, P(mesh.axis_names))
        params, coefficients = jax.device_put((params, coefficients), whole)  # no-op: replicated params
        x, key_steps, cond_emb, cond_image, class_labels = jax.device_put(
            (x, key_steps, cond_emb, cond_image, class_labels), batch)
        uncond_emb = jax.device_put(uncond_emb, batch if _per_image_uncond(cond_emb, uncond_emb) else whole)
    for i, ((t, _), c) in enumerate(zip(tqdm(steps, desc=desc, disable=not progress), coefficients)):
        x = _guided_step(unet_fn, scheduler, float(guidance_scale), mesh, params, c, x,
                         jnp.int32(t), key_steps, jnp.int32(i), cond_emb, uncond_emb, cond_image, class_labels)
    return x


def sample_stage1(unet_fn, params, key, cond_emb, uncond_emb, num_steps: int = 100, guidance_scale: float = 7.0,
                  scheduler: SchedulerConfig = SchedulerConfig(), image_size: int = 64, progress: bool = True,
                  mesh: Mesh | None = None):
    """IF stage I: T5 embeddings cond_emb [N,L,D] (uncond_emb [L,D]: the empty prompt) -> images
    [N,size,size,3] in [0,1]. Defaults are IFPipeline's (100 steps, guidance 7). key and mesh as sample_ddpm."""
    x = sample_ddpm(unet_fn, params, key, cond_emb, uncond_emb, image_size, num_steps, guidance_scale, scheduler,
                    progress=progress, desc="IF stage I", mesh=mesh)
    return jnp.clip(x / 2 + 0.5, 0.0, 1.0)


def resize_align_corners(x, size: int):
    """Bilinear resize of [N,h,w,C] to [N,size,size,C] with align_corners=True (torch's F.interpolate in
    IFSuperResolutionPipeline): output pixel i samples input position i·(h−1)/(size−1)."""
    def matrix(n_in):
        pos = np.arange(size) * ((n_in - 1) / (size - 1) if size > 1 else 0.0)
        lo = np.minimum(np.floor(pos).astype(int), n_in - 1)
        hi = np.minimum(lo + 1, n_in - 1)
        m = np.zeros((size, n_in), np.float32)
        np.add.at(m, (np.arange(size), lo), 1.0 - (pos - lo))
        np.add.at(m, (np.arange(size), hi), pos - lo)
        return jnp.asarray(m)
    return jnp.einsum("yh,nhwc,xw->nyxc", matrix(x.shape[1]), x, matrix(x.shape[2]))


def sample_stage2(unet_fn, params, key, low_res, cond_emb, uncond_emb, num_steps: int = 50, guidance_scale: float = 4.0,
                  noise_level: int = 250, scheduler: SchedulerConfig = SchedulerConfig(),
                  noising_scheduler: SchedulerConfig = SchedulerConfig(), image_size: int = 256,
                  progress: bool = True, mesh: Mesh | None = None):
    """IF stage II: low_res [N,h,w,3] in [0,1] (stage I output) -> [N,size,size,3] in [0,1]. The low-res
    image, upsampled (bilinear, align_corners) and noised to `noise_level` with the noising scheduler's
    schedule, is concatenated to the UNet input; the level is the UNet's class label. Defaults are
    IFSuperResolutionPipeline's (50 steps, guidance 4, noise level 250). key and mesh as sample_ddpm."""
    n = text_rows(cond_emb, uncond_emb, "Sampling")
    if low_res.ndim != 4 or low_res.shape[-1] != 3 or low_res.shape[0] != n:
        raise ValueError(f"sample_stage2: low_res must be [N,h,w,3] in [0,1] with N = {n}; got "
                         f"{low_res.shape}.")
    if not 0 <= noise_level < noising_scheduler.num_train_timesteps:
        raise ValueError(f"sample_stage2: noise_level {noise_level} outside [0, "
                         f"{noising_scheduler.num_train_timesteps}).")
    key_aug, key_sample = _split(key)
    upscaled = resize_align_corners(jnp.asarray(low_res, jnp.float32) * 2 - 1, image_size)
    ab = noising_scheduler.alphas_cumprod()[noise_level]
    upscaled = jnp.sqrt(ab) * upscaled + jnp.sqrt(1 - ab) * _normal(key_aug, upscaled.shape)
    labels = jnp.full((low_res.shape[0],), noise_level, jnp.int32)
    x = sample_ddpm(unet_fn, params, key_sample, cond_emb, uncond_emb, image_size, num_steps, guidance_scale,
                    scheduler, cond_image=upscaled, class_labels=labels, progress=progress, desc="IF stage II",
                    mesh=mesh)
    return jnp.clip(x / 2 + 0.5, 0.0, 1.0)


@dataclasses.dataclass(frozen=True)
class UNetApply:
    """unet_fn(params, x, t, emb[, class_labels]) of a guidance.load_if_unet module. Hashable and equal for
    equal modules, so the jitted sampling step compiles once per model, not once per call."""
    module: Any

    def __call__(self, params, *args):
        return self.module.apply({"params": params}, *args)

    def text_context(self, params, emb):
        """The TextContext of embeddings emb [N,L,D] (guidance.encode_text), which the UNet reads in their
        place: the text's part of the UNet then runs once per batch, not at each of its sampling steps."""
        return _text_context(self.module, params, emb)


@functools.partial(jax.jit, static_argnums=0)
def _text_context(module, params, emb):
    return encode_text(module, params, emb)


def iter_cascade(stage1: dict, stage2: dict, embeddings, uncond_emb, prompt_keys, num_images_per_prompt: int,
                 batch_size: int = 8, devices=None, progress: bool = True):
    """Yields, prompt by prompt, uint8 images [num_images_per_prompt, S, S, 3] of the IF cascade:
    sample_stage1(**stage1) then sample_stage2(**stage2), the dicts holding every argument but the key,
    images, embeddings, progress and mesh (a UNetApply unet_fn and params at least). embeddings [P,L,D]
    (NumPy): prompt p's T5 embedding; uncond_emb [L,D]: the empty prompt's; prompt_keys [P]: PRNG keys. The
    UNets read the embeddings' TextContexts, computed once per batch.

    Image j of prompt p is drawn from fold_in(prompt_keys[p], j) alone. Batches are split over `devices`
    (default: this process's, jax.local_devices()) along a one-axis mesh, the parameters replicated; each
    device takes min(batch_size, ⌈n / devices⌉) images, so that few images per prompt leave no device
    slots idle. A batch holds one prompt's images, the last one padded (shapes stay static) and its
    padding dropped: a prompt's images do not depend on the other prompts, to the bit. Another per-device
    batch size changes them by float rounding (kernels differ with the batch shape); another device count
    alone left them equal to the bit on CPU (tests/test_gen_image_devices.py).
    Batch k + 1 is queued on the devices before batch k's images are fetched, so the caller's work on
    them (writing files) overlaps the sampling. progress: a bar of images, with images per second."""
    mesh = Mesh(np.array(jax.local_devices() if devices is None else devices), ("batch",))
    whole = NamedSharding(mesh, P())
    # Rebinding drops the caller's copies where the caller keeps no reference (iter_images does not).
    stage1 = {**stage1, "params": jax.device_put(stage1["params"], whole)}
    stage2 = {**stage2, "params": jax.device_put(stage2["params"], whole)}
    n = num_images_per_prompt
    per_batch = min(batch_size, -(-n // mesh.size)) * mesh.size

    def text(stage, emb):  # the stage UNet's TextContext of one embedding [L,D], replicated
        context = stage["unet_fn"].text_context(stage["params"], jnp.asarray(emb)[None])
        return jax.device_put(jax.tree_util.tree_map(lambda a: a[0], context), whole)

    uncond = [text(stage, uncond_emb) for stage in (stage1, stage2)]

    def launch(prompt, start):
        index = np.minimum(np.arange(start, start + per_batch), n - 1)  # padded with the last image
        key1, key2 = _split(jax.vmap(jax.random.fold_in, (None, 0))(prompt_keys[prompt], index))
        cond = [jax.tree_util.tree_map(lambda a: jnp.broadcast_to(a, (per_batch, *a.shape)),
                                       text(stage, embeddings[prompt])) for stage in (stage1, stage2)]
        low = sample_stage1(key=key1, cond_emb=cond[0], uncond_emb=uncond[0], progress=False, mesh=mesh, **stage1)
        high = sample_stage2(key=key2, low_res=low, cond_emb=cond[1], uncond_emb=uncond[1], progress=False,
                             mesh=mesh, **stage2)
        return start, jnp.round(high * 255).astype(jnp.uint8)

    ready = []  # fetched images of the prompt being finished

    def finish(start, images):
        images = np.asarray(images)[:n - start]
        ready.extend(images)
        bar.update(len(images))
        if len(ready) == n:
            yield np.stack(ready)
            ready.clear()

    with tqdm(total=len(prompt_keys) * n, desc="IF images", unit="img", disable=not progress) as bar:
        pending = None
        for prompt in range(len(prompt_keys)):
            for start in range(0, n, per_batch):
                queued = launch(prompt, start)
                if pending is not None:
                    yield from finish(*pending)
                pending = queued
        if pending is not None:
            yield from finish(*pending)


def _load_stage(model_dir: str, dtype, **settings) -> dict:
    from guidance.unet_weights import load_if_unet

    module, params = load_if_unet(model_dir, dtype)
    return dict(unet_fn=UNetApply(module), params=params, **settings)


def iter_images(if_stage1_dir: str, if_stage2_dir: str, prompts: list[str], num_images_per_prompt: int = 1,
                seed: int = 0, prompt_seeds: list[int] | None = None,
                cache_dir: str = os.path.expanduser("~/.cache/interfusion_jax/prompt_embeddings"),
                dtype=jnp.bfloat16, batch_size: int = 8, stage1_steps: int = 100, stage2_steps: int = 50,
                stage1_guidance: float = 7.0, stage2_guidance: float = 4.0, noise_level: int = 250,
                devices=None, progress: bool = True):
    """Yields, prompt by prompt, uint8 images [num_images_per_prompt, S, S, 3] (S = stage II's sample_size,
    256 for IF-II-L) from the IF cascade; the models load once for all prompts. Prompt i's key is
    PRNGKey(prompt_seeds[i]), or fold_in(PRNGKey(seed), i) without prompt_seeds, and its image j comes from
    fold_in(that key, j) alone: a prompt's images depend neither on the other prompts nor, but for float
    rounding, on batch_size (images per device and batch) or devices (see iter_cascade). T5 embeddings come
    from stage I's repository (text_encoder/, tokenizer/) through the prompt cache (the encoder is freed
    before the UNets load); schedulers from each repository's scheduler/ (and stage II's
    image_noising_scheduler/) config, IF-I-XL's values where absent. progress: a bar of images."""
    from guidance.prompt_cache import embed_prompts
    from guidance.unet_weights import resolve_unet_dir

    if prompt_seeds is not None and len(prompt_seeds) != len(prompts):
        raise ValueError(f"iter_images: {len(prompt_seeds)} prompt_seeds for {len(prompts)} prompts.")
    distinct = list(dict.fromkeys(prompts)) + [""]
    by_text = dict(zip(distinct, embed_prompts(if_stage1_dir, distinct, cache_dir)))
    sizes = []
    for model_dir in (if_stage1_dir, if_stage2_dir):
        config_path = os.path.join(resolve_unet_dir(model_dir), "config.json")
        with open(config_path) as f:
            sizes.append(json.load(f).get("sample_size"))
        if not isinstance(sizes[-1], int):
            raise ValueError(f"generate_images: {config_path} must give an integer sample_size (the output size); "
                             f"got {sizes[-1]!r}.")
    if prompt_seeds is not None:
        prompt_keys = jnp.stack([jax.random.PRNGKey(s) for s in prompt_seeds])
    else:
        prompt_keys = jax.vmap(jax.random.fold_in, (None, 0))(jax.random.PRNGKey(seed), jnp.arange(len(prompts)))
    # The loaded parameters go straight into the call, so that iter_cascade holds their only reference.
    yield from iter_cascade(
        _load_stage(if_stage1_dir, dtype, num_steps=stage1_steps, guidance_scale=stage1_guidance,
                    scheduler=SchedulerConfig.from_model_dir(if_stage1_dir), image_size=sizes[0]),
        _load_stage(if_stage2_dir, dtype, num_steps=stage2_steps, guidance_scale=stage2_guidance,
                    noise_level=noise_level, scheduler=SchedulerConfig.from_model_dir(if_stage2_dir),
                    noising_scheduler=SchedulerConfig.from_model_dir(if_stage2_dir, "image_noising_scheduler"),
                    image_size=sizes[1]),
        np.stack([by_text[p] for p in prompts]), by_text[""], prompt_keys, num_images_per_prompt, batch_size,
        devices, progress)


def generate_images(if_stage1_dir: str, if_stage2_dir: str, prompts: list[str], num_images_per_prompt: int = 1,
                    **kwargs) -> np.ndarray:
    """uint8 images [len(prompts)·num_images_per_prompt, S, S, 3], prompt-major; arguments as iter_images."""
    return np.concatenate(list(iter_images(if_stage1_dir, if_stage2_dir, prompts, num_images_per_prompt,
                                           **kwargs)))
