"""Text -> image sampling with the DeepFloyd IF cascade (stage I 64 px, stage II 256 px), as diffusers'
IFPipeline and IFSuperResolutionPipeline do it, in JAX.

The DDPM step is written here because diffusers' FlaxDDPMScheduler differs from the PyTorch
DDPMScheduler that IF ships with: it steps to t−1 whatever the number of inference steps, mixes the
learned-range variance linearly instead of in log space, and has no dynamic thresholding. The step below
follows the PyTorch scheduler (checked against it in tests/test_sampling.py); the noise schedule comes
from FlaxDDPMScheduler (sds.ddpm_alphas_cumprod).

UNets enter as a pure function and its parameters: stage I `unet_fn(params, x [B,H,W,3], t [B], emb [B,L,D])
-> [B,H,W,6]`, stage II `unet_fn(params, x [B,H,W,6], t [B], emb [B,L,D], class_labels [B]) -> [B,H,W,6]`
(UNetApply(module) of a guidance.load_if_unet module).
"""

import dataclasses
import functools
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from guidance.sds import ddpm_alphas_cumprod

VARIANCE_TYPES = ("fixed_small", "fixed_large", "learned_range")
TIMESTEP_SPACINGS = ("leading", "trailing", "linspace")


@dataclasses.dataclass(frozen=True)
class SchedulerConfig:
    """The DDPMScheduler settings that sampling uses; defaults are IF-I-XL's scheduler_config.json."""
    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    beta_start: float = 0.0001
    beta_end: float = 0.02
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
        unsupported = {"prediction_type": "epsilon", "trained_betas": None, "rescale_betas_zero_snr": False}
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
        return ddpm_alphas_cumprod(self.num_train_timesteps, self.beta_schedule, self.beta_start, self.beta_end)


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


def ddpm_step(config: SchedulerConfig, alphas_cumprod, model_output, t, prev_t, sample, noise):
    """x_t -> x_{prev_t} (DDPMScheduler.step). model_output [B,H,W,C] ε̂, or [B,H,W,2C] ε̂ and the learned
    variance interpolant in [−1, 1] (variance_type learned_range); noise [B,H,W,C] (unused at t = 0)."""
    channels = sample.shape[-1]
    if config.variance_type == "learned_range" and model_output.shape[-1] != 2 * channels:
        raise ValueError(f"ddpm_step: variance_type learned_range needs {2 * channels} output channels "
                         f"(ε̂ and variance); got {model_output.shape[-1]}.")
    eps = model_output[..., :channels]
    alphas_cumprod = jnp.asarray(alphas_cumprod, jnp.float32)
    ab_t = alphas_cumprod[t]
    ab_prev = jnp.where(prev_t >= 0, alphas_cumprod[jnp.maximum(prev_t, 0)], 1.0)
    alpha_t = ab_t / ab_prev
    beta_t = 1.0 - alpha_t
    x0 = (sample - jnp.sqrt(1.0 - ab_t) * eps) / jnp.sqrt(ab_t)
    if config.thresholding:
        x0 = dynamic_threshold(x0, config.dynamic_thresholding_ratio, config.sample_max_value)
    elif config.clip_sample:
        x0 = jnp.clip(x0, -config.clip_sample_range, config.clip_sample_range)
    mean = (jnp.sqrt(ab_prev) * beta_t * x0 + jnp.sqrt(alpha_t) * (1.0 - ab_prev) * sample) / (1.0 - ab_t)
    variance = jnp.maximum((1.0 - ab_prev) / (1.0 - ab_t) * beta_t, 1e-20)
    if config.variance_type == "fixed_small":
        std = jnp.sqrt(variance)
    elif config.variance_type == "fixed_large":
        std = jnp.sqrt(beta_t)
    else:
        frac = (model_output[..., channels:] + 1.0) / 2.0
        std = jnp.exp(0.5 * (frac * jnp.log(beta_t) + (1.0 - frac) * jnp.log(variance)))
    return mean + jnp.where(t > 0, std * noise, 0.0)


def _check_embeddings(cond_emb, uncond_emb):
    if cond_emb.ndim != 3 or uncond_emb.shape not in (cond_emb.shape[1:], cond_emb.shape):
        raise ValueError(f"Sampling: cond_emb must be [N,L,D] and uncond_emb [L,D] or [N,L,D]; got "
                         f"{cond_emb.shape} and {uncond_emb.shape}.")


