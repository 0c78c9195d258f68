"""Occupancy grid over the bounding box: which cells may hold density (docs/method.md §2.3).

One level of R^3 cells over [-radius, radius]^3. The state is a pytree that lives in the training
state and is checkpointed. The update follows nerfacc 0.5 (`OccGridEstimator._update`), which the
release uses: during warm-up every cell is evaluated, afterwards R^3/4 cells drawn uniformly plus
R^3/4 drawn from the occupied ones (all occupied ones when there are fewer). Each chosen cell gets
`occ = density(random point in the cell) * step_size` and `occs = max(occs * decay, occ)`; the
decay touches only the chosen cells. A cell is occupied when `occs > min(threshold, mean(occs))`.
"""
import flax
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class OccupancyGrid:
    """occs [R,R,R] float32 (EMA of density * step), mask [R,R,R] bool; radius is static."""

    occs: jax.Array
    mask: jax.Array
    radius: float = flax.struct.field(pytree_node=False, default=2.0)

    @property
    def resolution(self):
        return self.occs.shape[0]


def init_grid(resolution=32, radius=2.0):
    """A grid that knows nothing yet: every cell occupied, EMA values zero.

    nerfacc starts empty and relies on an update at step 0; starting full instead makes a render
    before the first update correct (dense) rather than blank.
    """
    shape = (resolution,) * 3
    return OccupancyGrid(jnp.zeros(shape, jnp.float32), jnp.ones(shape, bool), float(radius))


def cell_index(grid, points):
    """points [N,3] -> flat cell index [N] int32 (points outside the box are clamped)."""
    res = grid.resolution
    ijk = jnp.floor((points + grid.radius) / (2.0 * grid.radius) * res).astype(jnp.int32)
    ijk = jnp.clip(ijk, 0, res - 1)
    return (ijk[..., 0] * res + ijk[..., 1]) * res + ijk[..., 2]


def _cell_coords(cells, res):
    return jnp.stack([cells // (res * res), (cells // res) % res, cells % res], -1)


def _chosen_cells(key, mask_flat):
    """R^3/4 uniform cells and R^3/4 occupied ones (with replacement), as nerfacc samples them.

    Returns cells [R^3/2] int32 and valid [R^3/2] bool: when fewer than R^3/4 cells are occupied,
    all of them are taken once and the remaining slots are invalid (also when none is occupied).
    """
    total = mask_flat.shape[0]
    n = total // 4
    k_uniform, k_occupied = jax.random.split(key)
    uniform = jax.random.randint(k_uniform, (n,), 0, total)
    count = jnp.sum(mask_flat)
    occupied = jnp.nonzero(mask_flat, size=total, fill_value=0)[0]
    drawn = jax.random.randint(k_occupied, (n,), 0, jnp.maximum(count, 1))
    pick = jnp.where(count > n, drawn, jnp.arange(n))
    cells = jnp.concatenate([uniform, occupied[pick]])
    valid = jnp.concatenate([jnp.ones(n, bool), pick < count])
    return cells.astype(jnp.int32), valid


def update_grid(grid, key, density_fn, step, *, step_size, warmup_steps=256, decay=0.95,
                threshold=0.01):
    """One grid update (the caller calls it every 16 steps). `step` may be traced.

    density_fn: points [N,3] -> density [N]. Returns (new grid, info) where info holds
    `nan_density` (int32: NaN densities met, treated as 0) and `occupied_fraction`.
    """
    res = grid.resolution
    total = res**3
    k_cells, k_points = jax.random.split(key)

    def evaluate(cells, valid):
        coords = _cell_coords(cells, res).astype(jnp.float32)
        u = jax.random.uniform(k_points, coords.shape)
        x = (coords + u) / res * (2.0 * grid.radius) - grid.radius
        density = jax.lax.stop_gradient(density_fn(x))
        nan = jnp.isnan(density)
        occ = jnp.where(nan, 0.0, density) * step_size
        occ_max = jnp.full(total, -jnp.inf).at[cells].max(jnp.where(valid, occ, -jnp.inf))
        chosen = occ_max > -jnp.inf
        flat = grid.occs.reshape(-1)
        new = jnp.where(chosen, jnp.maximum(flat * decay, occ_max), flat)
        return new, jnp.sum(nan & valid).astype(jnp.int32)

    def all_cells():
        return evaluate(jnp.arange(total, dtype=jnp.int32), jnp.ones(total, bool))

    def some_cells():
        return evaluate(*_chosen_cells(k_cells, grid.mask.reshape(-1)))

    occs, nan_count = jax.lax.cond(step < warmup_steps, all_cells, some_cells)
    mask = occs > jnp.minimum(threshold, jnp.mean(occs))
    new_grid = grid.replace(occs=occs.reshape(grid.occs.shape), mask=mask.reshape(grid.mask.shape))
    return new_grid, dict(nan_density=nan_count, occupied_fraction=jnp.mean(mask))
