"""Occupancy-grid renders against a dense NumPy march; composite formula; bad input."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nerf.cameras import generate_rays, look_at
from nerf.occupancy import init_grid, update_grid
from nerf.render import (FieldFns, render_composite, render_composite_complete, render_field,
                         render_field_complete)
from configs.base import get_config
from interfusion_jax.train_step import march_config
from nerf import sampler
from nerf.sampler import fair_quota, sample_rays

RELEASE = dataclasses.replace(march_config(get_config()), max_candidates=2**17)
EXACT = dataclasses.replace(RELEASE, max_samples=2**17, alpha_threshold=0.0, early_stop_eps=0.0)
BOX_LO, BOX_HI = np.array([-0.5, -0.375, -0.625]), np.array([0.625, 0.5, 0.25])  # on cell faces


def blob_density(x):
    return 25.0 * jnp.exp(-jnp.sum((x - jnp.array([0.1, -0.2, 0.05])) ** 2, -1) / (2 * 0.35**2))


def box_density(x, scale=15.0):
    inside = jnp.all((x >= BOX_LO) & (x <= BOX_HI), -1)
    return jnp.where(inside, scale, 0.0)


def colour(x):
    return 0.5 + 0.4 * jnp.sin(3.0 * x + jnp.array([0.0, 1.0, 2.0]))


def make_field(density, bg=(0.2, 0.3, 0.9)):
    return FieldFns(density, lambda x, d: dict(density=density(x), rgb=colour(x), normal=x),
                    lambda d: jnp.broadcast_to(jnp.array(bg), d.shape))


def camera_rays(n=16):
    c2w = look_at(jnp.array([2.2, 1.6, 1.2]), jnp.array([0.05, 0.0, -0.1]),
                  jnp.array([0.0, 0.0, 1.0]))
    o, d = generate_rays(c2w, jnp.deg2rad(55.0), n, n)
    extra_o = jnp.array([[3.0, 3.0, 3.0], [0.0, 0.0, 3.0], [0.0, 0.0, 3.0]])
    extra_d = jnp.array([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, -1.0]])  # miss, zero, axis
    return jnp.concatenate([o, extra_o]), jnp.concatenate([d, extra_d])


def dense_reference(o, d, alpha_fn, rgb_fn, radius=2.0, n_steps=512):
    """NumPy: every step midpoint (k + 1/2) dt inside the box, no grid, no pruning.

    alpha_fn(points [K,3], dt) -> alpha [K]; rgb_fn(points) -> [K,3]. Returns rgb_fg, opacity,
    depth per ray.
    """
    o, d = np.asarray(o, np.float64), np.asarray(d, np.float64)
    dt = 1.732 * 2 * radius / n_steps
    rgb, opacity, depth = np.zeros((len(o), 3)), np.zeros(len(o)), np.zeros(len(o))
    for r in range(len(o)):
        if np.linalg.norm(d[r]) == 0:
            continue
        with np.errstate(divide="ignore", invalid="ignore"):
            t0, t1 = (-radius - o[r]) / d[r], (radius - o[r]) / d[r]
        lo = np.nanmax(np.where(d[r] == 0, -np.inf, np.minimum(t0, t1)))
        hi = np.nanmin(np.where(d[r] == 0, np.inf, np.maximum(t0, t1)))
        if d[r][d[r] == 0].size and np.any(np.abs(o[r][d[r] == 0]) > radius):
            continue
        lo = max(lo, 0.0)
        if hi <= lo:
            continue
        k = np.arange(int(np.ceil(lo / dt - 0.5)), int(np.ceil(hi / dt)) + 1)
        t = (k + 0.5) * dt
        t = t[(t >= lo) & (t < hi)]
        p = o[r] + t[:, None] * d[r]
        a = alpha_fn(p, dt)
        w = a * np.concatenate([[1.0], np.cumprod(1 - a)[:-1]])
        rgb[r], opacity[r], depth[r] = w @ rgb_fn(p), w.sum(), w @ t
    return rgb, opacity, depth


def np_alpha(density_np):
    return lambda p, dt: 1 - np.exp(-density_np(p) * dt)


def np_blob(p):
    return 25.0 * np.exp(-np.sum((p - [0.1, -0.2, 0.05]) ** 2, -1) / (2 * 0.35**2))


def np_box(p, scale=15.0):
    return np.where(np.all((p >= BOX_LO) & (p <= BOX_HI), -1), scale, 0.0)


def np_colour(p):
    return 0.5 + 0.4 * np.sin(3.0 * p + [0.0, 1.0, 2.0])


def check_images(out, ref, atol, bg):
    rgb_fg, opacity, depth = ref
    np.testing.assert_allclose(np.asarray(out["opacity"]), opacity, atol=atol)
    np.testing.assert_allclose(np.asarray(out["comp_rgb_fg"]), rgb_fg, atol=atol)
    np.testing.assert_allclose(np.asarray(out["depth"]), depth, atol=atol * 10)
    np.testing.assert_allclose(np.asarray(out["comp_rgb"]),
                               rgb_fg + np.asarray(bg) * (1 - opacity[:, None]), atol=atol)


def test_full_grid_render_equals_dense_march():
    o, d = camera_rays()
    out = jax.jit(lambda o, d: render_field(None, o, d, init_grid(), make_field(blob_density),
                                            EXACT, stratified=False, background="field"))(o, d)
    assert float(out["truncated_rays"]) == 0
    check_images(out, dense_reference(o, d, np_alpha(np_blob), np_colour), 1e-5, (0.2, 0.3, 0.9))
    # zero-direction and missing rays: nothing rendered, only the background
    assert float(out["opacity"][-3]) == 0 and float(out["opacity"][-2]) == 0
    np.testing.assert_allclose(np.asarray(out["comp_rgb"][-2]), [0.2, 0.3, 0.9], atol=1e-7)
    # per-sample buffer: the weights of each ray sum to its opacity
    per_ray = jax.ops.segment_sum(out["weights"], out["ray_index"], o.shape[0])
    np.testing.assert_allclose(np.asarray(per_ray), np.asarray(out["opacity"]), atol=1e-6)


def test_pruned_grid_render_matches_dense_march_to_1e3():
    o, d = camera_rays()
    field = make_field(box_density)
    grid, _ = update_grid(init_grid(), jax.random.PRNGKey(0), box_density, 0,
                          step_size=RELEASE.step_size)
    assert 0 < float(grid.mask.mean()) < 0.2
    dense_out = render_field(None, o, d, init_grid(), field, EXACT, stratified=False,
                             background="white")
    out = jax.jit(lambda o, d: render_field(None, o, d, grid, field, RELEASE, stratified=False,
                                            background="white"))(o, d)
    assert int(out["num_samples"]) < int(dense_out["num_samples"]) / 5
    check_images(out, dense_reference(o, d, np_alpha(np_box), np_colour), 1e-3, (1, 1, 1))


def test_stratified_march_stays_close_and_differs():
    o, d = camera_rays()
    field = make_field(blob_density)
    fixed = render_field(None, o, d, init_grid(), field, EXACT, stratified=False,
                         background="white")
    jittered = render_field(jax.random.PRNGKey(3), o, d, init_grid(), field, EXACT,
                            background="white")
    diff = np.abs(np.asarray(jittered["comp_rgb"] - fixed["comp_rgb"]))
    assert 0 < diff.max() < 0.05


def test_composite_matches_per_ray_reference_and_isolates_gradients():
    o, d = camera_rays(8)
    centre_h = jnp.array([-0.3, 0.2, 0.1])

    def fields(params):
        def dens_o(x):
            return params["o"] * box_density(x, 1.0)

        def dens_h(x):
            return params["h"] * jnp.exp(-jnp.sum((x - centre_h) ** 2, -1) / 0.18)

        obj = FieldFns(dens_o, lambda x, d: dict(density=dens_o(x), rgb=colour(x) * params["o_c"],
                                                 normal=x),
                       lambda d: jnp.broadcast_to(params["o_bg"], d.shape))
        human = FieldFns(dens_h, lambda x, d: dict(density=dens_h(x),
                                                   rgb=(1 - colour(x)) * params["h_c"], normal=-x),
                         lambda d: jnp.broadcast_to(params["h_bg"], d.shape))
        return obj, human

    params = dict(o=jnp.float32(12.0), h=jnp.float32(20.0), o_c=jnp.float32(1.0),
                  h_c=jnp.float32(0.9), o_bg=jnp.array([0.1, 0.2, 0.3]),
                  h_bg=jnp.array([0.7, 0.6, 0.5]))

    def render(params, background):
        obj, human = fields(params)
        return render_composite(None, o, d, init_grid(), obj, human, EXACT, stratified=False,
                                background=background)

    out = jax.jit(render, static_argnums=1)(params, "human")

    def alphas(p, dt):
        a_o = 1 - np.exp(-12.0 * np_box(p, 1.0) * dt)
        a_h = 1 - np.exp(-20.0 * np.exp(-np.sum((p - np.asarray(centre_h)) ** 2, -1) / 0.18) * dt)
        return a_o, a_h

    def alpha_fn(p, dt):
        a_o, a_h = alphas(p, dt)
        return np.clip(a_o + a_h, 0, 1)

    def rgb_fn(p):
        a_o, a_h = alphas(p, EXACT.step_size)
        w = (a_o / (a_o + a_h + 1e-10))[:, None]
        return w * np_colour(p) + (1 - w) * (1 - np_colour(p)) * 0.9

    check_images(out, dense_reference(o, d, alpha_fn, rgb_fn), 1e-5, (0.7, 0.6, 0.5))

    def loss(params):
        res = render(params, "object")
        return jnp.sum(res["comp_rgb"]) + jnp.sum(res["weights"] * res["density"])

    grads = jax.grad(loss)(params)
    for name in ("h", "h_c", "h_bg"):
        assert np.all(np.asarray(grads[name]) == 0), name
    for name in ("o", "o_c", "o_bg"):
        assert np.any(np.asarray(grads[name]) != 0), name
    # as in the release, the human's background trains when the composite shows it; the human's
    # field still does not
    grads = jax.grad(lambda p: jnp.sum(render(p, "human")["comp_rgb"]))(params)
    assert np.any(np.asarray(grads["h_bg"]) != 0)
    assert float(grads["h"]) == 0 and float(grads["h_c"]) == 0


def test_composite_grid_uses_both_densities():
    o, d = camera_rays(8)
    far_human = lambda x: 30.0 * jnp.all(jnp.abs(x - jnp.array([0.0, -1.0, 0.0])) < 0.25, -1)
    obj, human = make_field(box_density), make_field(far_human)
    grid, _ = update_grid(init_grid(), jax.random.PRNGKey(1),
                          lambda x: box_density(x) + far_human(x), 0, step_size=RELEASE.step_size)
    both = render_composite(None, o, d, grid, obj, human, RELEASE, stratified=False,
                            background="white")
    only_human = render_field(None, o, d, grid, human, RELEASE, stratified=False,
                              background="white")
    # rays that see only the human still see it through the composite's shared samples
    sees_human = np.asarray(only_human["opacity"]) > 0.5
    assert sees_human.any()
    assert np.all(np.asarray(both["opacity"])[sees_human] > 0.5)


def test_empty_scene_gives_background_and_finite_gradients():
    o, d = camera_rays(8)
    empty = lambda x: jnp.zeros(x.shape[0])
    grid, info = update_grid(init_grid(), jax.random.PRNGKey(0), empty, 0,
                             step_size=RELEASE.step_size)
    assert not bool(grid.mask.any())

    def loss(scale):
        field = make_field(lambda x: scale * empty(x))
        out = render_field(jax.random.PRNGKey(0), o, d, grid, field, RELEASE, background="white")
        return jnp.sum(out["comp_rgb"]), out

    (value, out), g = jax.value_and_grad(loss, has_aux=True)(1.0)
    assert int(out["num_samples"]) == 0 and float(out["truncated_rays"]) == 0
    np.testing.assert_array_equal(np.asarray(out["comp_rgb"]), 1.0)
    assert np.isfinite(float(g))


def test_fair_quota_is_the_round_robin_prefix():
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 23, 37) * (rng.random(37) < 0.8)
    for budget in (0, 5, 37, 60, 150, int(counts.sum()), int(counts.sum()) + 10):
        quota = fair_quota(jnp.asarray(counts, jnp.int32), budget, 23)
        # NumPy: every row's first entry, then every row's second, ... until the budget is spent
        order = sorted((rank, row) for row in range(len(counts))
                       for rank in range(counts[row]))[:budget]
        want = np.bincount([row for _, row in order], minlength=len(counts))
        np.testing.assert_array_equal(np.asarray(quota), want, err_msg=f"budget {budget}")


def sphere_density(x):
    return jnp.where(jnp.sum(x**2, -1) < SPHERE_RADIUS**2, 200.0, 0.0)


SPHERE_RADIUS = 0.6


def test_opaque_body_under_a_tiny_budget_keeps_every_ray_opaque_at_its_entry():
    """About 2 samples per ray where the rays cross ~300 steps: rays are cut from the far end,
    so each ray through the body still gets the samples at its entry."""
    c2w = look_at(jnp.array([3.0, 0.4, 0.6]), jnp.zeros(3), jnp.array([0.0, 0.0, 1.0]))
    o, d = generate_rays(c2w, jnp.deg2rad(25.0), 24, 24)
    n = o.shape[0]
    tight = dataclasses.replace(RELEASE, max_samples=2 * n, max_candidates=8 * n, max_rounds=64)
    field = make_field(sphere_density)
    updated, _ = update_grid(init_grid(), jax.random.PRNGKey(0), sphere_density, 0,
                             step_size=tight.step_size)
    o_np, d_np = np.asarray(o, np.float64), np.asarray(d, np.float64)
    closest = np.linalg.norm(o_np - np.sum(o_np * d_np, -1, keepdims=True) * d_np, axis=-1)
    through = closest < 0.8 * SPHERE_RADIUS
    entry = -np.sum(o_np * d_np, -1) - np.sqrt(np.maximum(SPHERE_RADIUS**2 - closest**2, 0.0))
    assert through.sum() > n // 4
    # One cell along any direction (its diagonal): a grid update reads one random point per
    # cell, so a cell the surface crosses may be marked empty and the entry move to the next.
    cell = np.sqrt(3.0) * 4.0 / 32
    for grid in (init_grid(), updated):
        out = jax.jit(lambda o, d: render_field(None, o, d, grid, field, tight, stratified=False,
                                                background="white"))(o, d)
        opacity, depth = np.asarray(out["opacity"]), np.asarray(out["depth"])
        assert np.all(opacity[through] >= 0.9)
        assert np.all(np.abs(depth[through] / opacity[through] - entry[through]) < cell)
        assert int(out["num_samples"]) <= 2 * n
        # rays were cut, but only behind what was already opaque
        assert float(out["truncated_rays"]) > 0 and float(out["open_truncated_rays"]) == 0
        assert int(out["dropped_samples"]) > 0


def test_cut_rays_are_measured_and_the_complete_render_cuts_none():
    o, d = camera_rays()
    field = make_field(blob_density)
    ample = render_field(None, o, d, init_grid(), field, RELEASE, stratified=False,
                         background="white")
    assert float(ample["truncated_rays"]) == 0
    # a sample buffer far too small: cut from the far end, every ray with samples keeps its first
    # ones and none renders empty
    small = dataclasses.replace(RELEASE, max_samples=1024, max_candidates=2**17, max_rounds=2)
    out = render_field(None, o, d, init_grid(), field, small, stratified=False,
                       background="white")
    assert int(out["num_samples"]) == 1024 and int(out["dropped_samples"]) > 0
    assert 0 < float(out["open_truncated_rays"]) <= float(out["truncated_rays"])
    assert np.all(np.isfinite(np.asarray(out["comp_rgb"])))
    assert np.all(np.asarray(out["opacity"])[np.asarray(ample["opacity"]) > 0] > 0)
    # too few pruning rounds: the rays not evaluated to the end are counted as cut
    few = dataclasses.replace(RELEASE, max_samples=256, max_candidates=1024, max_rounds=2)
    out = render_field(None, o, d, init_grid(), field, few, stratified=False, background="white")
    assert int(out["rounds"]) == 2 and int(out["num_candidates"]) == 2048
    assert float(out["open_truncated_rays"]) > 0.5
    # the complete render resumes cut rays pass after pass and equals the uncut render
    complete = jax.jit(lambda o, d: render_field_complete(o, d, init_grid(), field, few))(o, d)
    assert int(complete["passes"]) > 1 and float(complete["truncated_rays"]) == 0
    for key in ("comp_rgb", "opacity", "depth", "comp_normal"):
        np.testing.assert_allclose(np.asarray(complete[key]), np.asarray(ample[key]), atol=1e-4,
                                   err_msg=key)
    both = render_composite_complete(o, d, init_grid(), field, make_field(box_density), few)
    plain = render_composite(None, o, d, init_grid(), field, make_field(box_density), RELEASE,
                             stratified=False, background="white")
    assert float(plain["truncated_rays"]) == 0
    np.testing.assert_allclose(np.asarray(both["comp_rgb"]), np.asarray(plain["comp_rgb"]),
                               atol=1e-4)


def fog_density(x):
    """A faint fog (alpha 0.02 a step) filling the box: every candidate is kept."""
    return jnp.full(x.shape[:-1], -jnp.log(0.98) / RELEASE.step_size)


def test_a_complete_march_prunes_only_until_its_buffer_is_full():
    o, d = camera_rays()
    n = o.shape[0]
    fog = make_field(fog_density)
    tight = dataclasses.replace(RELEASE, max_samples=n, max_candidates=4 * n, max_rounds=None)
    samples = sample_rays(None, o, d, init_grid(), fog.density, tight)
    # one round fills the buffer; evaluating the rays to their ends would be done again by the
    # next passes, which resume where this one cut
    assert int(samples.rounds) == 1 and int(samples.num_candidates) <= 4 * n
    assert float(jnp.mean(samples.truncated)) > 0.5
    complete = jax.jit(lambda o, d: render_field_complete(o, d, init_grid(), fog, tight))(o, d)
    roomy = dataclasses.replace(RELEASE, max_samples=2**17, max_candidates=2**18)
    ample = render_field(None, o, d, init_grid(), fog, roomy, stratified=False, background="white")
    assert float(ample["truncated_rays"]) == 0 and float(complete["truncated_rays"]) == 0
    assert int(complete["passes"]) > 50
    for key in ("comp_rgb", "opacity", "depth", "comp_normal"):
        np.testing.assert_allclose(np.asarray(complete[key]), np.asarray(ample[key]), atol=1e-4,
                                   err_msg=key)


def _searching(monkeypatch, fn):
    """fn() with the sampler searching its tables whatever their size."""
    with monkeypatch.context() as m:
        m.setattr(sampler, "DENSE_TABLE", 0)
        return fn()


def test_searched_and_dense_tables_give_the_same_samples(monkeypatch):
    """The sampler reads its [rays, steps] tables whole when they are small and searches them per
    ray when they are large (evaluation chunks); both keep the same samples and cuts."""
    o, d = camera_rays(24)
    updated, _ = update_grid(init_grid(), jax.random.PRNGKey(0), blob_density, 0,
                             step_size=RELEASE.step_size)
    n = o.shape[0]
    start = jnp.asarray(np.random.default_rng(0).integers(0, 200, n), jnp.int32)
    trans0 = jnp.asarray(np.random.default_rng(1).uniform(1e-3, 1.0, n), jnp.float32)
    cases = [(RELEASE, None, None), (dataclasses.replace(RELEASE, max_samples=2 * n,
                                                         max_candidates=8 * n, max_rounds=64),
                                     start, trans0),
             (dataclasses.replace(RELEASE, max_samples=300, max_candidates=1000, max_rounds=3),
              None, None)]
    for march, s, t in cases:
        def sample(o, d, march=march, s=s, t=t):
            return sample_rays(jax.random.PRNGKey(3), o, d, updated, blob_density, march, s, t)

        dense = jax.jit(sample)(o, d)
        searched = _searching(monkeypatch, lambda: jax.jit(sample)(o, d))
        assert int(dense.dropped) > 0 or march is RELEASE
        for name in ("ray_index", "step_index", "valid", "resume_step", "truncated",
                     "open_truncated", "num_candidates", "num_kept", "dropped", "rounds"):
            np.testing.assert_array_equal(np.asarray(getattr(searched, name)),
                                          np.asarray(getattr(dense, name)), err_msg=name)
        np.testing.assert_allclose(np.asarray(searched.t_mid), np.asarray(dense.t_mid), atol=1e-6)
        alpha = jnp.where(dense.valid, 0.3 + 0.2 * jnp.sin(dense.t_mid), 0.0)
        def trans():
            return sampler.transmittance(alpha, dense.ray_index, dense.step_index, n,
                                         RELEASE.steps_per_ray)

        np.testing.assert_allclose(np.asarray(_searching(monkeypatch, trans)),
                                   np.asarray(trans()), rtol=1e-5)


def test_a_fresh_grid_keeps_the_configured_alpha_threshold():
    o, d = camera_rays()
    out = render_field(None, o, d, init_grid(), make_field(box_density), RELEASE,
                       stratified=False, background="white")
    # without the fix mean(occs) = 0 made the threshold 0 and every empty step a sample
    assert int(out["num_samples"]) < 0.2 * int(out["num_candidates"])
    check_images(out, dense_reference(o, d, np_alpha(np_box), np_colour), 1e-3, (1, 1, 1))


def test_nan_density_is_zeroed_and_flagged():
    o, d = camera_rays(8)
    nan_blob = lambda x: jnp.where(x[:, 0] > 0.3, jnp.nan, blob_density(x))
    out = render_field(None, o, d, init_grid(), make_field(nan_blob), RELEASE, stratified=False,
                       background="white")
    assert int(out["nan_density"]) > 0
    for key in ("comp_rgb", "opacity", "depth", "comp_normal", "weights"):
        assert np.all(np.isfinite(np.asarray(out[key]))), key


def test_bad_background_mode_is_a_clear_error():
    o, d = camera_rays(4)
    with pytest.raises(ValueError, match="background mode"):
        render_field(None, o, d, init_grid(), make_field(blob_density), RELEASE,
                     stratified=False, background="black")
    with pytest.raises(ValueError, match="PRNG key"):
        render_field(None, o, d, init_grid(), make_field(blob_density), RELEASE)
