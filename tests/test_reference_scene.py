"""Reference scene and mesh ray casting: a NumPy ray-plane reference, analytic renders of a box and
a sphere, the builtin objects against their presets' guide bodies, mesh files and errors."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.spatial
import trimesh

from body import get_preset, guide_body, load_body
from nerf.cameras import generate_rays, look_at
from nerf.material import make_shading, shade
from body.body_prior import _inside
from interfusion_jax.mesh_raycast import raycast, render_reference
from interfusion_jax.reference_scene import ReferenceScene, object_mesh, reference_scene


def _reference_hits(vertices, faces, origins, directions):
    """Nearest hits by ray-plane intersection and barycentric coordinates (not Moller-Trumbore):
    (t [N], inf on a miss; edge [N] bool: the hit lies within 1e-4 of a face edge, a grazing ray
    whose hit or miss float rounding may decide)."""
    tri = np.asarray(vertices, np.float64)[faces]
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    t_out = np.full(len(origins), np.inf)
    edge = np.zeros(len(origins), bool)
    for i, (o, d) in enumerate(zip(origins, directions)):
        denom = normal @ d
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.einsum("fk,fk->f", normal, tri[:, 0] - o) / denom
        bary = trimesh.triangles.points_to_barycentric(tri, o + np.nan_to_num(t)[:, None] * d)
        ok = (np.abs(denom) > 1e-12) & (t > 0) & np.all(bary >= -1e-4, axis=1)
        if ok.any():
            j = np.argmin(np.where(ok, t, np.inf))
            t_out[i], edge[i] = t[j], bary[j].min() < 1e-4
    return t_out, edge


def _sphere_and_torus():
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=0.5)
    torus = trimesh.creation.torus(0.6, 0.15, major_sections=40, minor_sections=14)
    torus.apply_translation((0.3, 0.2, 0.1))  # interlocked with the sphere
    vertices = np.concatenate([sphere.vertices, torus.vertices])
    faces = np.concatenate([sphere.faces, torus.faces + len(sphere.vertices)])
    return vertices, faces, len(sphere.faces)


def test_raycast_matches_numpy_reference_with_and_without_a_mask():
    vertices, faces, n_sphere = _sphere_and_torus()
    rng = np.random.default_rng(0)
    n = 450  # not a multiple of the ray chunk
    origins = rng.normal(size=(n, 3))
    origins *= rng.uniform(0.2, 3.0, (n, 1)) / np.linalg.norm(origins, axis=1, keepdims=True)
    directions = rng.uniform(-0.9, 0.9, (n, 3)) - origins  # some from inside, both sides hit
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    cast = jax.jit(raycast)
    everything, sphere = np.ones(len(faces), bool), np.arange(len(faces)) < n_sphere
    for face_mask, ref_faces in ((everything, faces), (sphere, faces[:n_sphere])):
        t, face = (np.asarray(a) for a in cast(vertices, faces, origins, directions, face_mask))
        t_ref, edge = _reference_hits(vertices, ref_faces, origins, directions)
        hit, hit_ref = np.isfinite(t), np.isfinite(t_ref)
        assert 150 < hit_ref.sum() < n - 100  # hits and misses both tested
        assert np.array_equal(hit[~edge], hit_ref[~edge])
        both = hit & hit_ref
        np.testing.assert_allclose(t[both], t_ref[both], atol=1e-4)
        assert np.all(face[~hit] == -1) and np.all(face[hit] < len(ref_faces))
        # The face found contains the hit point (with the mask: a sphere face, which sort first).
        tri = vertices[faces[face[hit]]]
        points = origins[hit] + t[hit, None] * directions[hit]
        assert trimesh.triangles.points_to_barycentric(tri, points).min() > -1e-3
    # Ray chunks cast side by side (the accelerators' default) find the same hits.
    batched = jax.jit(functools.partial(raycast, ray_batch=5))
    t_batched, _ = batched(vertices, faces, origins, directions, sphere)
    np.testing.assert_array_equal(np.asarray(t_batched), t)


_BALL = (-0.75, 0.25, -0.35)


def _box_scene():
    """Object: a box [-0.4, 0.4] x [-0.3, 0.3] x [-0.2, 0.2]; human: a sphere of radius 0.3 at
    _BALL, behind the box as the render's camera sees it, and partly hidden by it."""
    box = trimesh.creation.box(extents=(0.8, 0.6, 0.4))
    sphere = trimesh.creation.icosphere(subdivisions=4, radius=0.3).apply_translation(_BALL)
    return ReferenceScene(
        vertices=np.concatenate([box.vertices, sphere.vertices]).astype(np.float32),
        faces=np.concatenate([box.faces, sphere.faces + 8]).astype(np.int32),
        face_colors=np.repeat([[0.9, 0.2, 0.1], [0.2, 0.4, 0.8]], [12, len(sphere.faces)], 0),
        face_part=np.repeat(np.int32([0, 1]), [12, len(sphere.faces)]),
    )


