"""Volume rendering of one field and of the object/human composite (docs/method.md §2.3).

A field is given as pure callables (params closed over), see `FieldFns`. Renders return per-ray
images [N,...] and per-sample arrays over the fixed buffer [S,...] with `valid` and `ray_index`
(== num_rays in unused slots, so `jax.ops.segment_sum(..., num_segments=N)` drops them).
Unused slots, rays that miss the box and zero-direction rays contribute nothing: zero opacity and
the background colour. NaN densities or colours are treated as 0 and counted in `nan_density`.

A render is one pass of the sampler (`render_field`, `render_composite`: the training step's
static buffer, with the sampler's truncation figures). Volume rendering composes along a ray, so
the complete renders (`render_field_complete`, `render_composite_complete`, for evaluation) run
passes that each resume where the last one cut its rays, until no ray is cut.
"""
import dataclasses
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from ifcommon.geometry import normalize
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



def _pick_background(key, backgrounds, mode):
    """Background colour [N,3]: `mode` names one of `backgrounds` (a dict) or "white"; "random"
    picks one of them uniformly, then white with probability 0.5 (docs/method.md §2.3)."""
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


def _weights(samples, alpha, trans0, num_rays, steps):
    """Per-sample weights [S]: transmittance in front (trans0 [N] of earlier passes included)
    times alpha."""
    trans = transmittance(alpha, samples.ray_index, samples.step_index, num_rays, steps)
    trans = trans * trans0[jnp.minimum(samples.ray_index, num_rays - 1)]
    return jnp.where(samples.valid, trans * alpha, 0.0)


def _sums(samples, weights, rgb, normal, num_rays):
    """Weighted per-ray sums: rgb_fg [N,3], opacity [N], depth [N], normal [N,3]."""
    return dict(rgb_fg=_accumulate(rgb, weights, samples, num_rays),
                opacity=_accumulate(jnp.ones_like(weights), weights, samples, num_rays),
                depth=_accumulate(samples.t_mid, weights, samples, num_rays),
                normal=_accumulate(normal, weights, samples, num_rays))


