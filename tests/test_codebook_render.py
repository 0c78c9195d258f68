"""Codebook renders in the release's look (docs/method.md §1.3): a NumPy port of neural_renderer's forward
pass (look_at camera, perspective, fill_back, per-face lighting, texel cubes, 2x super-sampling) as
the reference, a checkerboard texture read through the --texture loader, and the mirror that
pose_features applies before CLIP."""

import os

import numpy as np
import pytest
from PIL import Image

from pose import codebook as cb
from pose import gen_codebook
from body.body_render import NEURAL_RENDERER, look_at_cameras, render_mesh

FIX = os.path.join(os.path.dirname(__file__), "fixtures")
_NR_EPS = 1e-3  # neural_renderer's rasterizer eps (texel index clamp)
_EDGE = 2e-3  # samples whose barycentric margin to some face's edge is smaller are ambiguous


def _nr_eye(distance, elevation_deg, azimuth_deg):
    """neural_renderer.get_points_from_angles."""
    e, a = np.radians(elevation_deg), np.radians(azimuth_deg)
    return distance * np.array([np.cos(e) * np.sin(a), np.sin(e), -np.cos(e) * np.cos(a)])


def _nr_render(vertices, faces, texels, eye, size):
    """NumPy port of neural_renderer's Renderer(camera_mode='look_at', image_size=size).render with
    its other defaults (fill_back, black background, anti-aliasing, 30 degree viewing angle,
    ambient 0.5 + directional 0.5 from (0, 1, 0)). texels [F, T, T, T, 3].
    Returns image [size, size, 3] and ambiguous [size, size]: pixels with a sample near an edge."""
    ts = texels.shape[1]
    faces = np.concatenate([faces, faces[:, ::-1]])  # fill_back
    texels = np.concatenate([texels, texels.transpose(0, 3, 2, 1, 4)])
    tri_w = vertices[faces]  # lighting: per face, in the world frame
    n = np.cross(tri_w[:, 0] - tri_w[:, 1], tri_w[:, 2] - tri_w[:, 1])
    n /= np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-5)
    texels = texels * (0.5 + 0.5 * np.maximum(n[:, 1], 0.0))[:, None, None, None, None]
    z_axis = -eye / np.linalg.norm(eye)  # look_at the origin, up (0, 1, 0)
    x_axis = np.cross([0.0, 1.0, 0.0], z_axis)
    x_axis /= np.linalg.norm(x_axis)
    y_axis = np.cross(z_axis, x_axis)
    cam = (vertices - eye) @ np.stack([x_axis, y_axis, z_axis]).T
    width = np.tan(np.radians(30.0))  # perspective
    p = np.stack([cam[:, 0] / cam[:, 2] / width, cam[:, 1] / cam[:, 2] / width, cam[:, 2]], -1)
    tri = p[faces]
    (x0, y0, z0), (x1, y1, z1), (x2, y2, z2) = (tri[:, k].T for k in range(3))
    front = ~((y2 - y0) * (x1 - x0) < (y1 - y0) * (x2 - x0))  # the backside test
    big = 2 * size
    yi, xi = np.meshgrid(np.arange(big), np.arange(big), indexing="ij")
    xp = ((2.0 * xi + 1 - big) / big).reshape(-1, 1)
    yp = ((2.0 * yi + 1 - big) / big).reshape(-1, 1)
    area = (x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0)
    safe = np.where(area == 0, 1.0, area)
    w0 = ((x1 - xp) * (y2 - yp) - (y1 - yp) * (x2 - xp)) / safe
    w1 = ((x2 - xp) * (y0 - yp) - (y2 - yp) * (x0 - xp)) / safe
    w = np.stack([w0, w1, 1 - w0 - w1], -1)  # [P, 2F, 3]
    margin = w.min(-1)
    inside = front & (margin >= 0)
    wc = np.clip(w, 0, 1)
    wc /= wc.sum(-1, keepdims=True)
    zp = 1.0 / (wc[..., 0] / z0 + wc[..., 1] / z1 + wc[..., 2] / z2)
    ok = inside & (zp > 0.1) & (zp < 100)
    depth = np.where(ok, zp, np.inf)
    face = np.argmin(depth, axis=1)  # first minimum, as the strict `<` of the z-buffer keeps
    hit = np.isfinite(depth.min(axis=1))
    rows = np.arange(len(face))
    tif = wc[rows, face] * (ts - 1) * (zp[rows, face][:, None] / tri[face][:, :, 2])
    tif = np.clip(tif, 0, ts - 1 - _NR_EPS)
    base = tif.astype(int)
    frac = tif - base
    rgb = np.zeros((len(face), 3))
    for corner in np.ndindex(2, 2, 2):
        c = np.array(corner)
        weight = np.prod(np.where(c == 1, frac, 1 - frac), axis=-1)
        idx = base + c
        rgb += weight[:, None] * texels[face, idx[:, 0], idx[:, 1], idx[:, 2]]
    rgb = np.where(hit[:, None], rgb, 0.0)
    ambiguous = (front & (np.abs(margin) < _EDGE)).any(axis=1)
    rgb = rgb.reshape(big, big, 3)[::-1]  # the vertical flip
    ambiguous = ambiguous.reshape(big, big)[::-1]
    image = rgb.reshape(size, 2, size, 2, 3).mean(axis=(1, 3))  # 2x2 average pooling
    return image, ambiguous.reshape(size, 2, size, 2).sum(axis=(1, 3))