def _slab(origins, directions, lo, hi):
    """Analytic ray-box entry: (hit [N], t [N], outward normal of the entered face [N, 3],
    clear [N]: the ray is more than 1 mm from the box's edges, where rounding may decide)."""
    with np.errstate(divide="ignore"):
        t0, t1 = (lo - origins) / directions, (hi - origins) / directions
    near = np.sort(np.minimum(t0, t1), axis=1)
    enter, leave = near[:, 2], np.maximum(t0, t1).min(1)
    axis = np.minimum(t0, t1).argmax(1)
    normal = np.eye(3)[axis] * -np.sign(directions[np.arange(len(axis)), axis])[:, None]
    clear = (np.abs(leave - enter) > 1e-3) & (near[:, 2] - near[:, 1] > 1e-3)
    return (enter <= leave) & (enter > 0), enter, normal, clear


def _sphere(origins, directions, centre, radius):
    """Analytic ray-sphere entry: (hit [N], t [N] (inf on a miss), clear [N]: the ray passes more
    than 1% of the radius from the silhouette, where the icosphere's facets may decide; core [N]:
    within 80% of the radius from the centre, where they change the depth by < 2 mm)."""
    along = np.sum((centre - origins) * directions, 1)
    miss = np.linalg.norm(origins + along[:, None] * directions - centre, axis=1)
    hit = miss < radius
    t = np.where(hit, along - np.sqrt(np.maximum(radius**2 - miss**2, 0)), np.inf)
    return hit, t, np.abs(miss - radius) > 0.01 * radius, miss < 0.8 * radius


def test_render_reference_of_a_box_and_a_sphere_matches_analytic_shapes():
    scene = _box_scene()
    eye = jnp.array([1.4, 0.7, 0.9])
    c2w = look_at(eye, jnp.array([-0.2, 0.1, -0.1]), jnp.array([0.0, 0.0, 1.0]))
    origins, directions = generate_rays(c2w, jnp.deg2rad(60.0), 48, 48)
    o, d = np.asarray(origins, np.float64), np.asarray(directions, np.float64)
    shading = make_shading(light_position=(1.0, -2.0, 3.0), mode="diffuse")
    background = jnp.full(origins.shape, 0.5)
    shade_fn = functools.partial(shade, shading)

    def draw(parts, shade_fns=None):
        fns = shade_fns or {part: shade_fn for part in parts}
        out = jax.jit(lambda s, o, d, b: render_reference(s, o, d, fns, b))(
            scene, origins, directions, background)
        return {k: np.asarray(v) for k, v in out.items()}

    lo, hi = np.array([-0.4, -0.3, -0.2]), np.array([0.4, 0.3, 0.2])
    in_box, t_box, n_box, box_clear = _slab(o, d, lo, hi)
    in_ball, t_ball, ball_clear, core = _sphere(o, d, np.array(_BALL), 0.3)
    assert in_box.sum() > 250 and np.sum(in_ball & ~in_box) > 40 and np.sum(in_box & in_ball) > 20

    # The human alone: the sphere, whether or not the box is in front of it.
    human = draw(("human",))
    assert np.array_equal(human["opacity"][ball_clear] == 1, in_ball[ball_clear])
    np.testing.assert_allclose(human["depth"][core], t_ball[core], atol=2e-3)

    # Both: the box where it is nearer, with the material's diffuse shading; background on a miss.
    both = draw(("object", "human"))
    clear = box_clear & ball_clear
    assert np.array_equal(both["opacity"][clear] == 1, (in_box | in_ball)[clear])
    box = in_box & (t_box < t_ball - 0.01) & clear
    np.testing.assert_allclose(both["depth"][box], t_box[box], atol=1e-4)
    np.testing.assert_allclose(both["normal"][box], n_box[box], atol=1e-5)
    to_light = np.asarray(shading.light_position) - (o + t_box[:, None] * d)
    lambert = np.maximum(np.sum(n_box * to_light, 1) / np.linalg.norm(to_light, axis=1), 0)
    expected = np.array([0.9, 0.2, 0.1]) * (0.1 + 0.9 * lambert[:, None])
    np.testing.assert_allclose(both["rgb"][box], expected[box], atol=1e-4)
    # each part with its own field's shading: the object's albedo, the human's diffuse
    mixed = draw(("object", "human"), {"object": functools.partial(
        shade, make_shading(light_position=(1.0, -2.0, 3.0), mode="albedo")),
        "human": shade_fn})
    np.testing.assert_allclose(mixed["rgb"][box], np.broadcast_to([0.9, 0.2, 0.1], (box.sum(), 3)),
                               atol=1e-6)
    ball = in_ball & ~in_box & clear
    np.testing.assert_allclose(mixed["rgb"][ball], both["rgb"][ball], atol=1e-6)
    empty = ~in_box & ~in_ball & clear
    np.testing.assert_allclose(both["rgb"][empty], 0.5)
    assert np.all(both["depth"][empty] == 0) and np.all(both["normal"][empty] == 0)
    lit = both["opacity"] == 1
    np.testing.assert_allclose(np.linalg.norm(both["normal"][lit], axis=1), 1, atol=1e-5)
    assert np.all(np.sum(both["normal"][lit] * d[lit], axis=1) <= 0)  # facing the camera


