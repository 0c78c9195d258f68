"""Body renderer: analytic silhouettes, occlusion, colours, and a NumPy ray-casting reference."""

import numpy as np
import pytest
import trimesh

from body import builtin_body
from body import body_render
from body.body_render import look_at_cameras, orbit_cameras, rasterize, render_mesh
from pose.image_sheet import image_grid


def _pixel_rays(cams):
    """NumPy rays through pixel centres: eye [B, 3], unit directions [B, H, W, 3] (world)."""
    eye = np.asarray(cams.eye, np.float64)
    rot = np.asarray(cams.rotation, np.float64)
    f = np.asarray(cams.focal, np.float64)
    i, j = np.meshgrid(np.arange(cams.height) + 0.5, np.arange(cams.width) + 0.5, indexing="ij")
    x = (j - cams.width / 2)[None] / f[:, None, None]
    y = -(i - cams.height / 2)[None] / f[:, None, None]
    d_cam = np.stack([x, y, -np.ones_like(x)], -1)
    d = np.einsum("bhwk,bkl->bhwl", d_cam, rot)  # rotation rows are the camera axes in world
    return eye, d / np.linalg.norm(d, axis=-1, keepdims=True)


def test_sphere_silhouette_matches_analytic_disc():
    radius = 0.5
    sphere = trimesh.creation.icosphere(subdivisions=4, radius=radius)
    eye = np.array([[0.0, 0.0, 2.7], [1.5, 1.0, 2.0], [-2.2, -0.4, -1.0]])
    target = np.array([[0.0, 0.0, 0.0], [0.3, 0.2, 0.0], [0.0, -0.3, 0.2]])  # sphere off-centre
    cams = look_at_cameras(eye, target, fov_deg=np.array([60.0, 50.0, 70.0]), size=(96, 128))
    mask = np.asarray(render_mesh(sphere.vertices, sphere.faces, cams)["mask"])
    origin, d = _pixel_rays(cams)
    to_centre = -origin / np.linalg.norm(origin, axis=-1, keepdims=True)
    # The silhouette of a sphere is the cone of rays within asin(r / distance) of its centre.
    cos_angle = np.einsum("bhwk,bk->bhw", d, to_centre)
    half = np.arcsin(radius / np.linalg.norm(origin, axis=-1))
    disc = cos_angle >= np.cos(half)[:, None, None]
    for b in range(len(eye)):
        iou = np.sum(mask[b] & disc[b]) / np.sum(mask[b] | disc[b])
        assert iou > 0.97, (b, iou)


def _box(size, centre, color):
    m = trimesh.creation.box(extents=size)
    m.apply_translation(centre)
    return m.vertices, m.faces, np.tile(np.asarray(color, np.float64), (len(m.vertices), 1))


@pytest.mark.parametrize("small_first", [True, False])
def test_small_box_in_front_occludes_big_box(small_first):
    parts = [
        _box((0.3, 0.3, 0.3), (0.0, 0.0, 0.8), (1, 0, 0)),
        _box((1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (0, 0, 1)),
    ]
    if not small_first:  # drawing order must not matter
        parts = parts[::-1]
    offsets = np.cumsum([0] + [len(p[0]) for p in parts[:-1]])
    vertices = np.concatenate([p[0] for p in parts])
    faces = np.concatenate([p[1] + o for p, o in zip(parts, offsets)])
    colors = np.concatenate([p[2] for p in parts])
    # azimuth 0 sees the small box in front; azimuth 180 sees the big box hide it.
    cams = orbit_cameras(np.array([0.0, 180.0]), np.zeros(2), 3.0, size=64)
    out = render_mesh(vertices, faces, cams, vertex_colors=colors)
    img, mask = np.asarray(out["image"]), np.asarray(out["mask"])
    reddish = mask & (img[..., 0] > img[..., 2])
    bluish = mask & (img[..., 2] > img[..., 0])
    assert reddish[0, 32, 32] and bluish[0, 32, 25] and not mask[0, 2, 2]
    assert bluish[1, 32, 32] and not reddish[1].any()
    # The small box covers the angle its front face subtends (2.2 m away, 0.3 m wide).
    f = 32 / np.tan(np.radians(30))
    expected_width = 2 * f * 0.15 / 2.05
    assert abs(reddish[0, 32].sum() - expected_width) <= 2


def test_vertex_colours_and_texture_land_on_the_expected_side():
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=0.5)
    right = sphere.vertices[:, 0] > 0  # body +x
    colors = np.where(right[:, None], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0])
    cams = orbit_cameras(np.array([0.0, 180.0, 90.0]), np.zeros(3), 2.5, size=48)
    img = np.asarray(
        render_mesh(sphere.vertices, sphere.faces, cams, vertex_colors=colors)["image"]
    )
    # camera on +z looking at -z with y up: world +x is the image's right half.
    assert img[0, 24, 30, 0] > img[0, 24, 30, 1] and img[0, 24, 17, 1] > img[0, 24, 17, 0]
    assert img[1, 24, 30, 1] > img[1, 24, 30, 0] and img[1, 24, 17, 0] > img[1, 24, 17, 1]
    assert img[2, 24, 24, 0] > 2 * img[2, 24, 24, 1]
    # the same split through a UV texture: u < 0.5 green, u > 0.5 red.
    texture = np.zeros((4, 4, 3), np.float32)
    texture[:, :2, 1] = 1.0
    texture[:, 2:, 0] = 1.0
    uv = np.stack([np.where(right, 0.95, 0.05), np.full(len(right), 0.5)], -1)
    img_t = np.asarray(
        render_mesh(sphere.vertices, sphere.faces, cams, uv=uv, texture=texture)["image"]
    )
    assert img_t[0, 24, 30, 0] > img_t[0, 24, 30, 1] and img_t[0, 24, 17, 1] > img_t[0, 24, 17, 0]
    per_corner = uv[sphere.faces]
    img_c = render_mesh(sphere.vertices, sphere.faces, cams, uv=per_corner, texture=texture)[
        "image"
    ]
    np.testing.assert_allclose(np.asarray(img_c), img_t, atol=1e-5)


