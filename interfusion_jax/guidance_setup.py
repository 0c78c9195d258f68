"""The DeepFloyd IF guidance of a run: the UNet and the prompt embeddings, from the config.

With `guidance.model_dir` set, the IF-I-XL UNet and its T5 encoder are loaded from that folder and
the embeddings are cached on disk, so the 4.7 B-parameter encoder is loaded only for new prompts
and released before training. With it empty (the demo), the UNet is a tiny randomly initialised
network of IF's layout and the embeddings are pseudo-random vectors derived from the text: every
part of the pipeline runs, but the guidance carries no knowledge of images.
"""
import zlib
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from guidance import IFUNet, embed_prompts, load_if_unet, view_prompts
from interfusion_jax.scene import VIEWS

MAX_LENGTH = 77

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
    """module: the IF UNet (static); params: its weights (passed into the jitted step, never
    closed over, so they are not baked into the executable); cond [4 views of the scene, 4 camera
    directions, L, D] embeddings in the order of scene.VIEWS x sds.VIEW_SUFFIXES; uncond [L, D]."""

    module: Any
    params: Any
    cond: jax.Array
    uncond: jax.Array
    description: str


def prompt_texts(prompts, view_dependent):
    """[4][4] texts: per scene view (object, human, interaction, head), per camera direction."""
    base = [prompts[name] for name in VIEWS]
    return [view_prompts(p) if view_dependent else [p] * 4 for p in base]


def pseudo_embeddings(texts, dim):
    """Deterministic stand-in embeddings [N, 77, dim] (a seed per text), for the demo only."""
    return np.stack([
        np.random.default_rng(zlib.crc32(t.encode())).normal(size=(MAX_LENGTH, dim))
        for t in texts]).astype(np.float32)


def setup_guidance(cfg, key):
    """Guidance for the config's `guidance` and `prompts` blocks."""
    g = cfg.guidance
    grid = prompt_texts(cfg.prompts, g.view_dependent)
    flat = [t for row in grid for t in row] + [""]
    if g.model_dir:
        dtype = jnp.dtype(g.dtype)
        module, params = load_if_unet(g.model_dir, dtype=dtype)
        # The release's prompt processor (threestudio) feeds the text unchanged, not lowercased.
        emb = embed_prompts(g.model_dir, flat, g.embedding_cache, lowercase=False)
        description = f"DeepFloyd IF from {g.model_dir} ({g.dtype})"
    else:
        module = IFUNet.from_config(DEMO_UNET, source="interfusion_jax.guidance_setup.DEMO_UNET")
        dummy = (jnp.zeros((1, 64, 64, 3)), jnp.zeros((1,), jnp.int32),
                 jnp.zeros((1, MAX_LENGTH, DEMO_UNET["encoder_hid_dim"])))
        params = module.init(key, *dummy)["params"]
        emb = pseudo_embeddings(flat, DEMO_UNET["encoder_hid_dim"])
        description = ("demo guidance: a tiny random UNet of IF's layout with pseudo-random prompt "
                       "embeddings (set guidance.model_dir to DeepFloyd/IF-I-XL-v1.0 for real runs)")
    emb = jnp.asarray(emb)
    cond = emb[:-1].reshape(4, 4, *emb.shape[1:])
    return Guidance(module, params, cond, emb[-1], description)
