"""Score distillation (SDS) from DeepFloyd IF stage I, as InterFusion (threestudio) computes it (docs/method.md §2.5).

Pure functions: the UNet enters as `unet_fn(x [B,64,64,3], t [B] int32, emb [B,L,D]) -> [B,64,64,6]`, a
pure function whose parameters the caller closes over, e.g.
`unet_fn = lambda x, t, e: module.apply({"params": params}, x, t, e)`. Several (image, prompt) pairs
are evaluated in ONE UNet call of batch 2N (conditional and unconditional stacked), so the interaction
step's four SDS terms cost one batched forward pass.
"""

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

WEIGHTINGS = ("uniform", "sds", "fantasia3d")
VIEW_SUFFIXES = ("front view", "side view", "back view", "overhead view")
BETA_SCHEDULES = ("squaredcos_cap_v2",)


@functools.lru_cache(maxsize=None)
def ddpm_alphas_cumprod(num_train_timesteps: int = 1000, beta_schedule: str = "squaredcos_cap_v2") -> np.ndarray:
    """ᾱ_t [num_train_timesteps] float32 (read-only NumPy) of IF's DDPM schedule, squaredcos_cap_v2, as
    diffusers' PyTorch DDPMScheduler computes it, to the bit (tests/fixtures/ddpm_step): the betas of the
    cosine ᾱ(t) = cos²((t + 0.008) / 1.008 · π/2) in float32, capped at 0.999, then the running product of
    1 − β accumulated in float64 as torch's CPU cumprod does. Not diffusers' FlaxDDPMScheduler: it is
    deprecated (gone in diffusers 0.40), its float32 product is off by up to 1.2e-6 relative, and
    importing diffusers took every command a second."""
    if beta_schedule not in BETA_SCHEDULES:
        raise ValueError(f"beta_schedule {beta_schedule!r} is not supported; expected one of {BETA_SCHEDULES}.")
    n = num_train_timesteps
    alpha_bar = lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    betas = np.array([min(1 - alpha_bar((i + 1) / n) / alpha_bar(i / n), 0.999) for i in range(n)], np.float32)
    alphas = np.cumprod((1.0 - betas).astype(np.float64)).astype(np.float32)
    alphas.flags.writeable = False
    return alphas


@dataclasses.dataclass(frozen=True)
class SDSConfig:
    """guidance_scale in the form ε̂_text + s·(ε̂_text − ε̂_uncond); t drawn uniformly from the integers
    [min_step, max_step] (the release: 0.02 and 0.98 of 1000); weighting one of WEIGHTINGS."""
    guidance_scale: float = 20.0
    min_step: int = 20
    max_step: int = 980
    weighting: str = "uniform"
    image_size: int = 64

    def __post_init__(self):
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"SDSConfig.weighting is {self.weighting!r}; expected one of {WEIGHTINGS}.")
        if not 0 <= self.min_step <= self.max_step:
            raise ValueError(f"SDSConfig: need 0 <= min_step <= max_step, got {self.min_step}, {self.max_step}.")


def _weight(weighting: str, alpha_bar):
    if weighting == "uniform":
        return jnp.ones_like(alpha_bar)
    if weighting == "sds":
        return 1.0 - alpha_bar
    return alpha_bar ** 0.5 * (1.0 - alpha_bar)  # fantasia3d


def text_rows(cond_emb, uncond_emb, who: str) -> int:
    """N, the rows of cond_emb [N,L,D], after checking that uncond_emb is [L,D] or [N,L,D]; either may be a
    pytree of such arrays (an IF UNet's TextContext), checked leaf by leaf. Errors start with `who`."""
    def check(cond, uncond):
        if cond.ndim < 2 or uncond.shape not in (cond.shape[1:], cond.shape):
            raise ValueError(f"{who}: cond_emb must be [N,L,D] (or a TextContext of N rows) and uncond_emb [L,D] "
                             f"or [N,L,D]; got {cond.shape} and {uncond.shape}.")
        return cond.shape[0]

    counts = set(jax.tree_util.tree_leaves(jax.tree_util.tree_map(check, cond_emb, uncond_emb)))
    if len(counts) != 1:
        raise ValueError(f"{who}: the text's rows disagree ({sorted(counts)}).")
    return counts.pop()