def _ours_as_nr(vertices, faces, eyes, size, **albedo):
    """render_mesh in the release's look from neural_renderer's eyes, mirrored as it draws."""
    cams = look_at_cameras(np.asarray(eyes), np.zeros(3), fov_deg=60.0, size=size)
    out = render_mesh(vertices, faces, cams, **albedo, **NEURAL_RENDERER)
    return np.asarray(out["image"])[:, :, ::-1]


def _octahedron_and_sheet():
    """A closed octahedron (face normals (+-1, +-1, +-1)/sqrt(3), wound either way) and an open
    triangle beside it, so back faces are seen and lit from their camera side."""
    octa = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]]) * 0.6
    octa = octa + [0.0, 0.05, 0.0]
    f = [[0, 2, 4], [2, 1, 4], [1, 3, 4], [3, 0, 4], [2, 0, 5], [1, 2, 5], [3, 1, 5], [0, 3, 5]]
    sheet = np.array([[0.7, -0.5, 0.3], [1.1, -0.1, -0.4], [0.6, 0.5, 0.1]])
    vertices = np.concatenate([octa, sheet])
    faces = np.array(f[:5] + [x[::-1] for x in f[5:]] + [[6, 7, 8]])  # mixed windings
    return vertices, faces


def test_release_look_matches_a_numpy_port_of_neural_renderer():
    vertices, faces = _octahedron_and_sheet()
    size = 32
    eyes = [_nr_eye(2.7, 15.0, 0.0), _nr_eye(2.7, -10.0, 90.0), _nr_eye(2.7, 40.0, 215.0)]
    rng = np.random.default_rng(0)
    face_rgb = rng.uniform(0.2, 1.0, (len(faces), 3))
    texels = np.broadcast_to(face_rgb[:, None, None, None], (len(faces), 8, 8, 8, 3))
    flat = np.broadcast_to(np.float32(cb.FLAT_ALBEDO), vertices.shape)
    flat_texels = np.broadcast_to(np.float64(cb.FLAT_ALBEDO), texels.shape)
    got = _ours_as_nr(vertices, faces, eyes, size, texels=texels)
    got_flat = _ours_as_nr(vertices, faces, eyes, size, vertex_colors=flat)
    shades = set()
    for b, eye in enumerate(eyes):
        for image, tex in ((got[b], texels), (got_flat[b], flat_texels)):
            want, ambiguous = _nr_render(vertices, faces, tex, eye, size)
            clear = ambiguous == 0
            assert clear.mean() > 0.85 and (want[clear].sum(-1) > 0).sum() > 60
            np.testing.assert_allclose(image[clear], want[clear], atol=1e-5)
            # an ambiguous sample can take any colour: it moves its pixel by at most 1/4
            bound = ambiguous[~clear][:, None] / 4 + 1e-5
            assert (np.abs(image[~clear] - want[~clear]) <= bound).all()
        shades |= set(np.round(got_flat[b][clear][:, 0].astype(float) / cb.FLAT_ALBEDO[0], 4))
    # lit faces (0.5 + 0.5 / sqrt(3)), unlit ones (0.5) and the sheet's lit camera side all appear
    sheet = np.cross(vertices[7] - vertices[6], vertices[8] - vertices[6])
    sheet_shade = 0.5 + 0.5 * abs(sheet[1]) / np.linalg.norm(sheet)
    assert {0.5, round(0.5 + 0.5 / np.sqrt(3), 4), round(sheet_shade, 4)} <= shades


