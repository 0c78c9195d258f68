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
  fairly (below); a ray leaves once its transmittance falls under `early_stop_eps`. A complete
  render's march (max_rounds None) runs rounds until its kept samples fill the buffer: what
  would not fit is cut and evaluated again by the render's next pass, so evaluating it first
  only wastes work (a quadratic amount for rays through a faint fog).
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
    candidates whose density one pruning round evaluates; max_rounds: pruning rounds at most, or
    None: rounds until the kept samples fill max_samples or every ray is done (complete renders).
    """

    radius: float
    num_steps_per_diagonal: int
    max_samples: int
    max_candidates: int
    max_rounds: int | None
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


def fair_quota(counts, budget, most):
    """How many of its entries each row keeps of a budget shared by a water level.

    counts [N] int32 (each <= most, static) -> quota [N] int32, sum(quota) <= budget: every row
    keeps min(n_i, c) for the largest c with sum_i min(n_i, c) <= budget, and the rest of the
    budget gives one more to the first rows that have more than c.
    """
    num_rows = counts.shape[0]
    rows_per_count = jnp.zeros(most + 1, jnp.int32).at[counts].add(1)
    longer_than = num_rows - jnp.cumsum(rows_per_count)[:most]  # [k]: rows with more than k
    fits = jnp.concatenate([jnp.zeros(1, jnp.int32), jnp.cumsum(longer_than)])  # sum min(n_i, c)
    level = jnp.sum(fits <= budget) - 1
    wants_more = counts > level
    extra = wants_more & (jnp.cumsum(wants_more.astype(jnp.int32)) <= budget - fits[level])
    return jnp.minimum(counts, level) + extra.astype(jnp.int32)


# A table of N rays x M steps is read whole when it is small, as in a training render (4096 x
# 514), and searched by ray when it is large, as in an evaluation chunk (2^18 rays): a search
# loops over log2 steps, and each loop iteration costs microseconds of launches, which a training
# step pays a thousand times; a pass over a large table costs its bandwidth, per pruning round.
DENSE_TABLE = 2**22


def _slots(mask, running, skip, quota, size):
    """The entries skip_i + 1 ... skip_i + quota_i of each row of mask [N,M] (running: its cumsum
    along rows), ray-major and in column order, in `size` slots.

    Returns ray [size] int32 (N in unused slots), column [size] int32, valid [size] bool and
    last [N] int32 (each row's last slot; -1 when it has none).
    """
    num_rows, m = mask.shape
    end = jnp.cumsum(quota)
    start = end - quota
    slot = jnp.arange(size, dtype=jnp.int32)
    valid = slot < end[-1]
    last = jnp.where(quota > 0, end - 1, -1)
    if num_rows * m <= DENSE_TABLE:
        rank = running - skip[:, None]
        taken = mask & (rank >= 1) & (rank <= quota[:, None])
        target = jnp.where(taken, start[:, None] + rank - 1, size).reshape(-1)
        flat = jnp.zeros(size, jnp.int32).at[target].set(
            jnp.arange(num_rows * m, dtype=jnp.int32), mode="drop")
        return jnp.where(valid, flat // m, num_rows), flat % m, valid, last
    # The last row starting at or before the slot: rows with an empty run share the next start.
    row = jnp.searchsorted(start, slot, side="right").astype(jnp.int32) - 1
    count = skip[row] + slot - start[row] + 1
    flat = running.reshape(-1)

    def halve(_, bounds):  # binary search for the first column whose running count >= count
        lo, hi = bounds
        mid = (lo + hi) // 2
        at_least = flat[row * m + jnp.minimum(mid, m - 1)] >= count
        searching = lo < hi
        return (jnp.where(searching & ~at_least, mid + 1, lo),
                jnp.where(searching & at_least, mid, hi))

    column, _ = jax.lax.fori_loop(0, m.bit_length(), halve,
                                  (jnp.zeros_like(count), jnp.full_like(count, m)))
    return jnp.where(valid, row, num_rows), column, valid, last


def _shift(x, distance, fill):
    """x [S] moved `distance` (traced) places towards the end, `fill` in front."""
    padded = jnp.concatenate([jnp.full_like(x, fill), x])
    return jax.lax.dynamic_slice(padded, (x.shape[0] - distance,), x.shape)


def _run_products(values, ray, column, num_rays, m):
    """Inclusive and exclusive products of values [S] along each ray's slots (ray-major, in
    column order): per ray alone, so no product mixes rays. Slots with ray == num_rays get 1."""
    if num_rays * m <= DENSE_TABLE:
        table = jnp.ones((num_rays, m), values.dtype).at[ray, column].set(values, mode="drop")
        inclusive = jnp.cumprod(table, axis=1)
        exclusive = jnp.concatenate([jnp.ones_like(inclusive[:, :1]), inclusive[:, :-1]], axis=1)
        return tuple(t.at[ray, column].get(mode="fill", fill_value=1.0)
                     for t in (inclusive, exclusive))
    # A segmented scan by Hillis-Steele doubling in a fori_loop (lax.associative_scan unrolls
    # every level, which tripled the evaluation renderer's compile time).
    first = jnp.concatenate([jnp.ones(1, bool), ray[1:] != ray[:-1]])

    def double(k, carry):
        # A slot's run starts in its window when it already had a start there: the slots in front
        # of the first one count as a start, as slot 0 always is one.
        starts, inclusive = carry
        distance = jnp.left_shift(1, k)
        before = _shift(inclusive, distance, 1.0)
        return (starts | _shift(starts, distance, True),
                jnp.where(starts, inclusive, before * inclusive))

    steps = max(1, (values.shape[0] - 1).bit_length())
    _, inclusive = jax.lax.fori_loop(0, steps, double, (first, values))
    shifted = jnp.concatenate([jnp.ones(1, values.dtype), inclusive[:-1]])
    return inclusive, jnp.where(first, 1.0, shifted)


def transmittance(alpha, ray_index, step_index, num_rays, steps_per_ray):
    """Exclusive per-ray prod(1 - alpha) in front of each sample [S] (samples ray-major, in march
    order)."""
    return _run_products(1.0 - alpha, ray_index, step_index, num_rays, steps_per_ray)[1]


def _first_column(running, count):
    """Per row, the first column whose running count [N,M] reaches count [N] (M if none)."""
    return jnp.sum(running < count[:, None], axis=1, dtype=jnp.int32)


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
    # Each round takes every open ray's next candidates: with the rows' running counts a round
    # finds them by binary search, without a pass over the [N,M] table.
    running = jnp.cumsum(candidates, axis=1, dtype=jnp.int32)
    total = running[:, -1]

    # Per ray, not per step: a ray is open while it has candidates at or after pos and light left.
    last_candidate = jnp.max(jnp.where(candidates, column[None, :], -1), axis=1)

    def open_ray(pos, ray_trans):
        return (pos <= last_candidate) & (ray_trans >= march.early_stop_eps)

    def cond(carry):
        rounds, pos, ray_trans, *_, num_kept = carry
        more = (num_kept < march.max_samples if march.max_rounds is None
                else rounds < march.max_rounds)
        return more & jnp.any(open_ray(pos, ray_trans))

    def body(carry):
        rounds, pos, ray_trans, kept, trans, evaluated, nan_count, num_kept = carry
        before = jnp.where(pos > 0, jnp.take_along_axis(
            running, jnp.clip(pos - 1, 0, m - 1)[:, None], axis=1)[:, 0], 0)
        quota = fair_quota(jnp.where(open_ray(pos, ray_trans), total - before, 0),
                           march.max_candidates, m)
        ray, col, valid, last = _slots(candidates, running, before, quota,
                                       march.max_candidates)
        ray_c = jnp.minimum(ray, num_rays - 1)
        density = jax.lax.stop_gradient(density_fn(point_of(ray_c, col)))
        nan = jnp.isnan(density) & valid
        alpha = 1.0 - jnp.exp(-jnp.where(valid & ~nan, density, 0.0) * dt)
        passes = 1.0 - alpha
        inclusive, exclusive = _run_products(passes, ray, col, num_rays, m)
        in_front = ray_trans[ray_c] * exclusive
        keep = valid & (in_front >= march.early_stop_eps) & (1.0 - passes >= thresh)
        taken = last >= 0
        last_c = jnp.maximum(last, 0)
        return (rounds + 1, jnp.where(taken, col[last_c] + 1, pos),
                jnp.where(taken, ray_trans * inclusive[last_c], ray_trans),
                kept.at[ray, col].set(keep, mode="drop"),
                trans.at[ray, col].set(in_front, mode="drop"),
                evaluated + jnp.sum(valid, dtype=jnp.int32),
                nan_count + jnp.sum(nan, dtype=jnp.int32),
                # Only a complete march's rounds stop on it; a capped march skips the sum.
                num_kept + (jnp.sum(keep, dtype=jnp.int32) if march.max_rounds is None else 0))

    zero = jnp.zeros((), jnp.int32)
    carry = (zero, jnp.zeros(num_rays, jnp.int32), trans0, jnp.zeros_like(candidates),
             jnp.ones((num_rays, m)), zero, zero, zero)
    rounds, pos, ray_trans, kept, trans, evaluated, nan_count, _ = jax.lax.while_loop(
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

    running = jnp.cumsum(kept, axis=1, dtype=jnp.int32)
    counts = running[:, -1]
    quota = fair_quota(counts, march.max_samples, steps)
    ray, col, valid, _ = _slots(kept, running, jnp.zeros_like(quota), quota, march.max_samples)
    every_ray = jnp.arange(num_rays, dtype=jnp.int32)
    first_cut = jnp.where(quota < counts, _first_column(running, quota + 1), steps)
    resume = jnp.minimum(first_cut, unevaluated)
    cut_trans = jnp.where(first_cut < steps, trans[every_ray, jnp.minimum(first_cut, steps - 1)],
                          ray_trans)
    truncated = resume < steps

    ray_c = jnp.minimum(ray, num_rays - 1)
    return Samples(
        ray_index=ray,
        step_index=jnp.where(valid, col, 0).astype(jnp.int32),
        t_mid=jnp.where(valid, t_of(ray_c, col), 0.0),
        valid=valid,
        resume_step=resume.astype(jnp.int32),
        truncated=truncated,
        open_truncated=truncated & (cut_trans > OPAQUE_TRANSMITTANCE),
        num_candidates=evaluated if march.prunes else jnp.sum(candidates, dtype=jnp.int32),
        num_kept=jnp.sum(counts),
        dropped=jnp.sum(counts - quota),
        rounds=rounds,
        nan_density=nan_count,
    )
