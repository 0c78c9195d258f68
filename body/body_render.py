"""Software rasteriser for shaded images of triangle meshes (JAX; CPU or GPU, no OpenGL).

Frames and cameras: world points are in the body's frame (SMPL-X, y up). A camera maps a world point
p to camera coordinates c = R (p - eye); the camera looks along -z_c with +y_c up and +x_c to the
right (OpenGL convention), so depth = -z_c. Perspective with a vertical field of view: a point lands
at pixel column u = W/2 + f x_c / depth and row v = H/2 - f y_c / depth (row 0 at the top), with
f = (H/2) / tan(fov/2); pixel (row i, column j) has its centre at (i + 0.5, j + 0.5).

Rasterisation is a two-pass scatter-min z-buffer. Each triangle is tested against a fixed window of
K x K pixels at the corner of its projected bounding box (clipped to the image). On the host, faces
are grouped by the smallest K in (1, 2, 3, 4, 6, 8, 12, 16, 24, 32) that holds their box in every
view of the batch (static shapes per group); triangles larger than 32 pixels go to a brute-force
path that tests them against every pixel (a scan over those faces), so nothing is ever dropped, and
faces that cover no pixel centre in any view are skipped. Pass 1 scatter-mins the depths into a
per-view buffer; pass 2 scatter-mins the face index among the candidates at that depth (ties go to
the lowest face index). A per-pixel pass then computes perspective-correct barycentrics of the
winning face and shades. Both sides of every face are drawn. Faces with a vertex closer than `NEAR`
to a camera are skipped in that view: the meshes drawn here are always in front of their cameras.

Shading: albedo x (ambient + diffuse max(0, n.l)), with n the interpolated vertex normal or the face
normal, turned towards the camera (so a back face is lit as the side the camera sees). Anti-aliasing
renders at `supersample` times the size and averages the blocks down. `NEURAL_RENDERER` holds the
settings of neural_renderer's `Renderer` as the InterFusion release uses it for its codebook (docs/method.md
§1.3): black background, 2x super-sampling, flat shading with face normals, white ambient 0.5 +
directional 0.5 light from l = (0, 1, 0) in the world frame, and albedo from per-face texel cubes
(`neural_renderer_texels`). One difference remains and is the caller's to apply: neural_renderer's
look_at camera takes its x axis as up x forward, the camera's left, and puts it to the image's
right, so its images are mirror images of a pinhole camera's; `render_mesh` draws the pinhole view.
"""

import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from ifcommon.geometry import normalize

NEAR = 1e-3
_WINDOWS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32)  # window sizes (pixels); larger faces: brute force
_GREY = 0.75
_TEXEL_EPS = 1e-3  # neural_renderer's rasterizer eps: keeps a texel lookup's upper corner in range
# neural_renderer.Renderer's defaults as render_mesh keyword arguments; its camera defaults (a 30
# degree half-angle, i.e. a 60 degree field of view) belong to the cameras.
NEURAL_RENDERER = dict(
    background=0.0,
    light_dir=(0.0, 1.0, 0.0),
    ambient=0.5,
    diffuse=0.5,
    face_normals=True,
    supersample=2,
)


@struct.dataclass
class Cameras:
    """A batch of pinhole cameras.

    eye: [B, 3] camera centres (world). rotation: [B, 3, 3] world->camera rotation whose rows are
    the camera's right, up and backward axes in world coordinates. focal: [B] focal length in
    pixels.
    """

    eye: jnp.ndarray
    rotation: jnp.ndarray
    focal: jnp.ndarray
    height: int = struct.field(pytree_node=False)
    width: int = struct.field(pytree_node=False)

    @property
    def batch(self):
        return self.eye.shape[0]