def _check_inputs(images, cond_emb, uncond_emb):
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"SDS: images must be [N,H,W,3] (NHWC, RGB in [0,1]); got shape {images.shape}.")
    if not jnp.issubdtype(images.dtype, jnp.floating):
        raise ValueError(f"SDS: images must be floating point in [0,1]; got dtype {images.dtype} "
                         "(convert uint8 images with x / 255).")
    n = text_rows(cond_emb, uncond_emb, "SDS")
    if n != images.shape[0]:
        raise ValueError(f"SDS: cond_emb must be [N,L,D] (or a TextContext of N rows) with N={images.shape[0]} "
                         f"(one per image); got {n} rows.")


def to_model_space(images, image_size: int = 64):
    """[N,H,W,3] in [0,1] -> [N,size,size,3] in [-1,1], bilinear without antialiasing (as torch's
    F.interpolate(mode="bilinear", align_corners=False) that the release uses)."""
    x = images.astype(jnp.float32) * 2.0 - 1.0
    if x.shape[1:3] == (image_size, image_size):
        return x
    return jax.image.resize(x, (x.shape[0], image_size, image_size, 3), "bilinear", antialias=False)


def sds_from_noise(unet_fn, images, cond_emb, uncond_emb, t, noise, alphas_cumprod, config: SDSConfig = SDSConfig(),
                   weights=None, grad_clip=None):
    """SDS with given timesteps t [N] int and noise [N,64,64,3] (see sds_loss; this is its deterministic part).

    Returns (loss, aux): loss = Σ_i weights_i · 0.5·‖x_i − sg(x_i − g_i)‖², whose gradient with respect to
    the model-space image x_i is weights_i · g_i; aux: "loss_per_pair" [N] (unweighted), "t" [N],
    "grad" [N,64,64,3] (g, after NaN zeroing and clipping), "grad_norm" [N].
    """
    _check_inputs(images, cond_emb, uncond_emb)
    n = images.shape[0]
    x = to_model_space(images, config.image_size)
    alpha_bar = jnp.asarray(alphas_cumprod, jnp.float32)[t][:, None, None, None]
    x_t = jax.lax.stop_gradient(jnp.sqrt(alpha_bar) * x + jnp.sqrt(1.0 - alpha_bar) * noise)
    text = jax.tree_util.tree_map(lambda c, u: jnp.concatenate([c, jnp.broadcast_to(u, c.shape)]), cond_emb,
                                  uncond_emb)
    out = unet_fn(jnp.concatenate([x_t, x_t]), jnp.concatenate([t, t]), text)
    eps = jax.lax.stop_gradient(out[..., :3].astype(jnp.float32))
    eps_text, eps_uncond = eps[:n], eps[n:]
    # docs/method.md §2.5 (threestudio's deep_floyd guidance) writes CFG as ε̂_text + s·(ε̂_text − ε̂_uncond); standard
    # CFG (IFPipeline) is ε̂_uncond + s·(ε̂_text − ε̂_uncond), so this equals standard CFG at scale s + 1.
    eps_hat = eps_text + config.guidance_scale * (eps_text - eps_uncond)
    grad = _weight(config.weighting, alpha_bar) * (eps_hat - noise)
    grad = jnp.nan_to_num(grad)
    if grad_clip is not None:
        grad = jnp.clip(grad, -grad_clip, grad_clip)
    target = jax.lax.stop_gradient(x - grad)
    per_pair = 0.5 * jnp.sum((x - target) ** 2, axis=(1, 2, 3))
    weights = jnp.ones((n,), jnp.float32) if weights is None else jnp.asarray(weights, jnp.float32)
    aux = {"loss_per_pair": per_pair, "t": t, "grad": grad,
           "grad_norm": jnp.sqrt(jnp.sum(grad ** 2, axis=(1, 2, 3)))}
    return jnp.sum(weights * per_pair), aux