@functools.partial(jax.jit, static_argnames=("unet_fn", "scheduler", "guidance_scale"))
def _guided_step(unet_fn, scheduler, guidance_scale, params, alphas, x, t, prev_t, key, emb, cond_image,
                 class_labels):
    n, channels = x.shape[0], x.shape[-1]
    inputs = x if cond_image is None else jnp.concatenate([x, cond_image.astype(x.dtype)], -1)
    extra = () if class_labels is None else (jnp.concatenate([class_labels, class_labels]),)
    out = unet_fn(params, jnp.concatenate([inputs, inputs]), jnp.full((2 * n,), t), emb, *extra).astype(jnp.float32)
    uncond, text = out[:n], out[n:]
    eps = uncond[..., :channels] + guidance_scale * (text[..., :channels] - uncond[..., :channels])
    out = jnp.concatenate([eps, text[..., channels:]], -1)
    return ddpm_step(scheduler, alphas, out, t, prev_t, x, jax.random.normal(key, x.shape, jnp.float32))


def sample_ddpm(unet_fn, params, key, cond_emb, uncond_emb, image_size: int, num_steps: int, guidance_scale: float,
                scheduler: SchedulerConfig, cond_image=None, class_labels=None, channels: int = 3,
                progress: bool = True, desc: str = "IF sampling"):
    """Classifier-free-guided DDPM sampling as the IF pipelines do it: ε̂ = ε̂_u + g·(ε̂_t − ε̂_u) with the
    text branch's learned variance. unet_fn(params, x, t, emb[, class_labels]) must be the same object from
    call to call (it is a static argument of the jitted step: a new function recompiles). cond_image
    [N,S,S,c] is concatenated to the UNet input and class_labels [N] passed on (stage II).
    Returns [N,S,S,channels] in [−1, 1] (float32)."""
    _check_embeddings(cond_emb, uncond_emb)
    n = cond_emb.shape[0]
    alphas = scheduler.alphas_cumprod()
    emb = jnp.concatenate([jnp.broadcast_to(uncond_emb, cond_emb.shape), cond_emb])
    key_init, key_steps = jax.random.split(key)
    x = jax.random.normal(key_init, (n, image_size, image_size, channels), jnp.float32)
    for i, (t, prev_t) in enumerate(tqdm(ddpm_timesteps(scheduler, num_steps), desc=desc, disable=not progress)):
        x = _guided_step(unet_fn, scheduler, float(guidance_scale), params, alphas, x, jnp.int32(t),
                         jnp.int32(prev_t), jax.random.fold_in(key_steps, i), emb, cond_image, class_labels)
    return x


def sample_stage1(unet_fn, params, key, cond_emb, uncond_emb, num_steps: int = 100, guidance_scale: float = 7.0,
                  scheduler: SchedulerConfig = SchedulerConfig(), image_size: int = 64, progress: bool = True):
    """IF stage I: T5 embeddings cond_emb [N,L,D] (uncond_emb [L,D]: the empty prompt) -> images
    [N,size,size,3] in [0,1]. Defaults are IFPipeline's (100 steps, guidance 7)."""
    x = sample_ddpm(unet_fn, params, key, cond_emb, uncond_emb, image_size, num_steps, guidance_scale, scheduler,
                    progress=progress, desc="IF stage I")
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
                  progress: bool = True):
    """IF stage II: low_res [N,h,w,3] in [0,1] (stage I output) -> [N,size,size,3] in [0,1]. The low-res
    image, upsampled (bilinear, align_corners) and noised to `noise_level` with the noising scheduler's
    schedule, is concatenated to the UNet input; the level is the UNet's class label. Defaults are
    IFSuperResolutionPipeline's (50 steps, guidance 4, noise level 250)."""
    if low_res.ndim != 4 or low_res.shape[-1] != 3 or low_res.shape[0] != cond_emb.shape[0]:
        raise ValueError(f"sample_stage2: low_res must be [N,h,w,3] in [0,1] with N = {cond_emb.shape[0]}; got "
                         f"{low_res.shape}.")
    if not 0 <= noise_level < noising_scheduler.num_train_timesteps:
        raise ValueError(f"sample_stage2: noise_level {noise_level} outside [0, "
                         f"{noising_scheduler.num_train_timesteps}).")
    key_aug, key_sample = jax.random.split(key)
    upscaled = resize_align_corners(jnp.asarray(low_res, jnp.float32) * 2 - 1, image_size)
    ab = noising_scheduler.alphas_cumprod()[noise_level]
    upscaled = jnp.sqrt(ab) * upscaled + jnp.sqrt(1 - ab) * jax.random.normal(key_aug, upscaled.shape)
    labels = jnp.full((low_res.shape[0],), noise_level, jnp.int32)
    x = sample_ddpm(unet_fn, params, key_sample, cond_emb, uncond_emb, image_size, num_steps, guidance_scale,
                    scheduler, cond_image=upscaled, class_labels=labels, progress=progress, desc="IF stage II")
    return jnp.clip(x / 2 + 0.5, 0.0, 1.0)