@functools.partial(jax.jit, static_argnames=("size",))
def look_at_cameras(eye, target, up=(0.0, 1.0, 0.0), fov_deg=60.0, size=224):
    """Cameras at `eye` [B, 3] looking at `target` [B, 3] (or [3]), `up` [3] in world.

    fov_deg: vertical field of view (scalar or [B]). size: int (square) or (height, width). When
    the viewing direction is parallel to `up`, the world axis least aligned with it serves as up.
    """
    eye = jnp.asarray(eye, jnp.float32)
    target = jnp.broadcast_to(jnp.asarray(target, jnp.float32), eye.shape)
    up = jnp.broadcast_to(jnp.asarray(up, jnp.float32), eye.shape)
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    forward = normalize(target - eye)
    right = jnp.cross(forward, up)
    alt_up = jnp.eye(3, dtype=jnp.float32)[jnp.argmin(jnp.abs(forward), axis=-1)]
    degenerate = jnp.linalg.norm(right, axis=-1, keepdims=True) < 1e-6
    right = normalize(jnp.where(degenerate, jnp.cross(forward, alt_up), right))
    true_up = jnp.cross(right, forward)
    rotation = jnp.stack([right, true_up, -forward], axis=-2)
    fov = jnp.broadcast_to(jnp.asarray(fov_deg, jnp.float32), eye.shape[:1])
    focal = 0.5 * height / jnp.tan(jnp.deg2rad(fov) / 2)
    return Cameras(eye=eye, rotation=rotation, focal=focal, height=height, width=width)


@functools.partial(jax.jit, static_argnames=("size",))
def orbit_cameras(
    azimuth_deg, elevation_deg, distance, fov_deg=60.0, size=224, target=(0.0, 0.0, 0.0)
):
    """Cameras on a sphere around `target` in the y-up body frame, looking at it with +y up.

    eye = target + distance (cos e sin a, sin e, cos e cos a): azimuth a turns about +y
    (right-handed), a = 0 puts the camera on +z, facing the front of a body that faces +z; a = 90
    puts it on +x (the body's left side); elevation e > 0 looks down from above.
    azimuth_deg, elevation_deg: [B]; distance and fov_deg: scalars or [B].
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
    pixel centre in any view are dropped. Returns (windows tuple, index arrays tuple, brute index).
    """
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
    return normalize(acc)


def _face_normals(vertices, faces):
    """Unit face normals, [F, 3] (the side does not matter: shading turns them to the camera)."""
    tri = vertices[faces]
    return normalize(jnp.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]))


def _bilinear(texture, uv):
    """Sample texture [Ht, Wt, C] at uv [..., 2] (origin bottom-left, v up; clamped at borders)."""
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


@functools.partial(jax.jit, static_argnames=("size",))
def neural_renderer_texels(uv_faces, image, size=8):
    """Per-face texel cubes as neural_renderer's `load_obj(..., load_texture=True,
    texture_size=size)` builds them (wrapping 'REPEAT', bilinear).

    uv_faces: [F, 3, 2] texture coordinates of each face's corners (origin bottom-left, v up).
    image: [Ht, Wt, 3] albedo in [0, 1], row 0 at the top as a PNG is read.
    Returns [F, size, size, size, 3]: texel (i, j, k) holds the albedo at the barycentric point
    (i, j, k) / (i + j + k) of its face (texel (0, 0, 0) at uv (0, 0)); pixel centres sit at
    u (Wt - 1) and v (Ht - 1), so u = 0 and u = 1 are the centres of the outer columns.
    """
    g = jnp.arange(size, dtype=jnp.float32) / (size - 1)
    w = jnp.stack(jnp.meshgrid(g, g, g, indexing="ij"), axis=-1)
    total = jnp.sum(w, axis=-1, keepdims=True)
    w = jnp.where(total > 0, w / jnp.maximum(total, 1e-12), w)
    uv = jnp.asarray(uv_faces, jnp.float32)
    # neural_renderer's REPEAT: fmod(x, 1) for x > 0, else 1 + fmod(x, 1); so 0 -> 1 and 1 -> 0.
    uv = jnp.where(uv > 0, jnp.fmod(uv, 1.0), 1.0 + jnp.fmod(uv, 1.0))
    pos = jnp.einsum("ijkc,fcd->fijkd", w, uv)
    img = jnp.asarray(image, jnp.float32)[::-1]  # row 0 = v 0
    th, tw = img.shape[:2]
    x, y = pos[..., 0] * (tw - 1), pos[..., 1] * (th - 1)
    x0, y0 = jnp.floor(x).astype(jnp.int32), jnp.floor(y).astype(jnp.int32)
    x1, y1 = jnp.minimum(x0 + 1, tw - 1), jnp.minimum(y0 + 1, th - 1)
    wx, wy = (x - x0)[..., None], (y - y0)[..., None]
    top = img[y0, x0] * (1 - wx) + img[y0, x1] * wx
    bottom = img[y1, x0] * (1 - wx) + img[y1, x1] * wx
    return top * (1 - wy) + bottom * wy


