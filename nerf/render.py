"""Volume rendering of one field and of the object/human composite (SPEC 2.3).

A field is given as pure callables (params closed over), see `FieldFns`. Renders return per-ray
images [N,...] and per-sample arrays over the fixed buffer [S,...] with `valid` and `ray_index`
(== num_rays in unused slots, so `jax.ops.segment_sum(..., num_segments=N)` drops them).
Unused slots, rays that miss the box and zero-direction rays contribute nothing: zero opacity and
the background colour. NaN densities or colours are treated as 0 and counted in `nan_density`.
"""
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from nerf.sampler import sample_points, sample_rays, transmittance

WHITE_PROB = 0.5


class FieldFns(NamedTuple):
    """density(x [M,3]) -> [M]; radiance(x [M,3], d [M,3]) -> dict(density [M], rgb [M,3],
    normal [M,3]) with shading applied; background(dirs [N,3]) -> rgb [N,3]."""

    density: Callable
    radiance: Callable
    background: Callable


def _accumulate(values, weights, samples, num_rays):
    return jax.ops.segment_sum(weights.reshape(weights.shape + (1,) * (values.ndim - 1)) * values,
                               samples.ray_index, num_segments=num_rays, indices_are_sorted=True)


def _clean(out, valid):
    """Field outputs with NaNs and unused slots zeroed, plus the NaN count over valid slots."""
    nan = (jnp.isnan(out["density"]) | jnp.any(jnp.isnan(out["rgb"]), -1)) & valid
    keep = valid & ~nan
    cleaned = dict(
        density=jnp.where(keep, out["density"], 0.0),
        rgb=jnp.where(keep[:, None], out["rgb"], 0.0),
        normal=jnp.where(keep[:, None] & jnp.isfinite(out["normal"]), out["normal"], 0.0),
    )
    return cleaned, jnp.sum(nan).astype(jnp.int32)


def _normalize(v, eps=1e-12):
    return v / jnp.maximum(jnp.linalg.norm(v, axis=-1, keepdims=True), eps)


def _pick_background(key, backgrounds, mode):
    """Background colour [N,3]: `mode` names one of `backgrounds` (a dict) or "white"; "random"
    picks one of them uniformly, then white with probability 0.5 (SPEC 2.3)."""
    white = jnp.ones_like(next(iter(backgrounds.values())))
    if mode == "white":
        return white
    if mode in backgrounds:
        return backgrounds[mode]
    if mode != "random":
        raise ValueError(f"nerf.render: background mode {mode!r}; expected 'random', 'white' or "
                         f"one of {sorted(backgrounds)}")
    if key is None:
        raise ValueError("nerf.render: background='random' needs a PRNG key")
    k_which, k_white = jax.random.split(key)
    choices = jnp.stack(list(backgrounds.values()))
    chosen = choices[jax.random.randint(k_which, (), 0, len(backgrounds))]
    return jnp.where(jax.random.uniform(k_white) < WHITE_PROB, white, chosen)


def _composite_outputs(samples, alpha, rgb, normal, bg, num_rays, steps):
    """Weights from per-sample alpha, then the per-ray images."""
    trans = transmittance(alpha, samples.ray_index, samples.step_index, num_rays, steps)
    weights = jnp.where(samples.valid, trans * alpha, 0.0)
    opacity = _accumulate(jnp.ones_like(weights), weights, samples, num_rays)
    depth = _accumulate(samples.t_mid, weights, samples, num_rays)
    rgb_fg = _accumulate(rgb, weights, samples, num_rays)
    comp_normal = (_normalize(_accumulate(normal, weights, samples, num_rays)) + 1.0) / 2.0
    return weights, dict(
        comp_rgb=rgb_fg + bg * (1.0 - opacity[:, None]),
        comp_rgb_fg=rgb_fg,
        opacity=opacity,
        depth=depth,
        # Visualisation as threestudio shows it: normals mapped to [0,1], faded by opacity.
        comp_normal=comp_normal * opacity[:, None],
    )


def _split(key, stratified):
    if key is None:
        if stratified:
            raise ValueError("nerf.render: stratified=True needs a PRNG key")
        return None, None
    k_march, k_bg = jax.random.split(key)
    return (k_march if stratified else None), k_bg


