"""Diffuse material with a point light and the per-step shading choice (docs/method.md §2.2, threestudio's
`diffuse-with-point-light-material`).

A `Shading` is a small pytree so that a jitted step can take a different one every call:
  albedo      rgb = albedo
  textureless rgb = ambient + diffuse · max(0, n·l)                 (grey object)
  diffuse     rgb = clamp(albedo, 0, 1) · (ambient + diffuse · max(0, n·l))
with l = normalize(light_position − x).
"""
from typing import NamedTuple

import jax
import jax.numpy as jnp

ALBEDO, TEXTURELESS, DIFFUSE = 0, 1, 2
MODES = {"albedo": ALBEDO, "textureless": TEXTURELESS, "diffuse": DIFFUSE}
AMBIENT, DIFFUSE_WEIGHT = 0.1, 0.9  # threestudio's fixed light colours without soft shading


class Shading(NamedTuple):
    """light_position [3] (or [N,3]), mode int32 scalar (ALBEDO/TEXTURELESS/DIFFUSE),
    ambient and diffuse float32 scalars."""

    light_position: jax.Array
    mode: jax.Array
    ambient: jax.Array
    diffuse: jax.Array


def make_shading(light_position, mode="diffuse", ambient=AMBIENT, diffuse=DIFFUSE_WEIGHT):
    """A fixed shading, e.g. for evaluation; `mode` is a name of MODES or its int."""
    if isinstance(mode, str):
        if mode not in MODES:
            raise ValueError(f"nerf.material: shading mode {mode!r}; expected one of {list(MODES)}")
        mode = MODES[mode]
    return Shading(jnp.asarray(light_position, jnp.float32), jnp.asarray(mode, jnp.int32),
                   jnp.asarray(ambient, jnp.float32), jnp.asarray(diffuse, jnp.float32))


def sample_shading(key, step, light_position, *, soft_shading, ambient_only_steps, albedo_prob,
                   textureless_prob):
    """The training shading of one step (jittable in key, step and light_position); the release's
    numbers are configs/base.py's `material` block.

    Before `ambient_only_steps` the render is the albedo (ambient 1, diffuse 0). Afterwards: albedo
    with probability `albedo_prob`, else textureless with probability `textureless_prob`, else
    diffuse. With soft shading the diffuse weight is U[0,1] and ambient = 1 − diffuse; otherwise
    0.9 and 0.1.
    """
    k_albedo, k_textureless, k_weight = jax.random.split(key, 3)
    ambient_only = step < ambient_only_steps
    mode = jnp.where(
        ambient_only | (jax.random.uniform(k_albedo) < albedo_prob), ALBEDO,
        jnp.where(jax.random.uniform(k_textureless) < textureless_prob, TEXTURELESS, DIFFUSE))
    if soft_shading:
        diffuse = jax.random.uniform(k_weight)
        ambient = 1.0 - diffuse
    else:
        diffuse, ambient = jnp.float32(DIFFUSE_WEIGHT), jnp.float32(AMBIENT)
    diffuse = jnp.where(ambient_only, 0.0, diffuse)
    ambient = jnp.where(ambient_only, 1.0, ambient)
    return Shading(jnp.asarray(light_position, jnp.float32), mode.astype(jnp.int32),
                   ambient.astype(jnp.float32), diffuse.astype(jnp.float32))


def eval_shading(light_position, step, ambient_only_steps):
    """Validation/test shading (threestudio's eval): albedo during the ambient-only phase, then
    diffuse with the fixed ambient 0.1 and diffuse 0.9."""
    mode = jnp.where(step < ambient_only_steps, ALBEDO, DIFFUSE)
    return make_shading(light_position, mode)


def shade(shading, albedo, normal, points):
    """albedo [N,3], normal [N,3] (unit), points [N,3] -> rgb [N,3]."""
    to_light = shading.light_position - points
    # Guarded normalisation: a sample at the light position gets l = 0 (no diffuse term, no NaN).
    l = to_light * jax.lax.rsqrt(jnp.maximum(jnp.sum(to_light**2, -1, keepdims=True), 1e-24))
    light = shading.ambient + shading.diffuse * jnp.maximum(jnp.sum(normal * l, -1, keepdims=True), 0.0)
    textureless = jnp.broadcast_to(light, albedo.shape)
    diffuse = jnp.clip(albedo, 0.0, 1.0) * light
    return jnp.select([shading.mode == ALBEDO, shading.mode == TEXTURELESS],
                      [albedo, textureless], diffuse)