def _sample_texels(texels, face, bary):
    """neural_renderer's texture lookup: trilinear in the texel cube [F, T, T, T, C] of face [...]
    at (T - 1) x the perspective-correct barycentrics bary [..., 3] -> [..., C]."""
    t = texels.shape[1]
    flat = texels.reshape(texels.shape[0], t**3, texels.shape[-1])
    pos = jnp.clip(bary * (t - 1), 0.0, t - 1 - _TEXEL_EPS)
    base = jnp.floor(pos).astype(jnp.int32)
    frac = pos - base
    out = 0.0
    for corner in itertools.product((0, 1), repeat=3):
        c = np.asarray(corner)
        weight = jnp.prod(jnp.where(c == 1, frac, 1.0 - frac), axis=-1, keepdims=True)
        idx = base + c
        out = out + weight * flat[face, (idx[..., 0] * t + idx[..., 1]) * t + idx[..., 2]]
    return out


def _shade(
    vertices, faces, cams, frags, albedo_src, light, background, ambient, diffuse, face_normals
):
    """Ambient + diffuse shading of fragments; both sides lit (normals turned to the camera).
    albedo_src: dict with one of vertex_colors, (uv, texture) or texels, or none (grey)."""
    b, h, w = frags["mask"].shape
    face = jnp.maximum(frags["face_index"], 0).reshape(b, -1)
    bary = frags["bary"].reshape(b, -1, 3)

    def interp(attr):  # attr [B, V, C] -> [B, HW, C]
        corner = jax.vmap(lambda a, f: a[faces[f]])(attr, face)
        return jnp.sum(corner * bary[..., None], axis=-2)

    position = interp(vertices)
    if face_normals:
        normal = jax.vmap(lambda v, f: _face_normals(v, faces)[f])(vertices, face)
    else:
        normal = normalize(interp(jax.vmap(_vertex_normals, in_axes=(0, None))(vertices, faces)))
    to_eye = cams.eye[:, None] - position
    normal = jnp.where(jnp.sum(normal * to_eye, -1, keepdims=True) < 0, -normal, normal)
    if light is None:  # a head light a little above the camera
        light = normalize(cams.rotation[:, 2] + 0.5 * cams.rotation[:, 1])
    else:
        light = normalize(jnp.broadcast_to(light, (b, 3)))
    lambert = jnp.maximum(jnp.sum(normal * light[:, None], -1, keepdims=True), 0.0)

    if "texels" in albedo_src:
        albedo = _sample_texels(albedo_src["texels"], face, bary)
    elif "texture" in albedo_src:
        uv = albedo_src["uv"]
        corner_uv = uv[faces][face] if uv.ndim == 2 else uv[face]
        albedo = _bilinear(albedo_src["texture"], jnp.sum(corner_uv * bary[..., None], -2))
    elif "vertex_colors" in albedo_src:
        albedo = interp(albedo_src["vertex_colors"])
    else:
        albedo = jnp.full(position.shape, _GREY)
    color = jnp.clip(albedo * (ambient + diffuse * lambert), 0.0, 1.0)
    bg = jnp.broadcast_to(background, (3,))
    color = jnp.where(frags["mask"].reshape(b, -1, 1), color, bg)
    return color.reshape(b, h, w, 3)


