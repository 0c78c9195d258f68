"""The guidance of a run, as a plug-in of the training step: `guidance.kind` "if" or "reference".

The step hands its guidance the four rendered images with their views (`scene.Views`) and gets
back the score-distillation loss; it does not know which guidance it has. Both kinds run the same
SDS path (guidance.sds: timestep sampling, weighting, clipping, the object term's ramp, the loss
form); they differ in the denoiser:
- "if": DeepFloyd IF stage I. With `guidance.model_dir` set, the IF-I-XL UNet and its T5 encoder
  are loaded from that folder and the embeddings are cached on disk, so the 4.7 B-parameter
  encoder is loaded only for new prompts and released before training. With it empty, the UNet is
  a tiny network of IF's layout with fixed random weights and the embeddings are pseudo-random vectors
  derived from the text: every part of the pipeline runs, but the guidance knows no images.
- "reference": the ideal denoiser of a known scene (the guide body plus `reference.object_mesh`),
  rendered from each step's views with the shading and background of the training renders: the
  interaction stage's end-to-end check, whose right answer is known.
"""
import functools
import zlib
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from guidance import (MAX_LENGTH, IFUNet, SDSConfig, ddpm_alphas_cumprod, embed_prompts,
                      encode_text, ideal_denoiser, load_if_unet, sds_loss, view_index,
                      view_prompts)
from ifcommon import user_cache_dir
from interfusion_jax import losses
from interfusion_jax.config import ConfigError
from interfusion_jax.scene import VIEW_PARTS, VIEWS, view_shading
from nerf.cameras import generate_rays
from nerf.material import shade
from interfusion_jax.mesh_raycast import render_reference
from interfusion_jax.reference_scene import reference_scene


# IF-I-XL's block types at toy width, for runs without the published weights.
DEMO_UNET = {
    "act_fn": "gelu", "addition_embed_type": "text", "addition_embed_type_num_heads": 2,
    "attention_head_dim": 8, "block_out_channels": [16, 32], "class_embed_type": None,
    "cross_attention_dim": 32, "cross_attention_norm": "group_norm",
    "down_block_types": ["ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"],
    "encoder_hid_dim": 32, "encoder_hid_dim_type": "text_proj", "in_channels": 3,
    "layers_per_block": 1, "mid_block_type": "UNetMidBlock2DSimpleCrossAttn", "norm_num_groups": 8,
    "only_cross_attention": False, "out_channels": 6, "resnet_skip_time_act": True,
    "resnet_time_scale_shift": "scale_shift", "sample_size": 64, "time_embedding_act_fn": "gelu",
    "up_block_types": ["SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"],
    "upcast_attention": False,
}


class Guidance(NamedTuple):
    """loss(arrays, key, images [4,H,W,3], views: scene.Views, step) -> (loss, aux with "t" [4]
    and "grad_norm" [4]), static; arrays: what it needs on the device (UNet weights and prompt
    embeddings, or the reference scene), passed into the jitted step as an argument so that it is
    not baked into the executable; shared: the keys of `arrays` that are the same for every
    scene with this denoiser (the UNet weights), which train_many passes once for all scenes."""

    loss: Callable
    arrays: Any
    description: str
    shared: tuple = ()


class UNet(NamedTuple):
    """An IF UNet as loaded once for all the scenes that use it: flax module, params, and what it
    is in words."""

    module: Any
    params: Any
    description: str


# The demo UNet's weights come from this fixed key, not from the run's seed: like published
# weights they are the same in every run, so scenes of any seed can share one UNet (train_many).
DEMO_UNET_KEY = 0


def prompt_texts(prompts, view_dependent):
    """[4][4] texts: per scene view (object, human, interaction, head), per camera direction."""
    base = [prompts[name] for name in VIEWS]
    return [view_prompts(p) if view_dependent else [p] * 4 for p in base]


def pseudo_embeddings(texts, dim):
    """Deterministic stand-in embeddings [N, 77, dim] (a seed per text), for the demo only."""
    return np.stack([
        np.random.default_rng(zlib.crc32(t.encode())).normal(size=(MAX_LENGTH, dim))
        for t in texts]).astype(np.float32)


