"""Scene metrics against analytic shapes with known answers, and the CLI's errors."""
import math
import os

import jax.numpy as jnp
import numpy as np
import pytest
import trimesh

from interfusion_jax import metrics as m

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LEVEL = m.opaque_level(0.2)


def box_sdf(centre, half):
    centre, half = jnp.asarray(centre), jnp.asarray(half)

    def sdf(x):
        q = jnp.abs(x - centre) - half
        return jnp.linalg.norm(jnp.maximum(q, 0.0), axis=-1) + jnp.minimum(q.max(-1), 0.0)

    return sdf


def sphere_sdf(centre, r):
    return lambda x: jnp.linalg.norm(x - jnp.asarray(centre), axis=-1) - r


def density(sdf):
    """Crosses the opaque level on the shape's surface, linearly, so marching cubes finds it."""
    return lambda x: LEVEL - 50.0 * sdf(x)


def box_mesh(centre, half):
    return trimesh.creation.box(extents=2 * np.asarray(half)).apply_translation(centre)


BODY = box_mesh((0, 0, 0), (0.5, 0.5, 0.5))
# 40 nodes over [-1, 1]: the body's faces at +-0.5 fall between nodes (node 29.25).
RADIUS, RES = 1.0, 40
CELL = m.node_spacing(RADIUS, RES)


@pytest.fixture(scope="module")
def body_inside():
    return m.mesh_interior(BODY.vertices, BODY.faces, RADIUS, RES)


@pytest.fixture(scope="module")
def body_surface():
    return m.surface_points(BODY.vertices, BODY.faces, m.SURFACE_SAMPLES)


def test_sphere_iou_and_volume():
    a = m.field_region(density(sphere_sdf((-0.2, 0, 0), 0.5)), RADIUS, 64)
    b = m.field_region(density(sphere_sdf((0.2, 0, 0), 0.5)), RADIUS, 64)
    d, r = 0.4, 0.5
    lens = math.pi * (4 * r + d) * (2 * r - d) ** 2 / 12
    ball = 4 / 3 * math.pi * r**3
    assert m.iou(a.opaque, b.opaque) == pytest.approx(lens / (2 * ball - lens), abs=0.015)
    assert m.region_volume(a.opaque, RADIUS) == pytest.approx(ball, rel=0.03)
    assert m.iou(a.opaque, a.opaque) == 1.0
    assert math.isnan(m.iou(np.zeros((2, 2, 2), bool), np.zeros((2, 2, 2), bool)))


def test_interior_of_a_box_mesh(body_inside):
    opaque = m.field_region(density(box_sdf((0, 0, 0), (0.5, 0.5, 0.5))), RADIUS, RES).opaque
    np.testing.assert_array_equal(body_inside, opaque)
    assert body_inside.sum() == 20**3  # nodes 10..29 of each axis lie in (-0.5, 0.5)
    assert m.region_volume(body_inside, RADIUS) == pytest.approx(20**3 * CELL**3)


def test_penetration_of_a_box_half_inside_the_body(body_inside):
    obj = m.field_region(density(box_sdf((0.5, 0, 0), (0.25, 0.2, 0.2))), RADIUS, RES)
    assert m.penetration(obj.opaque, body_inside) == pytest.approx(0.5, abs=CELL / 0.5)
    outside = m.field_region(density(box_sdf((0.8, 0, 0), (0.1, 0.2, 0.2))), RADIUS, RES)
    assert m.penetration(outside.opaque, body_inside) == 0.0


def test_contact_gap_of_separated_and_overlapping_boxes(body_inside, body_surface):
    far = m.field_region(density(box_sdf((0.875, 0, 0), (0.075, 0.3, 0.3))), RADIUS, RES)
    dist = m.region_distance(body_surface[::10], far)  # far queries are slow; the gap needs few
    assert m.contact_gap(dist, far.opaque, body_inside) == pytest.approx(0.3, abs=CELL)
    assert m.contact_area(dist) == 0.0
    near = m.field_region(density(box_sdf((0.5, 0, 0), (0.25, 0.2, 0.2))), RADIUS, RES)
    assert m.contact_gap(m.region_distance(body_surface, near), near.opaque, body_inside) == 0.0


def test_contact_area_of_a_slab_above_the_body(body_surface):
    # Slab 5 mm above the top face: the whole top face (1 of 6) and, on the four sides, the
    # 15 mm strip below the top edge are within 2 cm.
    slab = m.field_region(density(box_sdf((0, 0, 0.655), (0.9, 0.9, 0.15))), RADIUS, RES)
    dist = m.region_distance(body_surface, slab)
    assert dist.min() == pytest.approx(0.005, abs=0.002)
    assert m.contact_area(dist) == pytest.approx((1 + 4 * 0.015) / 6, abs=0.004)
    assert m.contact_area(dist, within=0.03) == pytest.approx((1 + 4 * 0.025) / 6, abs=0.004)


def test_a_field_region_evaluates_the_field_once_per_node():
    field, points = density(sphere_sdf((0, 0, 0), 0.5)), []
    region = m.field_region(lambda x: points.append(len(x)) or field(x), RADIUS, RES)
    assert len(region.surface) and sum(points) == 2 ** 18  # RES^3 = 64 000 nodes, one padded chunk