def _check_inputs(vertices, faces, cams, vertex_colors, uv, texture, texels, supersample):
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
    if sum(x is not None for x in (vertex_colors, texture, texels)) > 1:
        raise ValueError("render_mesh: give one of vertex_colors, uv + texture or texels")
    if uv is not None:
        uv_shape = np.shape(uv)
        if uv_shape not in ((vertices.shape[1], 2), (faces.shape[0], 3, 2)):
            raise ValueError(f"render_mesh: uv must be [V, 2] or [F, 3, 2], got {uv_shape}")
        if np.ndim(texture) != 3 or np.shape(texture)[-1] != 3:
            raise ValueError(f"render_mesh: texture must be [Ht, Wt, 3], got {np.shape(texture)}")
    if texels is not None:
        ts = np.shape(texels)
        if len(ts) != 5 or ts[0] != faces.shape[0] or not ts[1] == ts[2] == ts[3] > 1 or ts[4] != 3:
            raise ValueError(
                f"render_mesh: texels must be [F, T, T, T, 3] with F = {faces.shape[0]}, T > 1, "
                f"got {ts}"
            )
    if not (isinstance(supersample, int) and supersample >= 1):
        raise ValueError(f"render_mesh: supersample must be a positive int, got {supersample!r}")


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


def _scaled(cams, factor):
    """The same cameras with `factor` x the pixels along each side (same field of view)."""
    if factor == 1:
        return cams
    return Cameras(
        eye=cams.eye,
        rotation=cams.rotation,
        focal=cams.focal * factor,
        height=cams.height * factor,
        width=cams.width * factor,
    )


def _take(tree, lo, hi, size):
    """Views lo..hi of a batched pytree, padded to `size` by repeating the last view."""
    idx = np.minimum(np.arange(lo, lo + size), hi - 1)
    return jax.tree_util.tree_map(lambda x: x[idx], tree)


