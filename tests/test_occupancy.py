"""Occupancy-grid update rule (nerfacc 0.5 as the release uses it), on small grids."""
import flax
import jax
import jax.numpy as jnp
import numpy as np

from nerf.occupancy import cell_index, init_grid, update_grid

R, RADIUS, STEP = 8, 2.0, 0.0135


def cell_constant(values):
    """A density constant inside each cell of an R^3 grid: values [R,R,R]."""
    table = jnp.asarray(values, jnp.float32)

    def density(x):
        ijk = jnp.clip(jnp.floor((x + RADIUS) / (2 * RADIUS) * R).astype(jnp.int32), 0, R - 1)
        return table[ijk[:, 0], ijk[:, 1], ijk[:, 2]]
    return density


def test_warmup_evaluates_every_cell_and_thresholds():
    rng = np.random.default_rng(0)
    values = np.where(rng.random((R, R, R)) < 0.3, rng.uniform(0.1, 5.0, (R, R, R)), 0.0)
    grid, info = update_grid(init_grid(R, RADIUS), jax.random.PRNGKey(0), cell_constant(values), 0,
                             step_size=STEP)
    want = values * STEP
    np.testing.assert_allclose(np.asarray(grid.occs), want, rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(grid.mask), want > min(0.01, want.mean()))
    assert int(info["nan_density"]) == 0
    # second warm-up update with lower density: EMA max(0.95 * old, new) on every cell
    grid2, _ = update_grid(grid, jax.random.PRNGKey(1), cell_constant(values * 0.5), 255,
                           step_size=STEP)
    np.testing.assert_allclose(np.asarray(grid2.occs), np.maximum(0.95 * want, 0.5 * want),
                               rtol=1e-6)


def test_after_warmup_only_chosen_cells_decay_and_all_few_occupied_are_chosen():
    values = np.zeros((R, R, R))
    occupied_cells = [(1, 2, 3), (4, 4, 4), (7, 0, 5)]
    for c in occupied_cells:
        values[c] = 3.0
    grid, _ = update_grid(init_grid(R, RADIUS), jax.random.PRNGKey(0), cell_constant(values), 0,
                          step_size=STEP)
    before = np.asarray(grid.occs)
    update = jax.jit(lambda g, k, s: update_grid(g, k, cell_constant(np.zeros((R, R, R))), s,
                                                 step_size=STEP)[0])
    after = np.asarray(update(grid, jax.random.PRNGKey(5), 300).occs)
    changed = after != before
    # fewer occupied cells than R^3/4: every one of them is chosen and decays once
    for c in occupied_cells:
        np.testing.assert_allclose(after[c], 0.95 * before[c], rtol=1e-6)
    # cells never decay unless chosen: at most R^3/4 uniform + 3 occupied cells changed
    assert changed.sum() <= R**3 // 4 + len(occupied_cells)
    np.testing.assert_allclose(after[changed], 0.95 * before[changed], rtol=1e-6)


def test_many_occupied_cells_are_sampled_with_replacement():
    values = np.full((R, R, R), 2.0)
    grid, _ = update_grid(init_grid(R, RADIUS), jax.random.PRNGKey(0), cell_constant(values), 0,
                          step_size=STEP)
    after = update_grid(grid, jax.random.PRNGKey(2), cell_constant(np.zeros((R, R, R))), 400,
                        step_size=STEP)[0]
    changed = np.asarray(after.occs) != np.asarray(grid.occs)
    # R^3/4 uniform plus R^3/4 occupied draws, with repeats: between R^3/4 and R^3/2 cells
    assert R**3 // 4 < changed.sum() <= R**3 // 2


def test_no_occupied_cell_and_nan_density():
    empty = init_grid(R, RADIUS).replace(mask=jnp.zeros((R, R, R), bool))
    grid, info = update_grid(empty, jax.random.PRNGKey(0), lambda x: jnp.zeros(x.shape[0]), 1000,
                             step_size=STEP)
    assert not bool(grid.mask.any()) and np.all(np.isfinite(np.asarray(grid.occs)))
    grid, info = update_grid(init_grid(R, RADIUS), jax.random.PRNGKey(0),
                             lambda x: jnp.where(x[:, 0] > 0, jnp.nan, 1.0), 0, step_size=STEP)
    assert int(info["nan_density"]) == R**3 // 2
    assert np.all(np.isfinite(np.asarray(grid.occs)))
    assert not bool(grid.mask[R // 2:].any()) and bool(grid.mask[: R // 2].all())


def test_cell_index_and_state_round_trip():
    grid = init_grid(R, RADIUS)
    pts = jnp.array([[-2.0, -2.0, -2.0], [1.99, 1.99, 1.99], [-0.1, 0.1, 0.6], [5.0, 0.0, 0.0]])
    # independent: cell size 0.5, index = floor((x + 2) / 0.5) clamped
    ijk = np.clip(np.floor((np.asarray(pts) + 2.0) / 0.5), 0, R - 1).astype(int)
    np.testing.assert_array_equal(np.asarray(cell_index(grid, pts)),
                                  (ijk[:, 0] * R + ijk[:, 1]) * R + ijk[:, 2])
    restored = flax.serialization.from_bytes(grid, flax.serialization.to_bytes(
        grid.replace(occs=grid.occs + 0.25)))
    np.testing.assert_allclose(np.asarray(restored.occs), 0.25)
    assert len(jax.tree_util.tree_leaves(grid)) == 2