def sds_loss(unet_fn, key, images, cond_emb, uncond_emb, alphas_cumprod, config: SDSConfig = SDSConfig(),
             weights=None, grad_clip=None):
    """Score-distillation loss of N (image, prompt) pairs in one UNet call of batch 2N.

    unet_fn: pure (x [2N,64,64,3], t [2N] int32, emb [2N,L,D]) -> [2N,64,64,6] (ε̂ = first 3 channels).
    key: PRNG key; one t per image, uniform on the integers [config.min_step, config.max_step], and ε.
    images [N,H,W,3] float in [0,1] (resized bilinearly to 64×64); cond_emb [N,L,D] T5 embeddings;
    uncond_emb [L,D] or [N,L,D] (the empty prompt); either may instead be a pytree of such arrays
    that unet_fn reads (an IF UNet's TextContext), leaf by leaf; alphas_cumprod from ddpm_alphas_cumprod().
    weights [N] or None: per-pair loss weights (e.g. the object term's floor(step/1000)/10). Each pair
    counts as one image: the release divides each term by its batch size, so for a term rendered at
    batch B pass weight 1/B for each of its B images.
    grad_clip: None, or a (traced) value c: the gradient is clamped element-wise to [−c, c].
    Returns (loss, aux) as sds_from_noise.
    """
    n = images.shape[0]
    key_t, key_noise = jax.random.split(key)
    t = jax.random.randint(key_t, (n,), config.min_step, config.max_step + 1, dtype=jnp.int32)
    noise = jax.random.normal(key_noise, (n, config.image_size, config.image_size, 3), jnp.float32)
    return sds_from_noise(unet_fn, images, cond_emb, uncond_emb, t, noise, alphas_cumprod, config, weights,
                          grad_clip)


def ideal_denoiser(target_images, alphas_cumprod, image_size: int = 64):
    """The exact ε-predictor of a diffusion model whose data is the single image x*: a unet_fn for
    sds_loss that knows the right answer. ε̂(x_t, t) = (x_t − √ᾱ_t x*) / √(1 − ᾱ_t), the same for
    every prompt (so the guidance term ε̂_text − ε̂_uncond is zero).

    target_images [N,H,W,3] in [0,1] (x* of each pair, resized as the SDS images are); returns
    unet_fn(x [2N,64,64,3], t [2N], emb) -> [2N,64,64,6] (ε̂ then zeros, IF's layout).
    """
    target = jax.lax.stop_gradient(to_model_space(target_images, image_size))
    alphas = jnp.asarray(alphas_cumprod, jnp.float32)

    def unet_fn(x, t, emb):
        del emb
        alpha_bar = alphas[t][:, None, None, None]
        x_star = jnp.concatenate([target] * (x.shape[0] // target.shape[0]))
        eps = (x - jnp.sqrt(alpha_bar) * x_star) / jnp.sqrt(1.0 - alpha_bar)
        return jnp.concatenate([eps, jnp.zeros_like(eps)], -1)

    return unet_fn


def view_index(elevation_deg, azimuth_deg):
    """Index into VIEW_SUFFIXES (0 front, 1 side, 2 back, 3 overhead) of cameras at the given elevation
    and azimuth in degrees (any shape, jittable): overhead when elevation > 60; else front when
    |azimuth| < 45, back when |azimuth| > 135 (azimuth wrapped to [−180, 180)), else side."""
    azimuth = jnp.mod(jnp.asarray(azimuth_deg, jnp.float32) + 180.0, 360.0) - 180.0
    index = jnp.where(jnp.abs(azimuth) < 45.0, 0, jnp.where(jnp.abs(azimuth) > 135.0, 2, 1))
    return jnp.where(jnp.asarray(elevation_deg) > 60.0, 3, index).astype(jnp.int32)


def view_prompts(prompt: str) -> list[str]:
    """The four view-dependent texts of a prompt, in view_index order: "{prompt}, front view", ..."""
    return [f"{prompt}, {suffix}" for suffix in VIEW_SUFFIXES]