@functools.partial(jax.jit, static_argnames=("windows", "shade", "face_normals", "supersample"))
def _render_chunk(
    vertices,
    faces,
    cams,
    albedo_src,
    light,
    background,
    ambient,
    diffuse,
    windows,
    groups,
    brute,
    shade,
    face_normals,
    supersample,
):
    frags = _fragments(vertices, faces, cams, windows, groups, brute)
    if not shade:
        return frags
    image = _shade(
        vertices, faces, cams, frags, albedo_src, light, background, ambient, diffuse, face_normals
    )
    mask = frags["mask"]
    if supersample > 1:  # average each supersample x supersample block (box filter)
        b, h, w = mask.shape
        s = supersample
        image = image.reshape(b, h // s, s, w // s, s, 3).mean(axis=(2, 4))
        mask = mask.reshape(b, h // s, s, w // s, s).any(axis=(2, 4))
    return dict(image=image, mask=mask)


def _run(vertices, faces, cams, albedo, light_dir, background, shading, chunk, shade):
    """albedo: (vertex_colors, uv, texture, texels); shading: (ambient, diffuse, face_normals,
    supersample)."""
    vertex_colors, uv, texture, texels = albedo
    ambient, diffuse, face_normals, supersample = shading
    vertices, faces, vertex_colors = _prepare(vertices, faces, cams, vertex_colors)
    _check_inputs(vertices, faces, cams, vertex_colors, uv, texture, texels, supersample)
    cams = _scaled(cams, supersample)
    total = cams.batch
    chunk = total if chunk is None else min(chunk, total)
    spans = np.zeros(faces.shape[0], np.int32)
    for lo in range(0, total, chunk):  # one plan for all chunks, so they share a compilation
        part = _take((vertices, cams), lo, min(lo + chunk, total), chunk)
        spans = np.maximum(spans, np.asarray(_face_spans(part[0], faces, part[1])))
    windows, groups, brute = _plan(spans)
    groups = tuple(jnp.asarray(g) for g in groups)
    light = None if light_dir is None else jnp.asarray(light_dir, jnp.float32)
    shared = {}  # albedo arrays that are the same for every view
    if uv is not None:
        shared = dict(uv=jnp.asarray(uv, jnp.float32), texture=jnp.asarray(texture, jnp.float32))
    elif texels is not None:
        shared = dict(texels=jnp.asarray(texels, jnp.float32))
    outs = []
    for lo in range(0, total, chunk):
        hi = min(lo + chunk, total)
        v, c, vc = _take((vertices, cams, vertex_colors), lo, hi, chunk)
        lt = light if light is None or light.ndim == 1 else _take(light, lo, hi, chunk)
        src = dict(shared) if vc is None else dict(vertex_colors=vc)
        out = _render_chunk(
            v,
            faces,
            c,
            src,
            lt,
            jnp.asarray(background, jnp.float32),
            jnp.float32(ambient),
            jnp.float32(diffuse),
            windows,
            groups,
            jnp.asarray(brute),
            shade,
            face_normals,
            supersample,
        )
        outs.append(jax.tree_util.tree_map(lambda x, n=hi - lo: x[:n], out))
    if len(outs) == 1:
        return outs[0]
    return jax.tree_util.tree_map(lambda *xs: jnp.concatenate(xs), *outs)


def rasterize(vertices, faces, cameras, chunk=256):
    """Visibility only: dict of face_index [B, H, W] int32 (-1 = background), bary [B, H, W, 3]
    (perspective-correct barycentrics of the visible face), depth [B, H, W] (inf = background) and
    mask [B, H, W] bool. vertices: [V, 3] (shared by all views) or [B, V, 3]; faces: [F, 3]."""
    albedo = (None, None, None, None)
    return _run(vertices, faces, cameras, albedo, None, 1.0, (0, 0, False, 1), chunk, shade=False)


def render_mesh(
    vertices,
    faces,
    cameras,
    vertex_colors=None,
    uv=None,
    texture=None,
    texels=None,
    background=1.0,
    light_dir=None,
    ambient=0.35,
    diffuse=0.65,
    face_normals=False,
    supersample=1,
    chunk=256,
):
    """Shaded images of a mesh: dict image [B, H, W, 3] float32 in [0, 1] and mask [B, H, W] bool
    (True where any sample of the pixel is covered).

    vertices: [V, 3] or [B, V, 3]; faces: [F, 3]. Albedo, at most one of: `texture` [Ht, Wt, 3]
    sampled bilinearly at `uv` ([V, 2] or per face corner [F, 3, 2]; origin at the texture's
    bottom-left) interpolated per pixel; `texels` [F, T, T, T, 3], neural_renderer's per-face texel
    cubes (`neural_renderer_texels`); `vertex_colors` ([V, 3] or [B, V, 3]) interpolated; else
    grey. Shading: albedo x (ambient + diffuse max(0, n.l)), n the interpolated vertex normal or,
    with face_normals, the face's; light_dir [3] or [B, 3] points towards the light (world frame);
    None = a head light slightly above each camera. background: scalar or RGB. supersample: render
    at this many times the cameras' size and average down (anti-aliasing). `NEURAL_RENDERER` holds
    neural_renderer's settings of these arguments. chunk: views rendered per jitted call, which
    bounds memory for thousands of views (the last chunk is padded, so every chunk shares one
    compilation; None = all views at once).
    """
    return _run(
        vertices,
        faces,
        cameras,
        (vertex_colors, uv, texture, texels),
        light_dir,
        background,
        (ambient, diffuse, face_normals, supersample),
        chunk,
        shade=True,
    )