def _sds(cfg, unet_fn, key, images, cond, uncond, step):
    """The release's SDS of the four views: the object term ramps in with the steps."""
    g = cfg.guidance
    sds_cfg = SDSConfig(guidance_scale=g.guidance_scale,
                        min_step=int(round(g.min_step_percent * 1000)),
                        max_step=int(round(g.max_step_percent * 1000)), weighting=g.weighting)
    weights = jnp.stack([losses.object_sds_weight(step, cfg.loss.object_sds_ramp_every),
                         1.0, 1.0, 1.0])
    grad_clip = losses.schedule_value(g.grad_clip, step) if g.grad_clip else None
    return sds_loss(unet_fn, key, images, cond, uncond, ddpm_alphas_cumprod(), sds_cfg,
                    weights=weights, grad_clip=grad_clip)


def if_guidance(cfg, module, params, embeddings, description):
    """Guidance of an IF UNet (module, params) with prompt embeddings [17,L,D]: the 16 texts of
    prompt_texts (row-major) and then the empty prompt. The prompts are fixed for the run, so the
    UNet's text-only parts run once here (guidance.encode_text), not in every step: 0.54 of the
    22.3 TFLOP of the stand-in UNet's batch-8 call (XLA's count)."""
    context = jax.jit(functools.partial(encode_text, module))(params, jnp.asarray(embeddings))
    rows = lambda tree, index: jax.tree_util.tree_map(lambda a: a[index], tree)  # noqa: E731

    def loss(arrays, key, images, views, step):
        cond = rows(arrays["cond"], (jnp.arange(4), view_index(views.elevation, views.azimuth)))
        unet_fn = lambda x, t, text: module.apply({"params": arrays["unet"]}, x, t, text)  # noqa: E731
        return _sds(cfg, unet_fn, key, images, cond, arrays["uncond"], step)

    cond = jax.tree_util.tree_map(lambda a: a[:-1].reshape(4, 4, *a.shape[1:]), context)
    arrays = dict(unet=params, cond=cond, uncond=rows(context, -1))
    return Guidance(loss, arrays, description, shared=("unet",))


def load_unet(cfg):
    """The UNet of `guidance.model_dir` in `guidance.dtype`, or with no model_dir the demo's tiny
    random UNet of IF's layout (DEMO_UNET)."""
    g = cfg.guidance
    if g.model_dir:
        module, params = load_if_unet(g.model_dir, dtype=jnp.dtype(g.dtype))
        return UNet(module, params, f"DeepFloyd IF from {g.model_dir} ({g.dtype})")
    module = IFUNet.from_config(DEMO_UNET, source="interfusion_jax.guidance_setup.DEMO_UNET")
    dummy = (jnp.zeros((1, 64, 64, 3)), jnp.zeros((1,), jnp.int32),
             jnp.zeros((1, MAX_LENGTH, DEMO_UNET["encoder_hid_dim"])))
    # Jitted: one compilation instead of one per operation (half the time on a CPU).
    params = jax.jit(module.init)(jax.random.PRNGKey(DEMO_UNET_KEY), *dummy)["params"]
    return UNet(module, params,
                "demo guidance: a tiny random UNet of IF's layout with pseudo-random prompt "
                "embeddings (set guidance.model_dir to DeepFloyd/IF-I-XL-v1.0 for real runs)")


def _run_texts(cfg):
    """The run's 17 prompt texts: prompt_texts row by row, then the empty prompt."""
    return [t for row in prompt_texts(cfg.prompts, cfg.guidance.view_dependent) for t in row] + [""]


def _embed(model_dir, cache_dir, texts):
    # The release's prompt processor (threestudio) feeds the text unchanged, not lowercased.
    return embed_prompts(model_dir, texts, cache_dir or user_cache_dir("prompt_embeddings"),
                         lowercase=False)