def _ray_cast(origin, dirs, tri):
    """Möller-Trumbore: nearest hit per ray. Returns face [R] (-1 miss), margin [R], gap [R]:
    margin = smallest barycentric of the hit (small near edges), gap = relative depth gap to the
    next hit along the ray (small where triangles cross)."""
    e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    p = np.cross(dirs[:, None], e2[None])
    det = np.einsum("rfk,fk->rf", p, e1)
    safe = np.where(np.abs(det) < 1e-12, 1e-12, det)
    s = origin[None, None] - tri[None, :, 0]
    u = np.einsum("rfk,rfk->rf", s, p) / safe
    q = np.cross(s, e1[None])
    v = np.einsum("rk,rfk->rf", dirs, q) / safe
    t = np.einsum("fk,rfk->rf", e2, q) / safe
    margin = np.minimum(np.minimum(u, v), 1 - u - v)
    hit = (np.abs(det) > 1e-12) & (margin >= 0) & (t > 0)
    t = np.where(hit, t, np.inf)
    order = np.argsort(t, axis=1)
    first, second = order[:, 0], order[:, 1]
    rows = np.arange(len(dirs))
    t1, t2 = t[rows, first], t[rows, second]
    face = np.where(np.isfinite(t1), first, -1)
    gap = np.full(len(dirs), np.inf)
    two = np.isfinite(t2)
    gap[two] = (t2[two] - t1[two]) / t1[two]
    return face, margin[rows, first], gap


def test_face_index_matches_numpy_ray_casting():
    rng = np.random.default_rng(0)
    small = rng.uniform(-0.6, 0.6, (52, 1, 3)) + 0.12 * rng.normal(size=(52, 3, 3))
    large = rng.uniform(-1.2, 1.2, (8, 3, 3))  # some wider than every window, some off-screen
    tri = np.concatenate([large, small])
    vertices, faces = tri.reshape(-1, 3), np.arange(3 * len(tri)).reshape(-1, 3)
    size = 48
    cams = orbit_cameras(
        np.array([20.0, 200.0]), np.array([10.0, -25.0]), 3.0, fov_deg=40.0, size=size
    )
    spans = np.asarray(
        body_render._face_spans(
            np.broadcast_to(vertices, (2,) + vertices.shape).astype(np.float32), faces, cams
        )
    )
    windows, _, brute = body_render._plan(spans)
    assert len(windows) >= 3 and np.sum(brute >= 0), "test must cover windows and brute force"
    got = np.asarray(rasterize(vertices, faces, cams)["face_index"])
    origin, dirs = _pixel_rays(cams)
    checked = 0
    for b in range(2):
        face, margin, gap = _ray_cast(origin[b], dirs[b].reshape(-1, 3), tri)
        clear = (face < 0) | ((margin > 1e-2) & (gap > 1e-3))
        assert clear.mean() > 0.8
        np.testing.assert_array_equal(got[b].reshape(-1)[clear], face[clear])
        checked += np.sum(clear & (face >= 0))
    assert checked > 1000


def test_chunked_rendering_equals_one_batch():
    capsule = trimesh.creation.capsule(height=1.0, radius=0.3)
    cams = orbit_cameras(np.linspace(0, 300, 5), np.linspace(-20, 40, 5), 2.5, size=32)
    whole = render_mesh(capsule.vertices, capsule.faces, cams)["image"]
    chunked = render_mesh(capsule.vertices, capsule.faces, cams, chunk=2)["image"]
    np.testing.assert_allclose(np.asarray(chunked), np.asarray(whole), atol=1e-6)


def test_builtin_body_silhouette_spans_its_projected_height():
    body = builtin_body()
    vertices, _ = body.forward(np.zeros(63, np.float32))
    vertices = np.asarray(vertices, np.float64)
    centre = 0.5 * (vertices.min(0) + vertices.max(0))
    cams = orbit_cameras(np.array([0.0, 90.0]), np.zeros(2), 2.7, size=96, target=centre)
    out = render_mesh(vertices, body.faces, cams, vertex_colors=body.vertex_colors)
    mask = np.asarray(out["mask"])
    f = 48 / np.tan(np.radians(30))
    for b, depth_axis in ((0, 2), (1, 0)):
        rows = np.nonzero(mask[b].any(axis=1))[0]
        depth = 2.7 - (vertices[:, depth_axis] - centre[depth_axis])
        v = 48 - f * (vertices[:, 1] - centre[1]) / depth
        assert abs(rows.min() - np.floor(v.min())) <= 1 and abs(rows.max() - np.floor(v.max())) <= 1
    assert np.asarray(out["image"])[mask].std() > 0.02  # shaded, not a flat silhouette


def test_image_grid_tiles_and_labels():
    images = np.stack([np.full((20, 30, 3), k / 4.0) for k in range(5)])
    sheet = image_grid(images, cols=3, pad=2)
    assert sheet.shape == (2 * 22 + 2, 3 * 32 + 2, 3) and sheet.dtype == np.uint8
    assert sheet[2 + 22 + 10, 2 + 32 + 15, 0] == round(4 / 4.0 * 255)
    labelled = image_grid(images, labels=[f"#{k}" for k in range(5)], cols=3, pad=2)
    assert np.any(labelled[2:14, 2:20] != sheet[2:14, 2:20])
    with pytest.raises(ValueError, match="labels"):
        image_grid(images, labels=["a"])
