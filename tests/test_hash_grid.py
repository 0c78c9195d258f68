"""Hash-grid encoding against a slow NumPy re-derivation of tiny-cuda-nn's grid kernel."""
import math

import jax
import jax.numpy as jnp
import numpy as np

from nerf.hash_grid import HashGridEncoding, encode

# Small config with dense and hashed levels: resolutions 8, 12, 18, 27 (27^3 > 2^12 rows: hashed).
CFG = dict(n_levels=4, log2_hashmap_size=12, base_resolution=8, per_level_scale=1.5)
F = 2
MASK = 0xFFFFFFFF


def reference_corners(x, n_levels, log2_hashmap_size, base_resolution, per_level_scale):
    """Per point and level: list of (row, weight) from plain Python integers, as tcnn computes."""
    out = []
    offset = 0
    layout = []
    for level in range(n_levels):
        scale = float(np.float32(2.0 ** (level * np.float32(math.log2(per_level_scale))))
                      * np.float32(base_resolution) - np.float32(1.0))
        res = math.ceil(np.float32(scale)) + 1
        size = min(((res**3 + 7) // 8) * 8, 2**log2_hashmap_size)
        layout.append((scale, res, size, offset))
        offset += size
    for p in x:
        per_level = []
        for scale, res, size, off in layout:
            pos = [float(np.float32(c) * np.float32(scale) + np.float32(0.5)) for c in p]
            cell = [math.floor(c) for c in pos]
            frac = [c - f for c, f in zip(pos, cell)]
            corners = []
            for c in range(8):
                bits = [(c >> d) & 1 for d in range(3)]
                g = [(cell[d] + bits[d]) & MASK for d in range(3)]
                w = np.prod([frac[d] if bits[d] else 1 - frac[d] for d in range(3)])
                if res**3 <= size:
                    idx = (g[0] + g[1] * res + g[2] * res * res) & MASK
                else:
                    idx = (g[0] * 1 & MASK) ^ (g[1] * 2654435761 & MASK) ^ (g[2] * 805459861 & MASK)
                corners.append((off + idx % size, w))
            per_level.append(corners)
        out.append(per_level)
    return out, offset


def reference_encode(table, x, cfg):
    corners, _ = reference_corners(x, **cfg)
    out = np.zeros((len(x), cfg["n_levels"], table.shape[1]))
    for n, per_level in enumerate(corners):
        for l, cs in enumerate(per_level):
            for row, w in cs:
                out[n, l] += w * table[row]
    return out.reshape(len(x), -1)


def test_values_and_table_gradients_match_numpy_reference():
    rng = np.random.default_rng(0)
    _, rows = reference_corners(np.zeros((0, 3)), **CFG)
    table = rng.normal(size=(rows, F)).astype(np.float32)
    # Include points outside [0,1] too: negative cells wrap as uint32 in tcnn.
    x = rng.uniform(-0.1, 1.1, size=(64, 3)).astype(np.float32)
    got = np.asarray(jax.jit(lambda t, x: encode(t, x, **CFG))(table, x))
    np.testing.assert_allclose(got, reference_encode(table.astype(np.float64), x, CFG),
                               rtol=1e-5, atol=1e-5)

    cot = rng.normal(size=got.shape).astype(np.float32)
    grad = jax.grad(lambda t: jnp.sum(encode(t, x, **CFG) * cot))(table)
    want = np.zeros((rows, F))
    corners, _ = reference_corners(x, **CFG)
    cot_l = cot.reshape(len(x), CFG["n_levels"], F)
    for n, per_level in enumerate(corners):
        for l, cs in enumerate(per_level):
            for row, w in cs:
                np.add.at(want, row, w * cot_l[n, l])
    np.testing.assert_allclose(np.asarray(grad), want, rtol=1e-4, atol=1e-5)


def test_input_gradient_matches_finite_differences_of_reference():
    rng = np.random.default_rng(1)
    _, rows = reference_corners(np.zeros((0, 3)), **CFG)
    table = rng.normal(size=(rows, F)).astype(np.float32)
    eps = 1e-4
    # Keep points whose fractional positions are away from cell faces at every level.
    cand = rng.uniform(0.05, 0.95, size=(400, 3)).astype(np.float32)
    scales = [2.0 ** (l * math.log2(CFG["per_level_scale"])) * CFG["base_resolution"] - 1
              for l in range(CFG["n_levels"])]
    ok = np.ones(len(cand), bool)
    for s in scales:
        frac = (cand * s + 0.5) % 1.0
        ok &= np.all((frac > 0.02) & (frac < 0.98), axis=1)
    x = cand[ok][:16]
    assert len(x) == 16
    w = rng.normal(size=(CFG["n_levels"] * F,))
    jac = jax.grad(lambda x: jnp.sum(encode(jnp.asarray(table), x, **CFG) @ jnp.asarray(w, jnp.float32)))(x)
    fd = np.zeros_like(x, dtype=np.float64)
    t64 = table.astype(np.float64)
    for d in range(3):
        e = np.zeros(3)
        e[d] = eps
        fp = reference_encode(t64, x.astype(np.float64) + e, CFG) @ w
        fm = reference_encode(t64, x.astype(np.float64) - e, CFG) @ w
        fd[:, d] = (fp - fm) / (2 * eps)
    np.testing.assert_allclose(np.asarray(jac), fd, rtol=2e-3, atol=2e-3)


def test_module_layout_init_and_release_sizes():
    enc = HashGridEncoding(n_features_per_level=F, **CFG)
    params = enc.init(jax.random.PRNGKey(0), jnp.zeros((1, 3)))
    _, rows = reference_corners(np.zeros((0, 3)), **CFG)
    table = params["params"]["table"]
    assert table.shape == (rows, F)
    assert float(jnp.max(jnp.abs(table))) <= 1e-4
    assert enc.apply(params, jnp.full((5, 3), 0.3)).shape == (5, CFG["n_levels"] * F)
    # Release config: levels 0-4 dense (resolutions 16..71), 5-15 hashed at 2^19 rows.
    _, release_rows = reference_corners(np.zeros((0, 3)), 16, 19, 16, 1.4472692374403782)
    assert release_rows == 4096 + 13824 + 39304 + 117656 + 357912 + 11 * 2**19
