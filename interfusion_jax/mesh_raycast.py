"""Jittable ray casting of triangle meshes and colour renders of a reference scene (pure JAX).

Made for renders inside a jitted training step: traced cameras, static shapes, no host work per
call. Hits are Moller-Trumbore ray-triangle tests, both sides of every face.

Acceleration, all with static shapes: faces are sorted by the Morton code of their centroids, so a
chunk of consecutive faces is compact and its bounding box tight; rays are sorted by the Morton code
of their closest approach to the mesh, so a chunk of consecutive rays is a compact bundle. Each ray
chunk slab-tests every face chunk's box once, then runs rounds (a `lax.while_loop`): a round tests
the _VISIT nearest boxes that some ray of the bundle enters before its nearest hit so far, and the
rounds stop when no such box is left. Most face chunks are never tested.
"""

import jax
import jax.numpy as jnp

PARTS = {"object": 0, "human": 1}
_RAY_CHUNK = 32
_FACE_CHUNK = 64
_VISIT = 8  # face chunks tested per round
_MORTON_BITS = 10
_DET_EPS = 1e-12


def _spread_bits(x):
    """uint32 [...] of 10-bit integers -> their bits moved to every third position."""
    x = (x | (x << 16)) & 0x030000FF
    x = (x | (x << 8)) & 0x0300F00F
    x = (x | (x << 4)) & 0x030C30C3
    return (x | (x << 2)) & 0x09249249


def _morton(points, lo, hi):
    """points [P, 3] -> uint32 [P] Morton codes over the box [lo, hi] (points outside clamped)."""
    scale = (1 << _MORTON_BITS) - 1
    unit = jnp.clip((points - lo) / jnp.maximum(hi - lo, 1e-9), 0.0, 1.0)
    q = jnp.round(unit * scale).astype(jnp.uint32)
    return (_spread_bits(q[:, 0]) << 2) | (_spread_bits(q[:, 1]) << 1) | _spread_bits(q[:, 2])


def _pad(x, multiple, value):
    """Pad axis 0 of x up to a multiple of `multiple` with `value`."""
    extra = -x.shape[0] % multiple
    return jnp.concatenate([x, jnp.full((extra,) + x.shape[1:], value, x.dtype)]) if extra else x


def _hits(tri, origins, directions):
    """Moller-Trumbore, both sides: tri [3, 3, Fc] (corner, axis, face) as planes of coordinates,
    origins / directions [Rc, 3] -> t [Rc, Fc] (inf where the ray misses the face or t <= 0)."""
    ox, oy, oz = (origins[:, k, None] for k in range(3))
    dx, dy, dz = (directions[:, k, None] for k in range(3))
    (ax, ay, az), (bx, by, bz), (cx, cy, cz) = tri
    e1x, e1y, e1z = bx - ax, by - ay, bz - az
    e2x, e2y, e2z = cx - ax, cy - ay, cz - az
    px, py, pz = dy * e2z - dz * e2y, dz * e2x - dx * e2z, dx * e2y - dy * e2x
    det = e1x * px + e1y * py + e1z * pz
    ok = jnp.abs(det) > _DET_EPS
    inv = 1.0 / jnp.where(ok, det, 1.0)
    sx, sy, sz = ox - ax, oy - ay, oz - az
    u = (sx * px + sy * py + sz * pz) * inv
    qx, qy, qz = sy * e1z - sz * e1y, sz * e1x - sx * e1z, sx * e1y - sy * e1x
    v = (dx * qx + dy * qy + dz * qz) * inv
    t = (e2x * qx + e2y * qy + e2z * qz) * inv
    hit = ok & (u >= 0.0) & (v >= 0.0) & (u + v <= 1.0) & (t > 0.0)
    return jnp.where(hit, t, jnp.inf)


def _slabs(origins, inv_dir, lo, hi):
    """Ray-box slab test: origins, inv_dir [R, 3]; boxes lo, hi [C, 3] -> (enter [R, C], hit)."""
    t0 = (lo[None] - origins[:, None]) * inv_dir[:, None]
    t1 = (hi[None] - origins[:, None]) * inv_dir[:, None]
    enter = jnp.maximum(jnp.max(jnp.minimum(t0, t1), -1), 0.0)
    leave = jnp.min(jnp.maximum(t0, t1), -1)
    return enter, enter <= leave


