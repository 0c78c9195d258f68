"""Occupancy-grid ray marching into a fixed-size sample buffer, fair to every ray (docs/method.md §2.3).

Every ray marches with a fixed step dt from t = near (0, plus a uniform jitter in [0, dt) per ray
in training). Step k covers [near + k dt, near + (k+1) dt]; it is a candidate when its midpoint
lies inside the box and in an occupied cell (nerfacc's `traverse_grids`). Candidates whose
transmittance is below `early_stop_eps` or whose alpha is below the grid's alpha threshold are
dropped (nerfacc's `render_visibility_from_density`, as `OccGridEstimator.sampling` calls it); the
survivors are the samples, compacted into `max_samples` slots so that the networks run on them only.

nerfacc has no cap; a fixed buffer does. Two rules keep a full buffer from stripping whole rays:
- Pruning evaluates the candidates in rounds of `max_candidates`. Each round gives every ray that
  is still open (not yet opaque, candidates left) its next candidates in march order, shared out
  fairly (below); a ray leaves once its transmittance falls under `early_stop_eps`.
- Whatever does not fit is cut from the far end of rays. Budgets are shared by a water level: with
  n_i wanted entries for ray i, every ray keeps its first min(n_i, c) entries for the largest c
  that fits, and the remainder of the budget gives one more entry to the first rays that want it.
  That is the first `budget` entries in the order "every ray's first, then every ray's second...".
What is cut is measured per ray: `resume_step` is the first step a ray did not get, and a cut ray
is `open_truncated` when its transmittance at the cut was still above OPAQUE_TRANSMITTANCE. A
render can continue from `resume_step` (nerf.render's complete renders do, for evaluation).
"""
import dataclasses
import math

import flax
import jax
import jax.numpy as jnp

from nerf.occupancy import cell_index

# A ray cut where less than 1% of the light still passes was rendered as good as completely.
OPAQUE_TRANSMITTANCE = 0.01


@dataclasses.dataclass(frozen=True)
class MarchConfig:
    """Static marching settings (configs/base.py's `render` block; the release: step
    1.732 * 2 * radius / 512, alpha threshold 0.01).

    max_samples: sample slots of one render (the networks run on every slot). max_candidates:
    candidates whose density one pruning round evaluates; max_rounds: pruning rounds at most.
    """

    radius: float
    num_steps_per_diagonal: int
    max_samples: int
    max_candidates: int
    max_rounds: int
    alpha_threshold: float
    early_stop_eps: float = 1e-4

    @property
    def step_size(self):
        return 1.732 * 2.0 * self.radius / self.num_steps_per_diagonal

    @property
    def steps_per_ray(self):
        """Most steps whose midpoint can fall inside the box (its diagonal), plus slack."""
        return int(math.ceil(2.0 * math.sqrt(3.0) * self.radius / self.step_size)) + 2

    @property
    def prunes(self):
        return self.alpha_threshold > 0.0 or self.early_stop_eps > 0.0


@flax.struct.dataclass
class Samples:
    """Kept samples, ray-major and ordered along each ray. S = max_samples slots, N rays.

    ray_index [S] int32 (num_rays in unused slots), step_index [S] int32 (column of the sample in
    the ray's march, < steps_per_ray), t_mid [S] (distance along the ray), valid [S] bool.
    resume_step [N] int32: the first step a ray did not get (steps_per_ray when it is complete);
    truncated [N] bool: resume_step < steps_per_ray; open_truncated [N] bool: truncated while the
    transmittance at the cut exceeded OPAQUE_TRANSMITTANCE.
    num_candidates: candidates evaluated; num_kept: samples before the buffer's cut; dropped:
    samples cut (candidates never evaluated are not counted); rounds: pruning rounds run;
    nan_density: NaN densities met while pruning (treated as 0).
    """

    ray_index: jax.Array
    step_index: jax.Array
    t_mid: jax.Array
    valid: jax.Array
    resume_step: jax.Array
    truncated: jax.Array
    open_truncated: jax.Array
    num_candidates: jax.Array
    num_kept: jax.Array
    dropped: jax.Array
    rounds: jax.Array
    nan_density: jax.Array