def prompt_embeddings(cfg, width=None):
    """The embeddings [17, 77, D] of the run's prompt texts (prompt_texts row by row, then the
    empty prompt). With guidance.model_dir: its T5 encoder's, through the prompt cache; the
    encoder (4.7 B parameters, 9.5 GB in float16) is loaded only for texts not cached and released
    before this returns, so call it before the UNet is on the device: the two do not fit a 24 GB
    card together. Without: pseudo-embeddings of width `width` (the UNet's encoder_hid_dim)."""
    g = cfg.guidance
    if g.model_dir:
        return _embed(g.model_dir, g.embedding_cache, _run_texts(cfg))
    return pseudo_embeddings(_run_texts(cfg), width)


def cache_prompt_embeddings(cfgs):
    """Put the prompt embeddings of the runs among `cfgs` that use published IF weights into their
    caches, with one encoder load per model and cache folder (see prompt_embeddings)."""
    texts = {}
    for cfg in cfgs:
        g = cfg.guidance
        if g.kind == "if" and g.model_dir:
            texts.setdefault((g.model_dir, g.embedding_cache), {}).update(dict.fromkeys(_run_texts(cfg)))
    for (model_dir, cache_dir), group in texts.items():
        _embed(model_dir, cache_dir, list(group))


def reference_images(scene, views, height, width):
    """The reference scene from the four views [4,H,W,3]: each view shows its parts
    (scene.VIEW_PARTS) with the shading each field drew and the background the render used."""
    images = []
    for v, parts in enumerate(VIEW_PARTS):
        origins, directions = generate_rays(views.c2w[v], views.fovy, height, width)
        shade_fns = {part: functools.partial(shade, view_shading(views, part, v))
                     for part in parts}
        out = render_reference(scene, origins, directions, shade_fns, views.background[v])
        images.append(out["rgb"].reshape(height, width, 3))
    return jnp.stack(images)


def _reference_guidance(cfg, guide, body_colors):
    try:
        scene = reference_scene(guide, cfg.reference.object_mesh, body_colors)
    except ValueError as error:
        raise ConfigError(f"--config.{error}") from None
    h, w = cfg.render.height, cfg.render.width
    no_text = jnp.zeros((4, 1, 1))

    def loss(arrays, key, images, views, step):
        targets = reference_images(arrays["scene"], views, h, w)
        unet_fn = ideal_denoiser(targets, ddpm_alphas_cumprod())
        return _sds(cfg, unet_fn, key, images, no_text, no_text[0], step)

    description = (f"reference guidance, no diffusion model: this run reconstructs a known scene "
                   f"(the guide body with {cfg.reference.object_mesh}, {len(scene.faces)} faces) "
                   "through the full interaction pipeline. Text-to-3D with DeepFloyd IF weights: "
                   "python -m interfusion_jax.train --config configs/sitting_on_a_chair.py "
                   "--config.guidance.model_dir=weights/IF-I-XL-v1.0")
    return Guidance(loss, dict(scene=jax.tree_util.tree_map(jnp.asarray, scene)), description)


def setup_guidance(cfg, guide, body_colors=None, unet=None, embeddings=None):
    """Guidance for the config's `guidance`, `prompts` and `reference` blocks (checked first by
    interfusion_jax.inputs); guide: the run's GuideBody, body_colors its vertex colours (the
    reference scene's body); unet: the UNet of kind "if" when already loaded (`load_unet`), else
    it is loaded here; embeddings: the run's prompt_embeddings when already computed, else they
    are, before the UNet loads."""
    if cfg.guidance.kind == "reference":
        return _reference_guidance(cfg, guide, body_colors)
    if embeddings is None and cfg.guidance.model_dir:  # T5 comes and goes before the UNet loads
        embeddings = prompt_embeddings(cfg)
    unet = unet or load_unet(cfg)
    if embeddings is None:  # pseudo-embeddings, as wide as the UNet takes them
        embeddings = prompt_embeddings(cfg, unet.module.config.encoder_hid_dim)
    return if_guidance(cfg, unet.module, unet.params, embeddings, unet.description)
