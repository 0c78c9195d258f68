"""Posed-body prior: inside/outside and distance to the guide body, on a grid, looked up in JAX.

The pose is fixed during the interaction stage, so instead of a learned occupancy network (the
release's COAP) the posed mesh's occupancy and unsigned distance are computed once on the nodes of a
regular grid over the scene box [-bound, bound]^3 and interpolated trilinearly at query time.

Build (`BodyPrior.build`):
- Distance: the surface is sampled densely (every triangle on a barycentric lattice of spacing
  <= cell/4). Nodes within two cells of the surface take the distance to their nearest sample (a
  KD-tree query limited to that band: an upper bound within cell/(4 sqrt 3) of the exact
  point-triangle distance). Far nodes, where a KD-tree query would be slow, take the distance to
  the nearest sample of their nearest band node (a closest-point transform via scipy's Euclidean
  distance transform): still the distance to a point of the surface, so an upper bound; it can
  overshoot near the medial axis. Measured query error, trilinear interpolation included, at points
  more than a cell from the surface: <= 0.47 cell on the tests' torus, boxes and posed body.
- Inside/outside: generalised winding numbers (|w| > 0.5; robust to the self-intersections of posed
  bodies and to either face orientation), computed exactly at the nodes within 0.65 cell of
  the surface samples. Nodes farther away are grouped into 6-connected components; two
  neighbouring far nodes are more than cell/2 from the surface, so the segment between them never crosses it and the
  winding number is constant on a component: three nodes of each component decide it by majority.
Query points outside the grid's box get occupancy 0 and the distance of the nearest box point plus
their distance to the box (an upper bound).
"""

import sys

import jax
import numpy as np
import jax.numpy as jnp
import scipy.ndimage
import scipy.spatial
from flax import struct
from tqdm.auto import tqdm

from ifcommon import cached_arrays, source_bytes

_SAMPLES_PER_CELL = 4
_POINT_CHUNK = 256
_FACE_CHUNK = 2048
_KD_CHUNK = 1 << 18
_BAND = 2.0  # cells around the surface where the KD-tree query is direct
# Nodes farther than this (in cells) from their nearest sample are > cell/2 from the surface,
# as samples are at most cell / (4 sqrt 3) = 0.144 cell from any surface point.
_NEAR = 0.65


def _surface_samples(vertices, faces, spacing):
    """Points on every triangle on a barycentric lattice whose edges are <= spacing: [S, 3]."""
    tri = vertices[faces]
    edge = np.max(np.linalg.norm(tri - np.roll(tri, 1, axis=1), axis=-1), axis=-1)
    steps = np.maximum(np.ceil(edge / spacing).astype(np.int64), 1)
    out = []
    for n in np.unique(steps):
        i, j = np.meshgrid(np.arange(n + 1), np.arange(n + 1), indexing="ij")
        keep = i + j <= n
        w = np.stack([i[keep], j[keep], n - i[keep] - j[keep]], -1) / n  # [L, 3]
        out.append(np.einsum("lk,fkd->fld", w, tri[steps == n]).reshape(-1, 3))
    return np.concatenate(out)


@jax.jit
def _winding_numbers(points, tri):
    """Generalised winding numbers of points [P, 3] w.r.t. triangles [F, 3, 3] (F a multiple of
    _FACE_CHUNK, padded with degenerate triangles): solid angles by Van Oosterom-Strackee. Written
    on coordinate planes (structure of arrays), which XLA runs ~3x faster than [..., 3] vectors."""
    blocks = jnp.transpose(tri.reshape(-1, _FACE_CHUNK, 3, 3), (0, 2, 3, 1))  # [nb, 3, 3, Fc]
    px, py, pz = (points[:, k, None] for k in range(3))

    def block(t):
        ax, ay, az = t[0, 0] - px, t[0, 1] - py, t[0, 2] - pz
        bx, by, bz = t[1, 0] - px, t[1, 1] - py, t[1, 2] - pz
        cx, cy, cz = t[2, 0] - px, t[2, 1] - py, t[2, 2] - pz
        la = jnp.sqrt(ax * ax + ay * ay + az * az)
        lb = jnp.sqrt(bx * bx + by * by + bz * bz)
        lc = jnp.sqrt(cx * cx + cy * cy + cz * cz)
        det = ax * (by * cz - bz * cy) + ay * (bz * cx - bx * cz) + az * (bx * cy - by * cx)
        denom = (
            la * lb * lc
            + (ax * bx + ay * by + az * bz) * lc
            + (bx * cx + by * cy + bz * cz) * la
            + (cx * ax + cy * ay + cz * az) * lb
        )
        return jnp.sum(jnp.arctan2(det, denom), axis=-1)

    return jnp.sum(jax.lax.map(block, blocks), axis=0) / (2 * jnp.pi)


def _inside(points, tri, desc):
    """Winding-number inside test for points [P, 3] (NumPy in, bool [P] out), chunked."""
    pad_f = -len(tri) % _FACE_CHUNK
    tri = jnp.asarray(np.concatenate([tri, np.zeros((pad_f, 3, 3))]), jnp.float32)
    out = []
    for lo in tqdm(range(0, len(points), _POINT_CHUNK), desc=desc, leave=False):
        chunk = points[lo : lo + _POINT_CHUNK]
        padded = np.concatenate([chunk, np.zeros((_POINT_CHUNK - len(chunk), 3))])
        w = np.asarray(_winding_numbers(jnp.asarray(padded, jnp.float32), tri))[: len(chunk)]
        out.append(np.abs(w) > 0.5)
    return np.concatenate(out) if out else np.zeros(0, bool)