def ray_box_interval(origins, directions, radius):
    """Entry and exit distances of rays [N,3] through [-radius, radius]^3 and a hit mask [N].

    Rays with a zero or non-finite direction or origin never hit.
    """
    usable = jnp.all(jnp.isfinite(origins), -1) & jnp.all(jnp.isfinite(directions), -1)
    usable &= jnp.sum(directions**2, -1) > 1e-20
    d = jnp.where(usable[:, None], directions, 1.0)
    o = jnp.where(usable[:, None], origins, 0.0)
    # Axis-parallel rays: a tiny same-signed component keeps the slab distances finite.
    d = jnp.where(jnp.abs(d) < 1e-12, jnp.where(d < 0, -1e-12, 1e-12), d)
    t0 = (-radius - o) / d
    t1 = (radius - o) / d
    t_enter = jnp.max(jnp.minimum(t0, t1), -1)
    t_exit = jnp.min(jnp.maximum(t0, t1), -1)
    return t_enter, t_exit, usable & (t_exit > t_enter)


def compact(mask, size):
    """Positions of the True entries of mask [M], in order, in `size` slots.

    Returns index [size] int32 (0 in unused slots), valid [size] bool, count (before truncation).
    """
    pos = jnp.cumsum(mask.astype(jnp.int32)) - 1
    count = pos[-1] + 1
    target = jnp.where(mask & (pos < size), pos, size)
    index = jnp.zeros(size, jnp.int32).at[target].set(
        jnp.arange(mask.shape[0], dtype=jnp.int32), mode="drop")
    return index, jnp.arange(size) < count, count


def fair_share(mask, budget):
    """The entries of mask [N,M] (per ray, in march order) that a budget of `budget` keeps.

    Water level: every row keeps its first min(n_i, c) entries for the largest c with
    sum_i min(n_i, c) <= budget; the rest of the budget gives entry c to the first rows that have
    one. Returns keep [N,M] bool (sum <= budget) and rank [N,M] int32 (entry's index in its row).
    """
    num_rows, m = mask.shape
    rank = jnp.cumsum(mask.astype(jnp.int32), axis=1) - 1
    counts = rank[:, -1] + 1
    rows_per_count = jnp.zeros(m + 1, jnp.int32).at[counts].add(1)
    longer_than = num_rows - jnp.cumsum(rows_per_count)[:m]  # [k]: rows with more than k entries
    fits = jnp.concatenate([jnp.zeros(1, jnp.int32), jnp.cumsum(longer_than)])  # sum min(n_i, c)
    level = jnp.sum(fits <= budget) - 1
    leftover = budget - fits[level]
    wants_more = counts > level
    extra = wants_more & (jnp.cumsum(wants_more.astype(jnp.int32)) <= leftover)
    keep = mask & ((rank < level) | ((rank == level) & extra[:, None]))
    return keep, rank


def transmittance(alpha, ray_index, step_index, num_rays, steps_per_ray):
    """Exclusive per-ray prod(1 - alpha) in front of each sample, exact per ray. All [S].

    Samples are scattered to a dense [num_rays, steps_per_ray] table so the product runs along
    each ray alone (no global prefix sum whose rounding would mix rays).
    """
    table = jnp.ones((num_rays, steps_per_ray), alpha.dtype)
    table = table.at[ray_index, step_index].set(1.0 - alpha, mode="drop")
    inclusive = jnp.cumprod(table, axis=1)
    exclusive = jnp.concatenate([jnp.ones_like(inclusive[:, :1]), inclusive[:, :-1]], axis=1)
    return exclusive.at[ray_index, step_index].get(mode="fill", fill_value=0.0)