def _images(sums, bg):
    opacity = sums["opacity"]
    comp_normal = (normalize(sums["normal"]) + 1.0) / 2.0
    return dict(
        comp_rgb=sums["rgb_fg"] + bg * (1.0 - opacity[:, None]),
        comp_rgb_fg=sums["rgb_fg"],
        opacity=opacity,
        depth=sums["depth"],
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


def _field_pass(k_march, origins, directions, grid, field, march, start=None, trans0=None):
    """One sampler pass of one field: (sums, per-sample dict, Samples, NaN count)."""
    num_rays = origins.shape[0]
    trans0 = jnp.ones(num_rays) if trans0 is None else trans0
    samples = sample_rays(k_march, origins, directions, grid, field.density, march, start, trans0)
    points, dirs = sample_points(origins, directions, samples)
    out, nan_count = _clean(field.radiance(points, dirs), samples.valid)
    alpha = 1.0 - jnp.exp(-out["density"] * march.step_size)
    weights = _weights(samples, alpha, trans0, num_rays, march.steps_per_ray)
    per_sample = dict(weights=weights, points=points, t_dirs=dirs, **out)
    return (_sums(samples, weights, out["rgb"], out["normal"], num_rays), per_sample, samples,
            nan_count + samples.nan_density)


def _composite_pass(k_march, origins, directions, grid, obj, human, march, start=None,
                    trans0=None):
    """One sampler pass of the composite (see render_composite): as _field_pass."""
    num_rays = origins.shape[0]
    trans0 = jnp.ones(num_rays) if trans0 is None else trans0
    samples = sample_rays(k_march, origins, directions, grid,
                          lambda x: obj.density(x) + human.density(x), march, start, trans0)
    points, dirs = sample_points(origins, directions, samples)
    out_o, nan_o = _clean(obj.radiance(points, dirs), samples.valid)
    out_h, nan_h = _clean(jax.lax.stop_gradient(human.radiance(points, dirs)), samples.valid)
    alpha_o = 1.0 - jnp.exp(-out_o["density"] * march.step_size)
    alpha_h = 1.0 - jnp.exp(-out_h["density"] * march.step_size)
    alpha = jnp.clip(alpha_o + alpha_h, 0.0, 1.0)
    w_o = (alpha_o / (alpha_o + alpha_h + 1e-10))[:, None]
    rgb = w_o * out_o["rgb"] + (1.0 - w_o) * out_h["rgb"]
    normal = w_o * out_o["normal"] + (1.0 - w_o) * out_h["normal"]
    weights = _weights(samples, alpha, trans0, num_rays, march.steps_per_ray)
    per_sample = dict(weights=weights, points=points, t_dirs=dirs, density=out_o["density"],
                      normal=out_o["normal"], rgb=out_o["rgb"], density_human=out_h["density"])
    return (_sums(samples, weights, rgb, normal, num_rays), per_sample, samples,
            nan_o + nan_h + samples.nan_density)


def _buffer_figures(samples):
    """The sampler's figures of one render: slots used, candidates evaluated, pruning rounds,
    the fraction of rays cut short, of those cut while not yet opaque, and samples dropped."""
    return dict(valid=samples.valid, ray_index=samples.ray_index, t_mid=samples.t_mid,
                num_samples=jnp.sum(samples.valid, dtype=jnp.int32),
                num_candidates=samples.num_candidates, rounds=samples.rounds,
                truncated_rays=jnp.mean(samples.truncated),
                open_truncated_rays=jnp.mean(samples.open_truncated),
                dropped_samples=samples.dropped)


def render_field(key, origins, directions, grid, field, march, *, stratified=True,
                 background="random"):
    """Render one field along rays origins, directions [N,3] (unit directions): one pass.

    key: PRNG key (None only with stratified=False and a fixed background).
    background: "random" (field background or white, 0.5 each), "field" or "white".
    Returns comp_rgb, comp_rgb_fg, background (the one used) [N,3], opacity, depth [N],
    comp_normal [N,3]; per sample weights, density [S], points, normal, rgb, t_dirs [S,3], valid,
    ray_index, t_mid [S]; num_samples, num_candidates, rounds, truncated_rays,
    open_truncated_rays, dropped_samples, nan_density.
    """
    k_march, k_bg = _split(key, stratified)
    sums, per_sample, samples, nan_count = _field_pass(k_march, origins, directions, grid, field,
                                                       march)
    bg = _pick_background(k_bg, dict(field=field.background(directions)), background)
    return dict(**_images(sums, bg), background=bg, **per_sample, **_buffer_figures(samples),
                nan_density=nan_count)


def render_composite(key, origins, directions, grid, obj, human, march, *, stratified=True,
                     background="random"):
    """Interaction render of the object and human fields on one shared sample set (docs/method.md §2.3).

    The grid and the pruning use density_o + density_h. Per sample:
    alpha = clip(alpha_o + sg(alpha_h), 0, 1), w_o = alpha_o / (alpha_o + sg(alpha_h) + 1e-10),
    rgb = w_o rgb_o + (1 - w_o) sg(rgb_h); weights from alpha. Only the object field gets
    gradients; the chosen background does too, the human's included (as in the release).
    background: "random" (object or human background, then white with probability 0.5),
    "object", "human" or "white". Per-sample density and normal are the object's (as the
    release returns them); comp_normal blends both normals with w_o. Returns as render_field.
    """
    k_march, k_bg = _split(key, stratified)
    sums, per_sample, samples, nan_count = _composite_pass(k_march, origins, directions, grid,
                                                           obj, human, march)
    backgrounds = dict(object=obj.background(directions), human=human.background(directions))
    bg = _pick_background(k_bg, backgrounds, background)
    return dict(**_images(sums, bg), background=bg, **per_sample, **_buffer_figures(samples),
                nan_density=nan_count)


def _complete(pass_fn, num_rays, march, bg):
    """Passes of pass_fn(start [N], trans0 [N]) -> (sums, _, Samples, _) until no ray is cut.

    Each pass evaluates at least one candidate or keeps at least one sample of every ray it
    cuts, so the loop ends; its bound only guards against a broken density (NaN everywhere).
    Returns the images and `passes`, `truncated_rays` (0 unless the bound was hit).
    """
    steps = march.steps_per_ray
    zeros = dict(rgb_fg=jnp.zeros((num_rays, 3)), opacity=jnp.zeros(num_rays),
                 depth=jnp.zeros(num_rays), normal=jnp.zeros((num_rays, 3)))

    def cond(carry):
        passes, start = carry[:2]
        return (passes < num_rays * steps) & jnp.any(start < steps)

    def body(carry):
        passes, start, trans, sums = carry
        part, _, samples, _ = pass_fn(start, trans)
        return (passes + 1, samples.resume_step, trans - part["opacity"],
                jax.tree_util.tree_map(jnp.add, sums, part))

    carry = (jnp.zeros((), jnp.int32), jnp.zeros(num_rays, jnp.int32), jnp.ones(num_rays), zeros)
    passes, start, _, sums = jax.lax.while_loop(cond, body, carry)
    return dict(**_images(sums, bg), passes=passes, truncated_rays=jnp.mean(start < steps))


def _complete_march(march):
    return dataclasses.replace(march, max_rounds=None)


def render_field_complete(origins, directions, grid, field, march, *, background="white"):
    """Deterministic render of one field in which no ray is cut short (evaluation).

    background: "field" or "white". Returns comp_rgb, comp_rgb_fg, opacity, depth, comp_normal,
    passes (sampler passes run) and truncated_rays (0).
    """
    march = _complete_march(march)
    bg = _pick_background(None, dict(field=field.background(directions)), background)
    return _complete(
        lambda start, trans0: _field_pass(None, origins, directions, grid, field, march, start,
                                          trans0),
        origins.shape[0], march, bg)


def render_composite_complete(origins, directions, grid, obj, human, march, *,
                              background="white"):
    """Deterministic composite render in which no ray is cut short (evaluation); background
    "object", "human" or "white". Returns as render_field_complete."""
    march = _complete_march(march)
    bg = _pick_background(None, dict(object=obj.background(directions),
                                     human=human.background(directions)), background)
    return _complete(
        lambda start, trans0: _composite_pass(None, origins, directions, grid, obj, human, march,
                                              start, trans0),
        origins.shape[0], march, bg)