def _cast_chunk(tri_chunks, face_ids, lo, hi, origins, directions):
    """Nearest hits of one ray chunk: origins / directions [Rc, 3] against the face chunks
    tri_chunks [C, 3, 3, Fc] (faces face_ids [C, Fc]) with boxes lo, hi [C, 3] -> (t [Rc], face
    [Rc]). Each round tests the _VISIT nearest boxes still needed, a box being needed while some
    ray enters it before its nearest hit so far; rounds end when none is."""
    # A tiny stand-in for zero components keeps 0 * inf (NaN) out of the slab test.
    inv_dir = 1.0 / jnp.where(directions == 0.0, 1e-30, directions)
    enter, box_hit = _slabs(origins, inv_dir, lo, hi)
    box_hit = box_hit & jnp.all(lo <= hi, axis=-1)  # chunks of masked faces have empty boxes
    enter = jnp.where(box_hit, enter, jnp.inf)  # [Rc, C]
    first = jnp.min(enter, axis=0)  # [C]: where the bundle first enters each box
    visit = min(_VISIT, lo.shape[0])

    def needed(t, done):
        return jnp.any(enter < t[:, None], axis=0) & ~done

    def step(state):
        t, face, done, need = state
        _, pick = jax.lax.top_k(-jnp.where(need, first, jnp.inf), visit)
        tri = jnp.transpose(tri_chunks[pick], (1, 2, 0, 3)).reshape(3, 3, -1)
        tc = _hits(tri, origins, directions)  # [Rc, visit * Fc]
        j = jnp.argmin(tc, axis=1)
        tj = jnp.take_along_axis(tc, j[:, None], 1)[:, 0]
        closer = tj < t
        t = jnp.where(closer, tj, t)
        face = jnp.where(closer, face_ids[pick].reshape(-1)[j], face)
        done = done.at[pick].set(True)
        return t, face, done, needed(t, done)

    n = origins.shape[0]
    t = jnp.full((n,), jnp.inf, jnp.float32)
    done = jnp.zeros(first.shape, bool)
    state = (t, jnp.full((n,), -1, jnp.int32), done, needed(t, done))
    t, face, _, _ = jax.lax.while_loop(lambda s: jnp.any(s[3]), step, state)
    return t, face


