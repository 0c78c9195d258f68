"""Multiresolution hash-grid encoding (Instant-NGP), following tiny-cuda-nn's `HashGrid` exactly.

Conventions (tcnn `grid.h`, which the release uses through threestudio):
- level l has scale s_l = 2^(l · log2(per_level_scale)) · base_resolution − 1 and resolution
  R_l = ceil(s_l) + 1 vertices per axis ("base_resolution" counts vertices, not cells);
- an input x ∈ [0,1]^3 sits at grid position x · s_l + 0.5 (the half-cell offset staggers levels);
- level l owns T_l = min(next_multiple_of_8(R_l^3), 2^log2_hashmap_size) table rows. A level is
  indexed densely (x + y R + z R^2) when R_l^3 ≤ T_l, else by the coherent prime hash
  x · 1 ⊕ y · 2654435761 ⊕ z · 805459861 (uint32 arithmetic); the index is taken modulo T_l.
  Dense indices can wrap because of the 0.5 offset, as in tcnn;
- trilinear interpolation of the 8 corners; the output is level-major: [N, L · F].
All levels live in one table [Σ T_l, F] with static row offsets, so the forward pass is a single
gather and its gradient a single scatter-add. Tables start uniform in ±1e-4 (tcnn's init).
"""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

PRIMES = (1, 2654435761, 805459861)


def level_layout(n_levels, log2_hashmap_size, base_resolution, per_level_scale):
    """Static per-level constants: (scale [L] f32, resolution [L], size [L], offset [L], hashed [L])."""
    log2_scale = np.float32(math.log2(per_level_scale))
    levels = np.arange(n_levels, dtype=np.float32)
    scale = (np.exp2(levels * log2_scale) * np.float32(base_resolution) - 1.0).astype(np.float32)
    resolution = np.ceil(scale).astype(np.int64) + 1
    dense_size = -(-resolution**3 // 8) * 8
    size = np.minimum(dense_size, 2**log2_hashmap_size)
    hashed = resolution**3 > size
    offset = np.concatenate([[0], np.cumsum(size)[:-1]])
    return scale, resolution, size, offset, hashed


def _corner_weights_and_rows(x, scale, resolution, size, offset, hashed):
    """x [N,3] in [0,1] -> trilinear weights [N,L,8] and table rows [N,L,8] (int32)."""
    pos = x[:, None, :] * jnp.asarray(scale)[None, :, None] + 0.5  # [N,L,3]
    cell = jnp.floor(pos)
    frac = pos - cell
    # (int) then (uint32) as in tcnn: negative cells wrap around in two's complement.
    cell = jax.lax.bitcast_convert_type(cell.astype(jnp.int32), jnp.uint32)
    corners = np.array([[(c >> d) & 1 for d in range(3)] for c in range(8)], np.uint32)  # [8,3]
    grid = cell[:, :, None, :] + jnp.asarray(corners)[None, None]  # [N,L,8,3]
    w = jnp.where(jnp.asarray(corners, bool)[None, None], frac[:, :, None, :],
                  1.0 - frac[:, :, None, :])
    weights = jnp.prod(w, axis=-1)

    res = jnp.asarray(resolution.astype(np.uint32))[None, :, None]
    dense = grid[..., 0] + grid[..., 1] * res + grid[..., 2] * (res * res)
    primes = [jnp.uint32(p) for p in PRIMES]
    hashed_idx = (grid[..., 0] * primes[0]) ^ (grid[..., 1] * primes[1]) ^ (grid[..., 2] * primes[2])
    idx = jnp.where(jnp.asarray(hashed)[None, :, None], hashed_idx, dense)
    idx = idx % jnp.asarray(size.astype(np.uint32))[None, :, None]
    rows = idx.astype(jnp.int32) + jnp.asarray(offset.astype(np.int32))[None, :, None]
    return weights, rows


def encode(table, x, n_levels, log2_hashmap_size=19, base_resolution=16,
           per_level_scale=1.4472692374403782):
    """Pure encoding: table [Σ T_l, F], x [N,3] in [0,1] -> [N, L·F] (level-major)."""
    layout = level_layout(n_levels, log2_hashmap_size, base_resolution, per_level_scale)
    weights, rows = _corner_weights_and_rows(x, *layout)
    # Rows are in range by construction; "clip" spares the out-of-bounds masking of the default.
    feats = jnp.take(table, rows, axis=0, mode="clip")  # [N,L,8,F]
    out = jnp.einsum("nlc,nlcf->nlf", weights.astype(table.dtype), feats)
    return out.reshape(x.shape[0], -1)


class HashGridEncoding(nn.Module):
    """Flax module around `encode`; parameter "table" [Σ T_l, n_features_per_level]."""
    n_levels: int = 16
    n_features_per_level: int = 2
    log2_hashmap_size: int = 19
    base_resolution: int = 16
    per_level_scale: float = 1.4472692374403782

    @nn.compact
    def __call__(self, x):
        """x [N,3] in [0,1]^3 -> [N, n_levels · n_features_per_level]."""
        _, _, size, _, _ = level_layout(self.n_levels, self.log2_hashmap_size,
                                        self.base_resolution, self.per_level_scale)
        table = self.param("table", _uniform_init(1e-4),
                           (int(size.sum()), self.n_features_per_level))
        return encode(table, x, self.n_levels, self.log2_hashmap_size, self.base_resolution,
                      self.per_level_scale)


def _uniform_init(bound):
    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)
    return init