def _per_sample(samples, points, dirs, weights, fields):
    return dict(weights=weights, points=points, t_dirs=dirs, valid=samples.valid,
                ray_index=samples.ray_index, t_mid=samples.t_mid, **fields,
                num_samples=jnp.minimum(samples.num_kept, samples.valid.shape[0]),
                num_candidates=samples.num_candidates, overflow=samples.overflow)


def render_field(key, origins, directions, grid, field, march, *, stratified=True,
                 background="random"):
    """Render one field along rays origins, directions [N,3] (unit directions).

    key: PRNG key (None only with stratified=False and a fixed background).
    background: "random" (field background or white, 0.5 each), "field" or "white".
    Returns comp_rgb, comp_rgb_fg, comp_rgb_bg [N,3], opacity, depth [N], comp_normal [N,3];
    per sample weights, density [S], points, normal, rgb, t_dirs [S,3], valid, ray_index,
    t_mid [S]; num_samples, num_candidates, overflow, nan_density.
    """
    num_rays = origins.shape[0]
    k_march, k_bg = _split(key, stratified)
    samples = sample_rays(k_march, origins, directions, grid, field.density, march)
    points, dirs = sample_points(origins, directions, samples)
    out, nan_count = _clean(field.radiance(points, dirs), samples.valid)
    alpha = 1.0 - jnp.exp(-out["density"] * march.step_size)
    bg_field = field.background(directions)
    bg = _pick_background(k_bg, dict(field=bg_field), background)
    weights, images = _composite_outputs(samples, alpha, out["rgb"], out["normal"], bg, num_rays,
                                         march.steps_per_ray)
    return dict(**images, comp_rgb_bg=bg_field, **_per_sample(samples, points, dirs, weights, out),
                nan_density=nan_count + samples.nan_density)


def render_composite(key, origins, directions, grid, obj, human, march, *, stratified=True,
                     background="random"):
    """Interaction render of the object and human fields on one shared sample set (SPEC 2.3).

    The grid and the pruning use density_o + density_h. Per sample:
    alpha = clip(alpha_o + sg(alpha_h), 0, 1), w_o = alpha_o / (alpha_o + sg(alpha_h) + 1e-10),
    rgb = w_o rgb_o + (1 - w_o) sg(rgb_h); weights from alpha. Only the object gets gradients.
    background: "random" (object or human background, then white with probability 0.5),
    "object", "human" or "white". Per-sample density and normal are the object's (as the
    release returns them); comp_normal blends both normals with w_o.
    """
    num_rays = origins.shape[0]
    k_march, k_bg = _split(key, stratified)
    samples = sample_rays(k_march, origins, directions, grid,
                          lambda x: obj.density(x) + human.density(x), march)
    points, dirs = sample_points(origins, directions, samples)
    out_o, nan_o = _clean(obj.radiance(points, dirs), samples.valid)
    out_h, nan_h = _clean(jax.lax.stop_gradient(human.radiance(points, dirs)), samples.valid)
    alpha_o = 1.0 - jnp.exp(-out_o["density"] * march.step_size)
    alpha_h = 1.0 - jnp.exp(-out_h["density"] * march.step_size)
    alpha = jnp.clip(alpha_o + alpha_h, 0.0, 1.0)
    w_o = (alpha_o / (alpha_o + alpha_h + 1e-10))[:, None]
    rgb = w_o * out_o["rgb"] + (1.0 - w_o) * out_h["rgb"]
    normal = w_o * out_o["normal"] + (1.0 - w_o) * out_h["normal"]
    backgrounds = dict(object=obj.background(directions),
                       human=jax.lax.stop_gradient(human.background(directions)))
    bg = _pick_background(k_bg, backgrounds, background)
    weights, images = _composite_outputs(samples, alpha, rgb, normal, bg, num_rays,
                                         march.steps_per_ray)
    return dict(**images, comp_rgb_bg=bg,
                **_per_sample(samples, points, dirs, weights,
                              dict(density=out_o["density"], normal=out_o["normal"],
                                   rgb=out_o["rgb"], density_human=out_h["density"])),
                nan_density=nan_o + nan_h + samples.nan_density)