@functools.lru_cache(maxsize=None)
def _guide(preset, mode):
    return guide_body(load_body(None), get_preset(preset), mode)


def _volume_samples(vertices, faces, per_part=250):
    """Points inside a mesh made of closed parts, each weighted by its part's volume share: a
    regular grid over each part's bounds, kept where the part's winding number says inside."""
    mesh = trimesh.Trimesh(vertices, faces, process=False)
    points, weights = [], []
    for part in mesh.split(only_watertight=False):
        lo, hi = part.bounds
        side = int(np.ceil(per_part ** (1 / 3)))
        axes = [np.linspace(a, b, side + 2)[1:-1] for a, b in zip(lo, hi)]
        grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
        inside = grid[_inside(grid, part.vertices[part.faces], "part")]
        points.append(inside)
        weights.append(np.full(len(inside), abs(part.volume) / len(inside)))
    return np.concatenate(points), np.concatenate(weights)


@pytest.mark.parametrize(
    "preset, mode, spec",
    [
        ("sitting", "default", "builtin:chair"),
        ("sitting", "aug_rot", "builtin:chair"),
        ("riding", "default", "builtin:bike"),
        ("carrying", "default", "builtin:box"),
    ],
)
def test_builtin_object_fits_its_preset(preset, mode, spec):
    guide = _guide(preset, mode)
    vertices, faces, colors = object_mesh(spec, guide)
    assert vertices.dtype == np.float32 and faces.dtype == np.int32 and colors.dtype == np.float32
    assert colors.shape == faces.shape and colors.min() >= 0 and colors.max() <= 1
    assert np.abs(vertices).max() < 2.0
    size = vertices.max(0) - vertices.min(0)
    assert 0.25 < size.max() < 2.0, size

    # Penetration: the share of the object's volume inside the body (exact winding numbers of
    # the body mesh, the inside test that BodyPrior.build runs near the surface).
    points, weights = _volume_samples(vertices, faces)
    body_triangles = np.asarray(guide.vertices, np.float64)[guide.faces]
    inside = _inside(points, body_triangles, "body")
    assert np.sum(weights[inside]) / np.sum(weights) < 0.01

    # Gap: the nearest pair of surface samples (an upper bound of the true gap).
    body = trimesh.Trimesh(guide.vertices, guide.faces, process=False)
    obj = trimesh.Trimesh(vertices, faces, process=False)
    body_points = trimesh.sample.sample_surface(body, 40000, seed=0)[0]
    obj_points = trimesh.sample.sample_surface(obj, 20000, seed=1)[0]
    tree = scipy.spatial.cKDTree(np.concatenate([body_points, guide.vertices]))
    assert tree.query(np.concatenate([obj_points, vertices]))[0].min() < 0.02