def _build_grid(vertices, faces, bound, resolution):
    """[R, R, R, 2] occupancy and distance at the grid's nodes (module docstring)."""
    cell = 2.0 * bound / (resolution - 1)
    axis = np.linspace(-bound, bound, resolution)
    nodes = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)

    samples = _surface_samples(vertices, faces, cell / _SAMPLES_PER_CELL)
    tree = scipy.spatial.cKDTree(samples)
    nearest = np.empty(len(nodes), np.int64)
    for lo in tqdm(range(0, len(nodes), _KD_CHUNK), desc="body prior: distance", leave=False):
        _, nearest[lo : lo + _KD_CHUNK] = tree.query(
            nodes[lo : lo + _KD_CHUNK], workers=-1, distance_upper_bound=_BAND * cell
        )
    band = nearest < len(samples)
    if not band.any():
        raise ValueError(
            f"BodyPrior.build: the mesh (bounds {vertices.min(0)}, {vertices.max(0)}) "
            f"does not reach the grid's box [-{bound}, {bound}]^3"
        )
    _, src = scipy.ndimage.distance_transform_edt(
        ~band.reshape((resolution,) * 3), return_indices=True
    )
    src = np.ravel_multi_index(tuple(src.reshape(3, -1)), (resolution,) * 3)
    distance = np.linalg.norm(nodes - samples[nearest[src]], axis=-1)

    tri = vertices[faces]
    inside = np.zeros(len(nodes), bool)
    near = distance <= _NEAR * cell
    inside[near] = _inside(nodes[near], tri, "body prior: winding (near)")
    labels, count = scipy.ndimage.label(~near.reshape((resolution,) * 3))
    labels = labels.reshape(-1)
    far = np.nonzero(labels)[0]
    order = far[np.argsort(labels[far], kind="stable")]
    starts = np.searchsorted(labels[order], np.arange(1, count + 1))
    ends = np.append(starts[1:], len(order)) - 1
    reps = order[np.stack([starts, (starts + ends) // 2, ends], -1)]  # [count, 3]
    votes = _inside(nodes[reps.reshape(-1)], tri, "body prior: winding (far)").reshape(-1, 3)
    component_inside = np.concatenate([[False], votes.sum(-1) >= 2])
    inside[~near] = component_inside[labels[~near]]

    grid = np.stack([inside.astype(np.float32), distance.astype(np.float32)], -1)
    return grid.reshape((resolution,) * 3 + (2,))


@struct.dataclass
class BodyPrior:
    """grid: [R, R, R, 2] (occupancy in {0, 1}, unsigned distance) at the nodes of a regular grid
    over [-bound, bound]^3, axis order (x, y, z) of the scene frame."""

    grid: jnp.ndarray
    bound: float = struct.field(pytree_node=False)

    @property
    def resolution(self):
        return self.grid.shape[0]

    @property
    def cell(self):
        return 2.0 * self.bound / (self.resolution - 1)

    @classmethod
    def build(cls, vertices, faces, bound=2.0, resolution=128):
        """vertices [V, 3] (scene frame), faces [F, 3] of a closed mesh -> BodyPrior.

        Default 128^3 nodes over the scene box [-2, 2]^3: a cell of 3.1 cm.
        """
        vertices = np.asarray(vertices, np.float64)
        faces = np.asarray(faces, np.int64)
        if vertices.ndim != 2 or vertices.shape[1] != 3 or faces.ndim != 2 or faces.shape[1] != 3:
            raise ValueError(
                f"BodyPrior.build: expected vertices [V, 3] and faces [F, 3], got "
                f"{vertices.shape} and {faces.shape}"
            )
        if resolution < 2:
            raise ValueError(f"BodyPrior.build: resolution must be >= 2, got {resolution}")
        key = b"".join([vertices.tobytes(), faces.tobytes(), np.float64(bound).tobytes(),
                        np.int64(resolution).tobytes(), source_bytes(sys.modules[__name__])])
        grid = cached_arrays("body_prior", key, lambda: dict(
            grid=_build_grid(vertices, faces, bound, resolution)))["grid"]
        return cls(grid=jnp.asarray(grid), bound=float(bound))

    @property
    def occupancy(self):
        return self.grid[..., 0]

    @property
    def distance(self):
        return self.grid[..., 1]

    def query(self, points):
        """points [N, 3] (scene frame) -> (occupancy [N] in [0, 1], distance [N]); jit-friendly."""
        r = self.resolution
        clamped = jnp.clip(points, -self.bound, self.bound)
        x = (clamped + self.bound) / self.cell
        i0 = jnp.clip(jnp.floor(x), 0, r - 2).astype(jnp.int32)
        t = x - i0
        out = 0.0
        for corner in range(8):
            bits = jnp.array([(corner >> k) & 1 for k in range(3)], jnp.int32)
            idx = i0 + bits
            weight = jnp.prod(jnp.where(bits == 1, t, 1.0 - t), axis=-1, keepdims=True)
            out = out + weight * self.grid[idx[:, 0], idx[:, 1], idx[:, 2]]
        outside_box = jnp.linalg.norm(points - clamped, axis=-1)
        occupancy = jnp.where(outside_box > 0, 0.0, out[:, 0])
        return occupancy, out[:, 1] + outside_box