def _write_texture_folder(folder, vertices, uv, polygons, image):
    """The release's smplx_uv folder layout: an .obj with 'v', 'vt' and 'f v/vt' and the albedo."""
    folder.mkdir(exist_ok=True)
    lines = [f"v {x:.7f} {y:.7f} {z:.7f}" for x, y, z in vertices]
    lines += [f"vt {u:.7f} {v:.7f}" for u, v in uv]
    lines += ["f " + " ".join(f"{i + 1}/{i + 1}" for i in poly) for poly in polygons]
    (folder / gen_codebook.TEXTURE_FILES[0]).write_text("\n".join(lines) + "\n")
    Image.fromarray(image).save(folder / gen_codebook.TEXTURE_FILES[1])


def test_checkerboard_texture_reads_the_right_texels(tmp_path):
    """A 4x4 board of distinct cells on a quad facing the camera: the render shows the PNG upright
    (v up, u right), each cell's colour x 0.5 (the light is at right angles to the quad's
    normal)."""
    n = 8  # grid cells per side; the loader splits each quad in two
    g = np.linspace(0.0, 1.0, n + 1)
    x, y = np.meshgrid(g - 0.5, g - 0.5, indexing="xy")
    vertices = np.stack([x.ravel(), y.ravel(), np.zeros(x.size)], -1)
    # uv inside (0, 1): neural_renderer's REPEAT would wrap a corner at 0 or 1 to the far side
    inset = 0.01
    uv = inset + (1 - 2 * inset) * (vertices[:, :2] + 0.5)
    corner = [j * (n + 1) + i for j in range(n) for i in range(n)]
    quads = [[k, k + 1, k + n + 2, k + n + 1] for k in corner]
    faces = np.array([[q[0], q[k], q[k + 1]] for q in quads for k in (1, 2)])
    cells = np.zeros((4, 4, 3), np.uint8)  # PNG row r (from the top), column c
    cells[..., 0] = 60 * np.arange(1, 5)[None, :]
    cells[..., 1] = 60 * np.arange(1, 5)[:, None]
    cells[..., 2] = 100 + 80 * ((np.arange(4)[:, None] + np.arange(4)) % 2)
    png = np.repeat(np.repeat(cells, 8, axis=0), 8, axis=1)  # 32 x 32, 8 px per cell
    _write_texture_folder(tmp_path / "uv", vertices, uv, quads, png)
    texels = np.asarray(gen_codebook.read_texture(str(tmp_path / "uv"), faces))
    assert texels.shape == (len(faces), cb.TEXEL_SIZE, cb.TEXEL_SIZE, cb.TEXEL_SIZE, 3)

    size, dist = 48, 1.2
    cams = look_at_cameras(np.array([[0.0, 0.0, dist]]), np.zeros(3), fov_deg=60.0, size=size)
    image = render_mesh(vertices, faces, cams, texels=texels, **NEURAL_RENDERER)["image"]
    image = np.asarray(image)[0]
    # Where each pixel's 2 x 2 samples meet the quad, in texture pixels (x right, y down), at
    # neural_renderer's texel centres u (W - 1), (1 - v) (H - 1); a pixel is pure when all its
    # samples, with their bilinear and texel neighbours, lie inside one cell.
    f = 0.5 * size / np.tan(np.radians(30.0))
    on_quad = ((np.arange(2 * size) + 0.5) / 2 - size / 2) / f * dist + 0.5  # x + 0.5, or 0.5 - y
    t = (inset + (1 - 2 * inset) * on_quad) * 31
    pure = (t % 8 > 1.2) & (t % 8 < 5.8) & (t > 0) & (t < 32)
    cell = (t // 8).astype(int)
    pure = pure[::2] & pure[1::2] & (cell[::2] == cell[1::2])
    cell = np.clip(cell[::2], 0, 3)
    ok = pure[:, None] & pure[None, :]
    assert ok.sum() > 200
    want_cells = 0.5 * cells[cell[:, None], cell[None, :]] / 255.0  # row from y, column from x
    np.testing.assert_allclose(image[ok], want_cells[ok], atol=1e-5)
    # and the whole view, cell borders included, as neural_renderer samples it
    eye = _nr_eye(dist, 0.0, 180.0)
    want, ambiguous = _nr_render(vertices, faces, texels.astype(np.float64), eye, size)
    clear = ambiguous == 0
    np.testing.assert_allclose(image[:, ::-1][clear], want[clear], atol=1e-5)


def test_texel_cubes_follow_neural_renderer_layout():
    """Texel (i, j, k) holds the albedo at barycentric (i, j, k) / (i + j + k) (texel (0, 0, 0) at
    uv 0), sampled bilinearly with pixel centres at u (W - 1), v (H - 1); corner uvs wrap as
    neural_renderer's REPEAT does (0 -> 1, 1 -> 0)."""
    from body.body_render import neural_renderer_texels

    rng = np.random.default_rng(1)
    image = rng.uniform(0, 1, (5, 7, 3)).astype(np.float32)
    uv_faces = np.array([[[0.0, 0.2], [0.9, 1.0], [0.4, 0.8]]], np.float32)
    got = np.asarray(neural_renderer_texels(uv_faces, image, size=4))[0]
    flipped = image[::-1].astype(np.float64)  # row 0 = v 0
    wrapped = np.where(uv_faces[0] > 0, np.fmod(uv_faces[0], 1), 1 + np.fmod(uv_faces[0], 1))
    for i, j, k in np.ndindex(4, 4, 4):
        w = np.array([i, j, k], np.float64) / 3
        u, v = (w / max(w.sum(), 1e-12)) @ wrapped
        x, y = u * 6, v * 4
        x0, y0 = int(x), int(y)
        x1, y1 = min(x0 + 1, 6), min(y0 + 1, 4)
        fx, fy = x - x0, y - y0
        want = ((1 - fx) * (1 - fy) * flipped[y0, x0] + fx * (1 - fy) * flipped[y0, x1]
                + (1 - fx) * fy * flipped[y1, x0] + fx * fy * flipped[y1, x1])
        np.testing.assert_allclose(got[i, j, k], want, atol=1e-5, err_msg=str((i, j, k)))


@pytest.fixture(scope="module")
def smplx_body():
    from body import load_body

    return load_body(os.path.join(FIX, "smplx", "SMPLX_NEUTRAL.npz"))


def test_views_are_the_release_eyes_and_clip_sees_them_mirrored(smplx_body):
    from pose.clip_model import load_clip

    views = cb.Views(size=32, elevation_std_deg=0.0)
    eyes = np.asarray(views.cameras([0], 0).eye)
    release = np.stack([_nr_eye(cb.DISTANCE, 0.0, a) for a in (0, 90, 180, 270)])
    dist = np.linalg.norm(eyes[:, None] - release[None], axis=-1)
    assert np.sort(dist.min(axis=1)).max() < 1e-5 and len(set(dist.argmin(axis=1))) == 4

    clip = load_clip(os.path.join(FIX, "clip"))
    poses = np.zeros((1, 63), np.float32)
    images = np.asarray(cb.render_views(smplx_body, poses, views, [0])[0][0])
    assert images[:, 0, 0].max() == 0.0 and images.max() > 0.3  # black background, lit body
    for mirror, seen in ((True, images[:, :, ::-1]), (False, images)):
        want = np.asarray(clip.image_features(seen)).mean(axis=0)
        got = cb.pose_features(smplx_body, clip, poses, cb.Views(size=32, elevation_std_deg=0.0,
                                                                  mirror=mirror), chunk=1)[0]
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