def test_reference_scene_parts_and_body_colours():
    guide = _guide("carrying", "default")
    body = load_body(None)
    scene = reference_scene(guide, "builtin:box", body.vertex_colors)
    n_obj = np.sum(scene.face_part == 0)
    assert n_obj == 12 and np.sum(scene.face_part == 1) == len(guide.faces)
    expected = np.asarray(body.vertex_colors)[guide.faces].mean(1)
    np.testing.assert_allclose(scene.face_colors[n_obj:], expected, atol=1e-6)
    np.testing.assert_array_equal(scene.vertices[scene.faces[n_obj:]], guide.vertices[guide.faces])
    plain = reference_scene(guide, "builtin:box")
    assert np.ptp(plain.face_colors[n_obj:], axis=0).max() == 0  # one skin tone
    with pytest.raises(ValueError, match="body_colors"):
        reference_scene(guide, "builtin:box", body.vertex_colors[:10])


def _coloured_box(extents, rgb, centre):
    mesh = trimesh.creation.box(extents=extents).apply_translation(centre)
    mesh.visual.face_colors = np.tile(np.append(np.asarray(rgb) * 255, 255), (12, 1))
    return mesh


def test_mesh_files_round_trip_with_colours(tmp_path):
    a = _coloured_box((0.4, 0.3, 0.2), (1.0, 0.0, 0.0), (0.0, 0.0, 0.0))
    face_colors = np.array(a.visual.face_colors)
    face_colors[6:] = (0, 255, 0, 255)  # two colours: PLY keeps face colours
    a.visual.face_colors = face_colors
    a.export(tmp_path / "a.ply")
    vertices, faces, colors = object_mesh(str(tmp_path / "a.ply"), None)
    np.testing.assert_allclose(vertices[faces], a.vertices[a.faces], atol=1e-6)
    np.testing.assert_allclose(colors, np.asarray(a.visual.face_colors[:, :3]) / 255)

    # A glb scene: two meshes with their node transforms (glTF stores vertex colours).
    b = _coloured_box((0.2, 0.2, 0.2), (0.0, 0.0, 1.0), (0.0, 0.0, 0.0))
    scene = trimesh.Scene()
    scene.add_geometry(a, transform=trimesh.transformations.translation_matrix((0.5, 0, 0)))
    scene.add_geometry(b, transform=trimesh.transformations.translation_matrix((0, 0, 0.7)))
    scene.export(tmp_path / "s.glb")
    vertices, faces, colors = object_mesh(str(tmp_path / "s.glb"), None)
    assert len(faces) == 24
    np.testing.assert_allclose(vertices.min(0), [-0.1, -0.15, -0.1], atol=1e-6)
    np.testing.assert_allclose(vertices.max(0), [0.7, 0.15, 0.8], atol=1e-6)
    blue = np.all(np.isclose(colors, [0, 0, 1], atol=1e-6), axis=1)
    assert blue.sum() == 12 and np.all(vertices[faces[blue]][..., 2] > 0.55)
    assert np.all(colors[~blue, 2] < 1e-6)  # the red and green box, blended at its corners


def test_mesh_without_colours_is_grey(tmp_path):
    trimesh.creation.box().export(tmp_path / "plain.obj")
    _, _, colors = object_mesh(str(tmp_path / "plain.obj"), None)
    assert np.ptp(colors) == 0 and 0 < colors[0, 0] < 1


def test_errors_are_one_line_value_errors(tmp_path):
    (tmp_path / "junk.ply").write_bytes(b"ply\nformat nonsense\n\x00\x01")
    (tmp_path / "a.stl").write_text("solid")
    cases = {
        "x.glb": "no file 'x.glb'",
        "builtin:sofa": "unknown builtin 'builtin:sofa'; known: builtin:chair, builtin:bike",
        str(tmp_path / "junk.ply"): "cannot read a mesh from",
        str(tmp_path / "a.stl"): "is not one of .obj, .ply, .glb",
    }
    for spec, message in cases.items():
        with pytest.raises(ValueError) as error:
            object_mesh(spec, None)
        assert str(error.value).startswith("reference.object_mesh: ")
        assert message in str(error.value) and "\n" not in str(error.value)
    with pytest.raises(ValueError, match="parts"):
        render_reference(_box_scene(), jnp.zeros((4, 3)), jnp.ones((4, 3)), {"chair": None}, None)