def raycast(vertices, faces, origins, directions, face_mask=None, ray_batch=None):
    """Nearest hits of rays on a triangle mesh (jittable; both sides of every face are hit).

    vertices [V, 3] float; faces [F, 3] int; origins, directions [N, 3] (directions unit, so t is
    a distance); face_mask [F] bool, the faces that can be hit (None = all). ray_batch (static):
    ray chunks cast side by side (vmapped: each round then runs until the slowest chunk of the
    batch is done); None = one at a time on CPU, where rounds are cheap and skipped work is
    saved, and all at once elsewhere, where each sequential round costs kernel launches.
    Measured, 4 views of 64 x 64 rays on a 20k-face mesh: 1.3-1.6 ms all at once, 29-48 ms one at
    a time on an H100. Returns (t [N] float32, nearest hit distance, inf on a miss; face [N]
    int32, -1 on a miss). No gradients flow through it.
    """
    vertices = jax.lax.stop_gradient(jnp.asarray(vertices, jnp.float32))
    origins = jax.lax.stop_gradient(jnp.asarray(origins, jnp.float32))
    directions = jax.lax.stop_gradient(jnp.asarray(directions, jnp.float32))
    faces = jnp.asarray(faces, jnp.int32)
    n, f = origins.shape[0], faces.shape[0]
    mask = jnp.ones((f,), bool) if face_mask is None else jnp.asarray(face_mask, bool)

    tri = vertices[faces]  # [F, 3, 3]
    centroid = tri.mean(axis=1)
    lo = jnp.min(jnp.where(mask[:, None], centroid, jnp.inf), axis=0)
    hi = jnp.max(jnp.where(mask[:, None], centroid, -jnp.inf), axis=0)
    # Masked faces sort last, so the visible ones fill the fewest chunks.
    code = jnp.where(mask, _morton(centroid, lo, hi), jnp.uint32(0xFFFFFFFF))
    face_order = _pad(jnp.argsort(code).astype(jnp.int32), _FACE_CHUNK, -1)
    valid = face_order >= 0
    valid = valid & mask[jnp.maximum(face_order, 0)]
    tri = jnp.where(valid[:, None, None], tri[jnp.maximum(face_order, 0)], 0.0)
    face_ids = jnp.where(valid, face_order, -1).reshape(-1, _FACE_CHUNK)
    chunks = tri.reshape(-1, _FACE_CHUNK, 3, 3)
    chunk_valid = valid.reshape(-1, _FACE_CHUNK, 1, 1)
    box_lo = jnp.min(jnp.where(chunk_valid, chunks, jnp.inf), axis=(1, 2))  # [C, 3]; empty: inf
    box_hi = jnp.max(jnp.where(chunk_valid, chunks, -jnp.inf), axis=(1, 2))
    # Grown a little so that rounding in the slab test never culls a hit on a box face.
    grow = 1e-5 * (1.0 + jnp.max(jnp.maximum(jnp.abs(lo), jnp.abs(hi))))
    box_lo, box_hi = box_lo - grow, box_hi + grow
    # Degenerate (padding) faces never pass the determinant test, so they need no mask here.
    tri_chunks = jnp.transpose(chunks, (0, 2, 3, 1))  # [C, 3, 3, Fc]

    # Rays ordered by the point where they pass closest to the centre of the visible faces.
    centre = 0.5 * (lo + hi)
    along = jnp.sum((centre - origins) * directions, axis=-1, keepdims=True)
    closest = origins + jnp.maximum(along, 0.0) * directions
    ray_order = jnp.argsort(_morton(closest, lo - (hi - lo), hi + (hi - lo)))
    n_chunks = -(-n // _RAY_CHUNK)
    if ray_batch is None:
        ray_batch = 1 if jax.default_backend() == "cpu" else n_chunks
    ray_batch = min(ray_batch, n_chunks)
    ray_order = _pad(ray_order.astype(jnp.int32), _RAY_CHUNK * ray_batch, 0)
    o = origins[ray_order].reshape(-1, _RAY_CHUNK, 3)
    d = directions[ray_order].reshape(-1, _RAY_CHUNK, 3)

    def cast(od):
        return _cast_chunk(tri_chunks, face_ids, box_lo, box_hi, od[0], od[1])

    t, face = jax.lax.map(cast, (o, d), batch_size=ray_batch if ray_batch > 1 else None)
    back = jnp.zeros((n,), jnp.int32).at[ray_order[:n]].set(jnp.arange(n, dtype=jnp.int32))
    return t.reshape(-1)[back], face.reshape(-1)[back]


def render_reference(scene, origins, directions, shade_fns, background):
    """Colour render of a ReferenceScene (interfusion_jax.reference_scene) by ray casting (jittable).

    scene: ReferenceScene of arrays; origins, directions [N, 3] (unit directions); shade_fns
    (static keys): the visible parts, some of "object" and "human", each with its
    shade_fn(albedo [N, 3], normal [N, 3], points [N, 3]) -> rgb [N, 3] (each part is shaded as
    its own field's material draws it); background [N, 3].
    Returns dict rgb [N, 3] (shaded colour on a hit, background on a miss: rgb_fg + background
    (1 - opacity)), opacity [N] (1 on a hit, 0 on a miss), depth [N] (distance along the ray, 0
    on a miss) and normal [N, 3] (unit face normal facing the ray, 0 on a miss).
    """
    parts = tuple(shade_fns)
    unknown = [p for p in parts if p not in PARTS]
    if unknown or not parts:
        raise ValueError(f"render_reference: parts must name some of {list(PARTS)}, got {parts}")
    face_part = jnp.asarray(scene.face_part)
    mask = jnp.zeros(face_part.shape, bool)
    for name in parts:
        mask = mask | (face_part == PARTS[name])
    t, face = raycast(scene.vertices, scene.faces, origins, directions, mask)

    hit = jnp.isfinite(t)
    opacity = hit.astype(jnp.float32)
    face = jnp.maximum(face, 0)
    vertices = jnp.asarray(scene.vertices, jnp.float32)
    tri = vertices[jnp.asarray(scene.faces)[face]]  # [N, 3, 3]
    normal = jnp.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normal = normal / jnp.maximum(jnp.linalg.norm(normal, axis=-1, keepdims=True), 1e-20)
    facing = jnp.sum(normal * directions, axis=-1, keepdims=True) > 0
    normal = jnp.where(hit[:, None], jnp.where(facing, -normal, normal), 0.0)
    depth = jnp.where(hit, t, 0.0)
    points = origins + depth[:, None] * directions
    albedo = jnp.asarray(scene.face_colors, jnp.float32)[face]
    alpha = opacity[:, None]
    hit_part = face_part[face]
    shaded = jnp.zeros_like(albedo)
    for name, shade_fn in shade_fns.items():
        shaded = jnp.where((hit_part == PARTS[name])[:, None], shade_fn(albedo, normal, points),
                           shaded)
    rgb = shaded * alpha + background * (1.0 - alpha)
    return {"rgb": rgb, "opacity": opacity, "depth": depth, "normal": normal}
