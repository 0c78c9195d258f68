"""Interaction-stage losses against per-sample NumPy loops written from docs/method.md §2.5."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from interfusion_jax import losses


@pytest.fixture
def samples():
    rng = np.random.default_rng(0)
    s = 200
    normals = rng.normal(size=(s, 3))
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    dirs = rng.normal(size=(s, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    return dict(
        weights=rng.uniform(0, 0.3, s).astype(np.float32),
        normals=normals.astype(np.float32),
        dirs=dirs.astype(np.float32),
        valid=rng.uniform(size=s) < 0.8,
        opacity=np.concatenate([rng.uniform(0, 1, 30), np.zeros(10)]).astype(np.float32),
        density=rng.exponential(5.0, s).astype(np.float32),
        occupancy=rng.uniform(size=s).astype(np.float32),
        distance=rng.uniform(0, 1, s).astype(np.float32),
    )


def test_schedule_value():
    assert float(losses.schedule_value(1.5, 100)) == 1.5
    spec = (0, 10.0, 1000.0, 5000)
    for step, want in [(0, 10.0), (2500, 505.0), (5000, 1000.0), (9000, 1000.0), (-5, 10.0)]:
        assert math.isclose(float(losses.schedule_value(spec, step)), want, rel_tol=1e-6)


def test_step_weights():
    for step, want in [(0, 0.0), (999, 0.0), (1000, 0.1), (4500, 0.4), (10000, 1.0)]:
        assert math.isclose(float(losses.object_sds_weight(step, 1000)), want, rel_tol=1e-6)
    w = (0.001, 0.01, 0.1)
    table = {0: 0.001, 999: 0.001, 1000: 0.01, 1999: 0.01, 2000: 0.1, 8000: 0.1, 8001: 0.01,
             9000: 0.01, 9001: 0.001}
    for step, want in table.items():
        got = losses.object_shape_weight(jnp.int32(step), w, (1000, 2000, 8000, 9000))
        assert math.isclose(float(got), want, rel_tol=1e-6)


def test_orientation_matches_loop(samples):
    s = samples
    total = 0.0
    for i in range(len(s["weights"])):
        if s["valid"][i]:
            total += s["weights"][i] * max(0.0, float(np.dot(s["normals"][i], s["dirs"][i]))) ** 2
    want = total / np.count_nonzero(s["opacity"] > 0)
    got = losses.orientation_loss(s["weights"], s["normals"], s["dirs"], s["valid"], s["opacity"])
    np.testing.assert_allclose(float(got), want, rtol=1e-5)


def test_orientation_gradient_does_not_reach_weights(samples):
    s = samples
    g = jax.grad(lambda w: losses.orientation_loss(w, s["normals"], s["dirs"], s["valid"],
                                                   s["opacity"]))(jnp.asarray(s["weights"]))
    assert np.all(np.asarray(g) == 0)


def test_sparsity_and_entropy(samples):
    o = samples["opacity"].astype(np.float64)
    np.testing.assert_allclose(float(losses.sparsity_loss(o)), np.mean(np.sqrt(o * o + 0.01)),
                               rtol=1e-5)
    p = np.clip(o, 1e-3, 1 - 1e-3)
    want = np.mean([-(x * math.log(x) + (1 - x) * math.log(1 - x)) for x in p])
    np.testing.assert_allclose(float(losses.opacity_entropy_loss(o)), want, rtol=1e-5)


def test_shape_losses_match_loop(samples):
    s = samples
    human = obj = 0.0
    for dens, occ, dist, ok in zip(s["density"], s["occupancy"], s["distance"], s["valid"]):
        if not ok:
            continue
        p = min(max(1 - math.exp(-0.2 * dens), 0.0), 1.1)
        if occ > 0.5:
            human += -math.log(1e-4) * (1 - p)
            obj += -math.log(1e-4) * p
        else:
            human += -math.log(1e-4) * p * (1 - math.exp(-dist**2 / (2 * 0.4**2)))
    got_h = losses.human_shape_loss(s["density"], s["occupancy"], s["distance"], s["valid"], 0.2,
                                    0.4)
    got_o = losses.object_shape_loss(s["density"], s["occupancy"], s["valid"], 0.2)
    np.testing.assert_allclose(float(got_h), human, rtol=1e-3)
    np.testing.assert_allclose(float(got_o), obj, rtol=1e-3)


def test_shape_loss_pulls_density_the_right_way():
    occupancy = jnp.array([1.0, 0.0])
    distance = jnp.array([0.0, 1.0])
    valid = jnp.array([True, True])
    g = jax.grad(lambda d: losses.human_shape_loss(d, occupancy, distance, valid, 0.2, 0.4))(jnp.ones(2))
    assert g[0] < 0 < g[1]  # more density inside the body, less outside
    g = jax.grad(lambda d: losses.object_shape_loss(d, occupancy, valid, 0.2))(jnp.ones(2))
    assert g[0] > 0 and g[1] == 0
