"""Software rasteriser for shaded images of triangle meshes (JAX; CPU or GPU, no OpenGL).

Frames and cameras: world points are in the body's frame (SMPL-X, y up). A camera maps a world point
p to camera coordinates c = R (p - eye); the camera looks along -z_c with +y_c up and +x_c to the
right (OpenGL convention), so depth = -z_c. Perspective with a vertical field of view: a point lands
at pixel column u = W/2 + f x_c / depth and row v = H/2 - f y_c / depth (row 0 at the top), with
f = (H/2) / tan(fov/2); pixel (row i, column j) has its centre at (i + 0.5, j + 0.5).

Rasterisation is a two-pass scatter-min z-buffer. Each triangle is tested against a fixed window of
K x K pixels at the corner of its projected bounding box (clipped to the image). On the host, faces
are grouped by the smallest K in (1, 2, 3, 4, 6, 8, 12, 16, 24, 32) that holds their box in every
view of the batch (static shapes per group); triangles larger than 32 pixels go to a brute-force path
that tests them against every pixel (a scan over those faces), so nothing is ever dropped, and faces
that cover no pixel centre in any view are skipped. Pass 1 scatter-mins the depths into a per-view buffer; pass 2 scatter-mins the face
index among the candidates at that depth (ties go to the lowest face index). A per-pixel pass then
computes perspective-correct barycentrics of the winning face and shades. Both sides of every face
are drawn. Faces with a vertex closer than `NEAR` to a camera are skipped in that view: the meshes
drawn here are always in front of their cameras.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

NEAR = 1e-3
_WINDOWS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32)  # window sizes (pixels); larger faces: brute force
_AMBIENT = 0.35
_DIFFUSE = 0.65
_GREY = 0.75


@struct.dataclass
class Cameras:
    """A batch of pinhole cameras.

    eye: [B, 3] camera centres (world). rotation: [B, 3, 3] world->camera rotation whose rows are the
    camera's right, up and backward axes in world coordinates. focal: [B] focal length in pixels.
    """

    eye: jnp.ndarray
    rotation: jnp.ndarray
    focal: jnp.ndarray
    height: int = struct.field(pytree_node=False)
    width: int = struct.field(pytree_node=False)

    @property
    def batch(self):
        return self.eye.shape[0]


def _normalize(v, eps=1e-12):
    return v / jnp.maximum(jnp.linalg.norm(v, axis=-1, keepdims=True), eps)


def look_at_cameras(eye, target, up=(0.0, 1.0, 0.0), fov_deg=60.0, size=224):
    """Cameras at `eye` [B, 3] looking at `target` [B, 3] (or [3]), `up` [3] in world.

    fov_deg: vertical field of view (scalar or [B]). size: int (square) or (height, width). When the
    viewing direction is parallel to `up`, the world axis least aligned with it serves as up instead.
    """
    eye = jnp.asarray(eye, jnp.float32)
    target = jnp.broadcast_to(jnp.asarray(target, jnp.float32), eye.shape)
    up = jnp.broadcast_to(jnp.asarray(up, jnp.float32), eye.shape)
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    forward = _normalize(target - eye)
    right = jnp.cross(forward, up)
    alt_up = jnp.eye(3, dtype=jnp.float32)[jnp.argmin(jnp.abs(forward), axis=-1)]
    degenerate = jnp.linalg.norm(right, axis=-1, keepdims=True) < 1e-6
    right = _normalize(jnp.where(degenerate, jnp.cross(forward, alt_up), right))
    true_up = jnp.cross(right, forward)
    rotation = jnp.stack([right, true_up, -forward], axis=-2)
    fov = jnp.broadcast_to(jnp.asarray(fov_deg, jnp.float32), eye.shape[:1])
    focal = 0.5 * height / jnp.tan(jnp.deg2rad(fov) / 2)
    return Cameras(eye=eye, rotation=rotation, focal=focal, height=height, width=width)


def orbit_cameras(
    azimuth_deg, elevation_deg, distance, fov_deg=60.0, size=224, target=(0.0, 0.0, 0.0)
):
    """Cameras on a sphere around `target` in the y-up body frame, looking at it with +y up.

    eye = target + distance (cos e sin a, sin e, cos e cos a): azimuth a turns about +y (right-handed),
    a = 0 puts the camera on +z, facing the front of a body that faces +z; a = 90 puts it on +x (the
    body's left side); elevation e > 0 looks down from above. azimuth_deg, elevation_deg: [B];
    distance and fov_deg: scalars or [B].
    """
    az = jnp.deg2rad(jnp.asarray(azimuth_deg, jnp.float32))
    el = jnp.deg2rad(jnp.asarray(elevation_deg, jnp.float32))
    az, el = jnp.broadcast_arrays(az, el)
    d = jnp.broadcast_to(jnp.asarray(distance, jnp.float32), az.shape)
    target = jnp.asarray(target, jnp.float32)
    offset = jnp.stack([jnp.cos(el) * jnp.sin(az), jnp.sin(el), jnp.cos(el) * jnp.cos(az)], -1)
    return look_at_cameras(target + d[:, None] * offset, target, (0.0, 1.0, 0.0), fov_deg, size)


def _project(vertices, eye, rotation, focal, height, width):
    """[V, 3] world -> [V, 3] (column u, row v, depth) for one camera."""
    c = (vertices - eye) @ rotation.T
    depth = -c[:, 2]
    safe = jnp.where(depth > NEAR, depth, 1.0)
    u = 0.5 * width + focal * c[:, 0] / safe
    v = 0.5 * height - focal * c[:, 1] / safe
    return jnp.stack([u, v, depth], axis=-1)


def _project_batch(vertices, cams):
    return jax.vmap(_project, in_axes=(0, 0, 0, 0, None, None))(
        vertices, cams.eye, cams.rotation, cams.focal, cams.height, cams.width
    )


def _edge_bary(tri, px, py):
    """Screen-space barycentrics of points (px, py) in triangles tri [..., 3, 3] (u, v, depth).

    Returns (bary [..., 3], area [...]); bary sums to 1 and is >= 0 inside, for either winding.
    """
    x0, y0 = tri[..., 0, 0], tri[..., 0, 1]
    x1, y1 = tri[..., 1, 0], tri[..., 1, 1]
    x2, y2 = tri[..., 2, 0], tri[..., 2, 1]
    area = (x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0)
    safe = jnp.where(area == 0, 1.0, area)
    b0 = ((x1 - px) * (y2 - py) - (y1 - py) * (x2 - px)) / safe
    b1 = ((x2 - px) * (y0 - py) - (y2 - py) * (x0 - px)) / safe
    return jnp.stack([b0, b1, 1.0 - b0 - b1], axis=-1), area


def _face_valid(tri):
    """Faces drawn in a view: all vertices in front of the near plane and a non-degenerate image."""
    _, area = _edge_bary(tri, 0.0, 0.0)
    return jnp.all(tri[..., 2] > NEAR, axis=-1) & (jnp.abs(area) > 1e-10)


def _depth_at(tri, bary):
    """Perspective-correct depth: 1/depth is linear in screen space."""
    return 1.0 / jnp.sum(bary / tri[..., 2], axis=-1)


_EDGE_EPS = 1e-6  # inclusive coverage test, so shared edges never open a crack


@jax.jit
def _face_spans(vertices, faces, cams):
    """[F] int: the largest number of pixel centres along x or y that any view's face box covers."""
    screen = _project_batch(vertices, cams)
    tri = screen[:, faces]
    lo = jnp.ceil(jnp.min(tri[..., :2], axis=-2) - 0.5)
    hi = jnp.floor(jnp.max(tri[..., :2], axis=-2) - 0.5)
    limit = jnp.array([cams.width - 1, cams.height - 1], jnp.float32)
    lo = jnp.clip(lo, 0, limit)
    hi = jnp.clip(hi, -1, limit)
    span = jnp.max(jnp.maximum(hi - lo + 1, 0), axis=-1)
    span = jnp.where(_face_valid(tri), span, 0)
    return jnp.max(span, axis=0).astype(jnp.int32)


def _pad_pow2(idx):
    """Pad an index list with -1 to a power of two, so similar meshes share a compilation."""
    if not len(idx):
        return idx
    return np.concatenate(
        [idx, np.full((1 << int(math.ceil(math.log2(len(idx))))) - len(idx), -1, np.int32)]
    )


def _plan(spans):
    """Host-side grouping of faces by window: each face goes to the smallest window of _WINDOWS that
    holds its pixel box in every view; larger faces go to the brute-force path; faces that cover no
    pixel centre in any view are dropped. Returns (windows tuple, index arrays tuple, brute index)."""
    windows, groups, lower = [], [], 0
    for k in _WINDOWS:
        idx = np.nonzero((spans > lower) & (spans <= k))[0].astype(np.int32)
        if len(idx):
            windows.append(k)
            groups.append(_pad_pow2(idx))
        lower = k
    brute = _pad_pow2(np.nonzero(spans > lower)[0].astype(np.int32))
    return tuple(windows), tuple(groups), brute


def _window_candidates(tri_all, valid_all, idx, window, height, width):
    """Pixels (flat index, H*W = none), depths and face ids of the K x K windows of faces idx."""
    tri = tri_all[jnp.maximum(idx, 0)]
    valid = (idx >= 0) & valid_all[jnp.maximum(idx, 0)]
    # The window starts at the first on-screen pixel centre of the face's box, as the spans count.
    col0 = jnp.maximum(jnp.ceil(jnp.min(tri[:, :, 0], axis=-1) - 0.5), 0)
    row0 = jnp.maximum(jnp.ceil(jnp.min(tri[:, :, 1], axis=-1) - 0.5), 0)
    offs = jnp.arange(window, dtype=jnp.float32)
    cols = (col0[:, None, None] + offs[None, None, :]) * jnp.ones((1, window, 1))
    rows = (row0[:, None, None] + offs[None, :, None]) * jnp.ones((1, 1, window))
    bary, _ = _edge_bary(tri[:, None, None], cols + 0.5, rows + 0.5)
    depth = _depth_at(tri[:, None, None], bary)
    hit = (
        valid[:, None, None]
        & jnp.all(bary >= -_EDGE_EPS, axis=-1)
        & (cols < width)
        & (rows < height)
        & (depth > NEAR)
    )
    pix = jnp.where(hit, rows * width + cols, height * width).astype(jnp.int32).reshape(-1)
    ids = jnp.broadcast_to(idx[:, None, None], hit.shape).reshape(-1)
    return pix, jnp.where(hit, depth, jnp.inf).reshape(-1), ids


def _rasterize_view(screen, faces, windows, groups, brute, height, width):
    """One view: screen [V, 3] -> face index [H*W] (F for background)."""
    num_faces = faces.shape[0]
    num_pixels = height * width
    tri_all = screen[faces]
    valid_all = _face_valid(tri_all)
    cands = [
        _window_candidates(tri_all, valid_all, idx, k, height, width)
        for k, idx in zip(windows, groups)
    ]
    if cands:
        pix, depth, ids = (jnp.concatenate(c) for c in zip(*cands))
    else:
        pix, depth, ids = jnp.zeros(0, jnp.int32), jnp.zeros(0), jnp.zeros(0, jnp.int32)
    zbuf = jnp.full(num_pixels + 1, jnp.inf).at[pix].min(depth)

    # Brute-force path for faces larger than every window: a scan over them, every pixel each.
    zlarge = jnp.full(num_pixels, jnp.inf)
    flarge = jnp.full(num_pixels, num_faces, jnp.int32)
    if brute.shape[0]:
        py, px = jnp.meshgrid(jnp.arange(height) + 0.5, jnp.arange(width) + 0.5, indexing="ij")
        px, py = px.reshape(-1), py.reshape(-1)

        def step(carry, f):
            zmin, fmin = carry
            t = tri_all[jnp.maximum(f, 0)]
            b, _ = _edge_bary(t, px, py)
            z = _depth_at(t, b)
            ok = (f >= 0) & valid_all[jnp.maximum(f, 0)] & jnp.all(b >= -_EDGE_EPS, -1) & (z > NEAR)
            better = ok & (z < zmin)
            return (jnp.where(better, z, zmin), jnp.where(better, f, fmin)), None

        (zlarge, flarge), _ = jax.lax.scan(step, (zlarge, flarge), brute)

    zbuf = jnp.minimum(zbuf[:num_pixels], zlarge)
    zbuf_ext = jnp.concatenate([zbuf, jnp.array([-jnp.inf])])
    winner = jnp.where(depth <= zbuf_ext[pix], ids, num_faces)
    fbuf = jnp.full(num_pixels + 1, num_faces, jnp.int32).at[pix].min(winner)[:num_pixels]
    return jnp.minimum(fbuf, jnp.where(zlarge <= zbuf, flarge, num_faces))


def _fragments(vertices, faces, cams, windows, groups, brute):
    """Per-pixel face index (-1 background), perspective-correct barycentrics and depth."""
    height, width = cams.height, cams.width
    screen = _project_batch(vertices, cams)
    face = jax.vmap(_rasterize_view, in_axes=(0, None, None, None, None, None, None))(
        screen, faces, windows, groups, brute, height, width
    )
    covered = face < faces.shape[0]
    face = jnp.where(covered, face, 0)
    tri = jax.vmap(lambda s, f: s[faces[f]])(screen, face)  # [B, HW, 3, 3]
    py, px = jnp.meshgrid(jnp.arange(height) + 0.5, jnp.arange(width) + 0.5, indexing="ij")
    bary, _ = _edge_bary(tri, px.reshape(-1), py.reshape(-1))
    bary = jnp.clip(bary, 0.0, 1.0)
    bary = bary / jnp.sum(bary, -1, keepdims=True)
    depth = _depth_at(tri, bary)
    persp = bary / tri[..., 2]
    persp = persp / jnp.sum(persp, -1, keepdims=True)
    shape = (cams.batch, height, width)
    return dict(
        face_index=jnp.where(covered, face, -1).reshape(shape),
        bary=persp.reshape(shape + (3,)),
        depth=jnp.where(covered, depth, jnp.inf).reshape(shape),
        mask=covered.reshape(shape),
    )


def _vertex_normals(vertices, faces):
    """Area-weighted vertex normals, [V, 3]."""
    tri = vertices[faces]
    n = jnp.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    acc = jnp.zeros_like(vertices).at[faces.reshape(-1)].add(jnp.repeat(n, 3, axis=0))
    return _normalize(acc)


def _bilinear(texture, uv):
    """Sample texture [Ht, Wt, C] at uv [..., 2] (origin bottom-left, v up; clamped at the border)."""
    th, tw = texture.shape[:2]
    x = jnp.clip(uv[..., 0] * tw - 0.5, 0, tw - 1)
    y = jnp.clip((1.0 - uv[..., 1]) * th - 0.5, 0, th - 1)
    x0 = jnp.floor(x).astype(jnp.int32)
    y0 = jnp.floor(y).astype(jnp.int32)
    x1, y1 = jnp.minimum(x0 + 1, tw - 1), jnp.minimum(y0 + 1, th - 1)
    wx, wy = (x - x0)[..., None], (y - y0)[..., None]
    top = texture[y0, x0] * (1 - wx) + texture[y0, x1] * wx
    bottom = texture[y1, x0] * (1 - wx) + texture[y1, x1] * wx
    return top * (1 - wy) + bottom * wy


def _shade(vertices, faces, cams, frags, vertex_colors, uv, texture, light_dir, background):
    """Diffuse + ambient shading of fragments; both sides lit (normals turned to the camera)."""
    b, h, w = frags["mask"].shape
    face = jnp.maximum(frags["face_index"], 0).reshape(b, -1)
    bary = frags["bary"].reshape(b, -1, 3)

    def interp(attr):  # attr [B, V, C] -> [B, HW, C]
        corner = jax.vmap(lambda a, f: a[faces[f]])(attr, face)
        return jnp.sum(corner * bary[..., None], axis=-2)

    position = interp(vertices)
    normal = _normalize(interp(jax.vmap(_vertex_normals, in_axes=(0, None))(vertices, faces)))
    to_eye = cams.eye[:, None] - position
    normal = jnp.where(jnp.sum(normal * to_eye, -1, keepdims=True) < 0, -normal, normal)
    if light_dir is None:  # a head light a little above the camera
        light = _normalize(cams.rotation[:, 2] + 0.5 * cams.rotation[:, 1])
    else:
        light = _normalize(jnp.broadcast_to(jnp.asarray(light_dir, jnp.float32), (b, 3)))
    lambert = jnp.maximum(jnp.sum(normal * light[:, None], -1, keepdims=True), 0.0)

    if texture is not None:
        uv = jnp.asarray(uv, jnp.float32)
        if uv.ndim == 2:
            corner_uv = uv[faces][face]
        else:
            corner_uv = uv[face]
        albedo = _bilinear(
            jnp.asarray(texture, jnp.float32), jnp.sum(corner_uv * bary[..., None], -2)
        )
    elif vertex_colors is not None:
        albedo = interp(vertex_colors)
    else:
        albedo = jnp.full(position.shape, _GREY)
    color = jnp.clip(albedo * (_AMBIENT + _DIFFUSE * lambert), 0.0, 1.0)
    bg = jnp.broadcast_to(jnp.asarray(background, jnp.float32), (3,))
    color = jnp.where(frags["mask"].reshape(b, -1, 1), color, bg)
    return color.reshape(b, h, w, 3)


def _check_inputs(vertices, faces, cams, vertex_colors, uv, texture):
    if vertices.ndim != 3 or vertices.shape[-1] != 3:
        raise ValueError(f"render_mesh: vertices must be [V, 3] or [B, V, 3], got {vertices.shape}")
    if faces.ndim != 2 or faces.shape[-1] != 3:
        raise ValueError(f"render_mesh: faces must be [F, 3], got {faces.shape}")
    if vertices.shape[0] != cams.batch:
        raise ValueError(f"render_mesh: {vertices.shape[0]} vertex sets for {cams.batch} cameras")
    if vertex_colors is not None and vertex_colors.shape[-2:] != vertices.shape[-2:]:
        raise ValueError(
            f"render_mesh: vertex_colors must be [V, 3] or [B, V, 3] with V = "
            f"{vertices.shape[1]}, got {vertex_colors.shape}"
        )
    if (uv is None) != (texture is None):
        raise ValueError("render_mesh: a UV texture needs both `uv` and `texture`")
    if uv is not None:
        uv_shape = np.shape(uv)
        if uv_shape not in ((vertices.shape[1], 2), (faces.shape[0], 3, 2)):
            raise ValueError(f"render_mesh: uv must be [V, 2] or [F, 3, 2], got {uv_shape}")
        if np.ndim(texture) != 3 or np.shape(texture)[-1] != 3:
            raise ValueError(f"render_mesh: texture must be [Ht, Wt, 3], got {np.shape(texture)}")


def _prepare(vertices, faces, cams, vertex_colors):
    vertices = jnp.asarray(vertices, jnp.float32)
    if vertices.ndim == 2:
        vertices = jnp.broadcast_to(vertices, (cams.batch,) + vertices.shape)
    faces = jnp.asarray(faces, jnp.int32)
    if vertex_colors is not None:
        vertex_colors = jnp.asarray(vertex_colors, jnp.float32)
        if vertex_colors.ndim == 2:
            vertex_colors = jnp.broadcast_to(vertex_colors, vertices.shape)
    return vertices, faces, vertex_colors


def _take(tree, lo, hi, size):
    """Views lo..hi of a batched pytree, padded to `size` by repeating the last view."""
    idx = np.minimum(np.arange(lo, lo + size), hi - 1)
    return jax.tree_util.tree_map(lambda x: x[idx], tree)


@functools.partial(jax.jit, static_argnames=("windows", "shade"))
def _render_chunk(
    vertices,
    faces,
    cams,
    vertex_colors,
    uv,
    texture,
    light_dir,
    background,
    windows,
    groups,
    brute,
    shade,
):
    frags = _fragments(vertices, faces, cams, windows, groups, brute)
    if not shade:
        return frags
    image = _shade(vertices, faces, cams, frags, vertex_colors, uv, texture, light_dir, background)
    return dict(image=image, mask=frags["mask"])


def _run(vertices, faces, cams, vertex_colors, uv, texture, light_dir, background, chunk, shade):
    vertices, faces, vertex_colors = _prepare(vertices, faces, cams, vertex_colors)
    _check_inputs(vertices, faces, cams, vertex_colors, uv, texture)
    total = cams.batch
    chunk = total if chunk is None else min(chunk, total)
    spans = np.zeros(faces.shape[0], np.int32)
    for lo in range(0, total, chunk):  # one plan for all chunks, so they share a compilation
        part = _take((vertices, cams), lo, min(lo + chunk, total), chunk)
        spans = np.maximum(spans, np.asarray(_face_spans(part[0], faces, part[1])))
    windows, groups, brute = _plan(spans)
    groups = tuple(jnp.asarray(g) for g in groups)
    light = None if light_dir is None else jnp.asarray(light_dir, jnp.float32)
    outs = []
    for lo in range(0, total, chunk):
        hi = min(lo + chunk, total)
        v, c, vc = _take((vertices, cams, vertex_colors), lo, hi, chunk)
        lt = light if light is None or light.ndim == 1 else _take(light, lo, hi, chunk)
        out = _render_chunk(
            v,
            faces,
            c,
            vc,
            uv,
            texture,
            lt,
            jnp.asarray(background, jnp.float32),
            windows,
            groups,
            jnp.asarray(brute),
            shade,
        )
        outs.append(jax.tree_util.tree_map(lambda x, n=hi - lo: x[:n], out))
    if len(outs) == 1:
        return outs[0]
    return jax.tree_util.tree_map(lambda *xs: jnp.concatenate(xs), *outs)


def rasterize(vertices, faces, cameras, chunk=256):
    """Visibility only: dict of face_index [B, H, W] int32 (-1 = background), bary [B, H, W, 3]
    (perspective-correct barycentrics of the visible face), depth [B, H, W] (inf = background) and
    mask [B, H, W] bool. vertices: [V, 3] (shared by all views) or [B, V, 3]; faces: [F, 3]."""
    return _run(vertices, faces, cameras, None, None, None, None, 1.0, chunk, shade=False)


def render_mesh(
    vertices,
    faces,
    cameras,
    vertex_colors=None,
    uv=None,
    texture=None,
    background=1.0,
    light_dir=None,
    chunk=256,
):
    """Shaded images of a mesh: dict image [B, H, W, 3] float32 in [0, 1] and mask [B, H, W] bool.

    vertices: [V, 3] or [B, V, 3]; faces: [F, 3]. Albedo: `texture` [Ht, Wt, 3] sampled bilinearly at
    `uv` ([V, 2] or per face corner [F, 3, 2]; origin at the texture's bottom-left) when given, else
    `vertex_colors` ([V, 3] or [B, V, 3]) interpolated, else grey. Shading: albedo x (0.35 + 0.65
    max(0, n.l)) with interpolated vertex normals; light_dir [3] or [B, 3] points towards the light
    (world frame); None = a head light slightly above each camera. background: scalar or RGB.
    chunk: views rendered per jitted call, which bounds memory for thousands of views (the last
    chunk is padded, so every chunk shares one compilation; None = all views at once).
    """
    return _run(
        vertices,
        faces,
        cameras,
        vertex_colors,
        uv,
        texture,
        light_dir,
        background,
        chunk,
        shade=True,
    )