def sample_points(origins, directions, samples):
    """Sample positions [S,3] and ray directions [S,3]; unused slots sit at the origin."""
    num_rays = origins.shape[0]
    ray = jnp.minimum(samples.ray_index, num_rays - 1)
    o = jnp.where(jnp.isfinite(origins), origins, 0.0)[ray]
    d = jnp.where(jnp.isfinite(directions), directions, 0.0)[ray]
    points = jnp.where(samples.valid[:, None], o + samples.t_mid[:, None] * d, 0.0)
    return points, d


def alpha_threshold(grid, march):
    """nerfacc lowers the threshold to mean(occs) for faint scenes; a grid that was never updated
    (all values zero) has no mean to give, so it keeps the configured threshold."""
    mean = jnp.mean(grid.occs)
    return jnp.where(mean > 0.0, jnp.minimum(march.alpha_threshold, mean), march.alpha_threshold)


def _prune(candidates, point_of, density_fn, trans0, thresh, march):
    """Rounds of density evaluation over the candidates [N,M] (see the module docstring).

    point_of(ray [C], column [C]) -> points [C,3]. Returns kept [N,M] bool, trans [N,M]
    (transmittance in front of each evaluated candidate, trans0 included), the per-ray
    transmittance after the evaluated candidates [N], the first unevaluated column [N] (M when
    none is left or the ray is opaque), candidates evaluated, NaN count and rounds run.
    """
    num_rays, m = candidates.shape
    column = jnp.arange(m, dtype=jnp.int32)
    dt = march.step_size

    # Per ray, not per step: a ray is open while it has candidates at or after pos and light left.
    last_candidate = jnp.max(jnp.where(candidates, column[None, :], -1), axis=1)

    def open_ray(pos, ray_trans):
        return (pos <= last_candidate) & (ray_trans >= march.early_stop_eps)

    def cond(carry):
        rounds, pos, ray_trans = carry[:3]
        return (rounds < march.max_rounds) & jnp.any(open_ray(pos, ray_trans))

    def body(carry):
        rounds, pos, ray_trans, kept, trans, evaluated, nan_count = carry
        left = candidates & (column[None, :] >= pos[:, None]) & open_ray(pos, ray_trans)[:, None]
        take, _ = fair_share(left, march.max_candidates)
        flat, valid, _ = compact(take.reshape(-1), march.max_candidates)
        ray = jnp.where(valid, flat // m, num_rays)
        col = flat % m
        density = jax.lax.stop_gradient(density_fn(point_of(jnp.minimum(ray, num_rays - 1), col)))
        nan = jnp.isnan(density) & valid
        alpha = 1.0 - jnp.exp(-jnp.where(valid & ~nan, density, 0.0) * dt)
        table = jnp.ones((num_rays, m)).at[ray, col].set(1.0 - alpha, mode="drop")
        inclusive = jnp.cumprod(table, axis=1)
        exclusive = jnp.concatenate([jnp.ones((num_rays, 1)), inclusive[:, :-1]], axis=1)
        in_front = ray_trans[:, None] * exclusive
        keep = take & (in_front >= march.early_stop_eps) & (1.0 - table >= thresh)
        last = jnp.max(jnp.where(take, column[None, :], -1), axis=1)
        return (rounds + 1, jnp.where(last >= 0, last + 1, pos), ray_trans * inclusive[:, -1],
                kept | keep, jnp.where(take, in_front, trans),
                evaluated + jnp.sum(valid, dtype=jnp.int32),
                nan_count + jnp.sum(nan, dtype=jnp.int32))

    zero = jnp.zeros((), jnp.int32)
    carry = (zero, jnp.zeros(num_rays, jnp.int32), trans0, jnp.zeros_like(candidates),
             jnp.ones((num_rays, m)), zero, zero)
    rounds, pos, ray_trans, kept, trans, evaluated, nan_count = jax.lax.while_loop(
        cond, body, carry)
    unfinished = open_ray(pos, ray_trans)
    return kept, trans, ray_trans, jnp.where(unfinished, pos, m), evaluated, nan_count, rounds


def sample_rays(key, origins, directions, grid, density_fn, march, start=None, trans0=None):
    """March rays [N,3] through the grid and keep the visible samples. Returns Samples.

    key: jitter of the march start (training); None for a deterministic march.
    density_fn: points [M,3] -> density [M], used without gradient for pruning; skipped when
    both thresholds are 0 (then every occupied-cell step is kept).
    start [N] int32: first step of each ray (a resumed march), default 0; trans0 [N]: the
    transmittance in front of it, default 1 (early termination counts it in).
    """
    num_rays = origins.shape[0]
    dt = march.step_size
    steps = march.steps_per_ray
    t_enter, t_exit, hit = ray_box_interval(origins, directions, march.radius)
    if key is None:
        near = jnp.zeros(num_rays)
    else:
        near = jax.random.uniform(key, (num_rays,)) * dt
    t_enter = jnp.maximum(t_enter, near)
    # First step whose midpoint is at or after the entry (nerfacc marches t_last up to it).
    k0 = jnp.maximum(jnp.ceil((t_enter - near) / dt - 0.5), 0.0)
    k0 = jnp.where(hit, k0, 0.0)
    safe_o = jnp.where(hit[:, None], origins, 0.0)
    safe_d = jnp.where(hit[:, None], directions, 0.0)

    def t_of(ray, col):
        return near[ray] + (k0[ray] + col.astype(jnp.float32) + 0.5) * dt

    def point_of(ray, col):
        return safe_o[ray] + t_of(ray, col)[..., None] * safe_d[ray]

    column = jnp.arange(steps, dtype=jnp.int32)
    rays = jnp.arange(num_rays)[:, None]
    candidates = hit[:, None] & (t_of(rays, column[None, :]) < t_exit[:, None])
    candidates &= grid.mask.reshape(-1)[cell_index(grid, point_of(rays, column[None, :]))]
    if start is not None:
        candidates &= column[None, :] >= start[:, None]
    trans0 = jnp.ones(num_rays) if trans0 is None else trans0

    if march.prunes:
        kept, trans, ray_trans, unevaluated, evaluated, nan_count, rounds = _prune(
            candidates, point_of, density_fn, trans0, alpha_threshold(grid, march), march)
    else:
        kept, trans, ray_trans = candidates, jnp.ones(candidates.shape), trans0
        unevaluated = jnp.full(num_rays, steps, jnp.int32)
        evaluated = nan_count = rounds = jnp.zeros((), jnp.int32)

    keep, _ = fair_share(kept, march.max_samples)
    cut = kept & ~keep
    first_cut = jnp.min(jnp.where(cut, column[None, :], steps), axis=1)
    resume = jnp.minimum(first_cut, unevaluated)
    cut_trans = jnp.where(first_cut < steps,
                          jnp.take_along_axis(trans, jnp.minimum(first_cut, steps - 1)[:, None],
                                              axis=1)[:, 0],
                          ray_trans)
    truncated = resume < steps

    flat, valid, _ = compact(keep.reshape(-1), march.max_samples)
    ray, col = flat // steps, flat % steps
    return Samples(
        ray_index=jnp.where(valid, ray, num_rays).astype(jnp.int32),
        step_index=jnp.where(valid, col, 0).astype(jnp.int32),
        t_mid=jnp.where(valid, t_of(ray, col), 0.0),
        valid=valid,
        resume_step=resume.astype(jnp.int32),
        truncated=truncated,
        open_truncated=truncated & (cut_trans > OPAQUE_TRANSMITTANCE),
        num_candidates=evaluated if march.prunes else jnp.sum(candidates, dtype=jnp.int32),
        num_kept=jnp.sum(kept, dtype=jnp.int32),
        dropped=jnp.sum(cut, dtype=jnp.int32),
        rounds=rounds,
        nan_density=nan_count,
    )