def test_region_distance_is_zero_inside_and_infinite_without_a_region():
    ball = m.field_region(density(sphere_sdf((0, 0, 0), 0.5)), RADIUS, RES)
    d = m.region_distance(np.array([[0.0, 0, 0], [0.1, 0.2, 0], [0.8, 0, 0]]), ball)
    np.testing.assert_allclose(d, [0.0, 0.0, 0.3], atol=0.01)
    empty = m.field_region(lambda x: jnp.zeros(x.shape[0]), RADIUS, RES)
    assert len(empty.surface) == 0 and not empty.opaque.any()
    assert np.all(np.isinf(m.region_distance(np.zeros((2, 3)), empty)))


def test_surface_points_are_area_uniform():
    box = box_mesh((0, 0, 0), (0.5, 1.0, 1.5))  # faces of area 2 (z), 3 (y), 6 (x), twice each
    p = m.surface_points(box.vertices, box.faces, 100_000)
    on_face = np.isclose(np.abs(p), [0.5, 1.0, 1.5], atol=1e-9)
    assert np.all(on_face.any(-1))
    np.testing.assert_allclose(on_face.mean(0), np.array([6, 3, 2]) * 2 / 22, atol=0.005)
    np.testing.assert_array_equal(p, m.surface_points(box.vertices, box.faces, 100_000))


def test_chamfer_of_concentric_spheres():
    sphere = trimesh.creation.icosphere(subdivisions=5)
    a = m.surface_points(sphere.vertices * 0.5, sphere.faces, 50_000, seed=1)
    b = m.surface_points(sphere.vertices * 0.65, sphere.faces, 50_000, seed=2)
    assert m.chamfer(a, b) == pytest.approx(0.15, abs=0.003)
    assert m.chamfer(a, a) == 0.0
    assert math.isnan(m.chamfer(a, np.zeros((0, 3))))


def test_psnr_of_known_images():
    a = np.zeros((2, 8, 8, 3))
    assert m.psnr(a, a + 0.1) == pytest.approx(20.0)
    b = a.copy()
    b[0, 0, 0, 0] = 1.0  # one pixel channel fully wrong among 384
    assert m.psnr(a, b) == pytest.approx(10 * math.log10(384))
    assert m.psnr(a, a) == math.inf


def test_clip_metrics_on_known_features():
    text = np.array([[2.0, 0, 0], [0, 3.0, 0], [0, 0, 1.0]])  # own prompt first
    images = np.array([[1.0, 0, 0], [3.0, 1.0, 0], [1.0, 2.0, 0], [0.5, 0, 1.0]])
    out = m.clip_metrics(images, text)
    cos = [1.0, 3 / math.sqrt(10), 1 / math.sqrt(5), 0.5 / math.sqrt(1.25)]
    assert out["clip_score"] == pytest.approx(np.mean(cos))
    assert out["clip_r_precision"] == pytest.approx(0.5)  # views 3 and 4 prefer prompts 2 and 3
    assert m.clip_metrics(images, text, own=1)["clip_r_precision"] == pytest.approx(0.25)


def test_clip_prompts_are_the_release_interactions():
    from configs.riding_a_bike import get_config

    own = get_config().prompts.interaction
    prompts = m.clip_prompts(own)
    assert prompts[0] == own and len(prompts) == len(set(prompts)) == 11
    assert len(m.clip_prompts("a photo of a cat")) == 12


def test_scene_metrics_of_a_box_body_and_a_box_object():
    obj_c, obj_h = (0.0, 0.0, 0.75), (0.3, 0.3, 0.2)  # 5 cm above the body, 0.6 x 0.6 x 0.4
    reference = box_mesh(obj_c, obj_h)
    out = m.scene_metrics(density(box_sdf(obj_c, obj_h)),
                          density(box_sdf((0, 0, 0), (0.5, 0.5, 0.5))),
                          (BODY.vertices, BODY.faces), RADIUS, RES,
                          reference_object=(reference.vertices, reference.faces))
    assert out["penetration"] == 0.0
    assert out["contact_gap"] == pytest.approx(0.05, abs=CELL)
    assert out["contact_area"] == 0.0
    axis = np.linspace(-RADIUS, RADIUS, RES)
    nodes = [np.sum(np.abs(axis - c) < h) for c, h in zip(obj_c, obj_h)]
    assert out["object_volume"] == pytest.approx(np.prod(nodes) * CELL**3)
    assert out["object_volume"] == pytest.approx(0.144, rel=0.3)
    assert out["iou_human_body"] == out["iou_human"] == 1.0
    assert out["iou_object"] == 1.0
    assert out["chamfer_object"] < 0.01 and out["chamfer_human"] < 0.01


def test_cli_names_a_missing_run_dir_config_or_checkpoint(tmp_path, capsys):
    missing = tmp_path / "nope"
    (tmp_path / "empty").mkdir()
    (tmp_path / "no_ckpt").mkdir()
    (tmp_path / "no_ckpt" / "config.py").write_text("")
    for run_dir, named in ((missing, missing), (tmp_path / "empty", "config.py"),
                           (tmp_path / "no_ckpt", tmp_path / "no_ckpt" / "ckpt")):
        with pytest.raises(SystemExit) as e:
            m.main([str(run_dir)])
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and str(named) in err and "Traceback" not in err


def test_reference_metrics_follow_the_config():
    from interfusion_jax.config import load_config

    base = os.path.join(ROOT, "configs", "base.py")
    assert not m.has_reference(load_config(base))
    assert m.has_reference(load_config(base, ["reference.object_mesh=builtin:chair"]))
    assert m.has_reference(load_config(base, ["guidance.kind=reference"]))
    assert m.has_reference(load_config(os.path.join(ROOT, "configs", "demo.py")))