@dataclasses.dataclass(frozen=True)
class UNetApply:
    """unet_fn(params, x, t, emb[, class_labels]) of a guidance.load_if_unet module. Hashable and equal for
    equal modules, so the jitted sampling step compiles once per model, not once per call."""
    module: Any

    def __call__(self, params, *args):
        return self.module.apply({"params": params}, *args)


def iter_images(if_stage1_dir: str, if_stage2_dir: str, prompts: list[str], num_images_per_prompt: int = 1,
                seed: int = 0, prompt_seeds: list[int] | None = None,
                cache_dir: str = os.path.expanduser("~/.cache/interfusion_jax/prompt_embeddings"),
                dtype=jnp.bfloat16, batch_size: int = 8, stage1_steps: int = 100, stage2_steps: int = 50,
                stage1_guidance: float = 7.0, stage2_guidance: float = 4.0, noise_level: int = 250,
                progress: bool = True):
    """Yields, prompt by prompt, uint8 images [num_images_per_prompt, S, S, 3] (S = stage II's sample_size,
    256 for IF-II-L) from the IF cascade; the models load once for all prompts. Prompt i's images are drawn in
    batches of at most batch_size, batch b seeded by (prompt_seeds[i], b), or by (seed, i, b) without
    prompt_seeds: a prompt's images do not depend on the other prompts. T5 embeddings come from stage I's
    repository (text_encoder/, tokenizer/) through the prompt cache (the encoder is freed before the UNets
    load); schedulers from each repository's scheduler/ (and stage II's image_noising_scheduler/) config,
    IF-I-XL's values where absent."""
    from guidance.prompt_cache import embed_prompts
    from guidance.unet_weights import load_if_unet, resolve_unet_dir

    if prompt_seeds is not None and len(prompt_seeds) != len(prompts):
        raise ValueError(f"iter_images: {len(prompt_seeds)} prompt_seeds for {len(prompts)} prompts.")
    distinct = list(dict.fromkeys(prompts)) + [""]
    by_text = dict(zip(distinct, embed_prompts(if_stage1_dir, distinct, cache_dir)))
    uncond = jnp.asarray(by_text[""])
    sizes = []
    for model_dir in (if_stage1_dir, if_stage2_dir):
        config_path = os.path.join(resolve_unet_dir(model_dir), "config.json")
        with open(config_path) as f:
            sizes.append(json.load(f).get("sample_size"))
        if not isinstance(sizes[-1], int):
            raise ValueError(f"generate_images: {config_path} must give an integer sample_size (the output size); "
                             f"got {sizes[-1]!r}.")
    unet1, params1 = load_if_unet(if_stage1_dir, dtype)
    unet2, params2 = load_if_unet(if_stage2_dir, dtype)
    sched1 = SchedulerConfig.from_model_dir(if_stage1_dir)
    sched2 = SchedulerConfig.from_model_dir(if_stage2_dir)
    noising = SchedulerConfig.from_model_dir(if_stage2_dir, "image_noising_scheduler")
    for i, prompt in enumerate(tqdm(prompts, desc="IF prompts", disable=not progress or len(prompts) == 1)):
        prompt_key = (jax.random.PRNGKey(prompt_seeds[i]) if prompt_seeds is not None
                      else jax.random.fold_in(jax.random.PRNGKey(seed), i))
        images = []
        for b, start in enumerate(range(0, num_images_per_prompt, batch_size)):
            count = min(batch_size, num_images_per_prompt - start)
            cond = jnp.broadcast_to(jnp.asarray(by_text[prompt]), (count, *uncond.shape))
            key1, key2 = jax.random.split(jax.random.fold_in(prompt_key, b))
            low = sample_stage1(UNetApply(unet1), params1, key1, cond, uncond, stage1_steps, stage1_guidance, sched1,
                                sizes[0], progress)
            high = sample_stage2(UNetApply(unet2), params2, key2, low, cond, uncond, stage2_steps, stage2_guidance,
                                 noise_level, sched2, noising, sizes[1], progress)
            images.append(np.asarray(jnp.round(high * 255)).astype(np.uint8))
        yield np.concatenate(images)


def generate_images(if_stage1_dir: str, if_stage2_dir: str, prompts: list[str], num_images_per_prompt: int = 1,
                    **kwargs) -> np.ndarray:
    """uint8 images [len(prompts)·num_images_per_prompt, S, S, 3], prompt-major; arguments as iter_images."""
    return np.concatenate(list(iter_images(if_stage1_dir, if_stage2_dir, prompts, num_images_per_prompt,
                                           **kwargs)))
