"""Posed-body prior and guide body: grid lookups against analytic shapes and exact mesh queries."""

import jax
import numpy as np
import pytest
import trimesh
from scipy.spatial.transform import Rotation

from body import builtin_body, get_preset
from body.body_prior import BodyPrior
from body.guide_body import guide_body


def _far_points(prior, signed_distance, rng, n):
    """Random points in the grid's box more than one cell from the surface."""
    pts = rng.uniform(-prior.bound, prior.bound, (n, 3))
    return pts[np.abs(signed_distance(pts)) > prior.cell]


def _check(prior, pts, inside_ref, dist_ref):
    occ, dist = jax.jit(lambda p, x: p.query(x))(prior, pts.astype(np.float32))
    agree = np.mean((np.asarray(occ) > 0.5) == inside_ref)
    assert agree >= 0.995, agree
    err = np.abs(np.asarray(dist) - dist_ref)
    assert err.max() <= prior.cell, err.max() / prior.cell


def test_torus_against_analytic_distance():
    major, minor = 0.8, 0.3
    torus = trimesh.creation.torus(
        major_radius=major, minor_radius=minor, major_sections=48, minor_sections=24
    )
    prior = BodyPrior.build(torus.vertices, torus.faces, bound=1.5, resolution=48)

    def sdf(p):  # the mesh is inscribed in the analytic torus within 3 mm
        q = np.hypot(p[:, 0], p[:, 1]) - major
        return np.hypot(q, p[:, 2]) - minor

    pts = _far_points(prior, sdf, np.random.default_rng(0), 6000)
    _check(prior, pts, sdf(pts) < 0, np.abs(sdf(pts)))
    assert np.sum(sdf(pts) < 0) > 150  # enough points inside the tube


def _box_sdf(p, centre, half):
    q = np.abs(p - centre) - half
    return np.linalg.norm(np.maximum(q, 0), axis=-1) + np.minimum(q.max(-1), 0)


def test_overlapping_inverted_boxes_count_the_overlap_as_inside():
    # Two boxes that intersect (winding number 2 in the overlap), faces turned inwards (negative
    # winding numbers): |w| > 0.5 must still call the whole union inside.
    boxes = [
        ((-0.25, 0.0, 0.0), np.array([0.5, 0.3, 0.3])),
        ((0.35, 0.1, 0.05), np.array([0.4, 0.4, 0.2])),
    ]
    meshes = [trimesh.creation.box(extents=2 * h).apply_translation(c) for c, h in boxes]
    vertices = np.concatenate([m.vertices for m in meshes])
    faces = np.concatenate([meshes[0].faces, meshes[1].faces + len(meshes[0].vertices)])[:, ::-1]
    # Subdivide so the far-field closest-point transform sees more than the 8 corners per box.
    vertices, faces = trimesh.remesh.subdivide_to_size(vertices, faces, max_edge=0.1)
    prior = BodyPrior.build(vertices, faces, bound=1.0, resolution=40)

    def union(p):
        return np.minimum(*[_box_sdf(p, np.asarray(c), h) for c, h in boxes])

    def surface_distance(p):  # both boxes' surfaces, the parts inside the other one included
        return np.minimum(*[np.abs(_box_sdf(p, np.asarray(c), h)) for c, h in boxes])

    pts = _far_points(prior, surface_distance, np.random.default_rng(1), 6000)
    _check(prior, pts, union(pts) < 0, surface_distance(pts))
    overlap = np.array([[0.1, 0.05, 0.0]])
    assert float(prior.query(overlap)[0][0]) == pytest.approx(1.0)


def test_points_outside_the_box():
    sphere = trimesh.creation.icosphere(subdivisions=2, radius=0.5)
    prior = BodyPrior.build(sphere.vertices, sphere.faces, bound=1.0, resolution=24)
    pts = np.array([[3.0, 0.0, 0.0], [0.0, -1.5, 0.2], [0.0, 0.0, 0.0]], np.float32)
    occ, dist = prior.query(pts)
    np.testing.assert_allclose(np.asarray(occ), [0.0, 0.0, 1.0], atol=1e-6)
    # Upper bound for points outside the box, and at least their true distance (r = 0.5).
    exact = np.linalg.norm(pts, axis=-1) - 0.5
    assert np.all(np.asarray(dist)[:2] >= exact[:2] - 1e-3)
    assert np.all(np.asarray(dist)[:2] <= exact[:2] + prior.cell)
    with pytest.raises(ValueError, match="does not reach"):
        BodyPrior.build(sphere.vertices + 5.0, sphere.faces, bound=1.0, resolution=8)


def _winding_numbers_np(points, tri):
    """Reference: solid angles summed in float64 (Van Oosterom-Strackee), one point at a time."""
    out = []
    for p in points:
        a, b, c = (tri[:, k] - p for k in range(3))
        la, lb, lc = (np.linalg.norm(x, axis=-1) for x in (a, b, c))
        det = np.einsum("fk,fk->f", a, np.cross(b, c))
        den = (
            la * lb * lc
            + np.einsum("fk,fk->f", a, b) * lc
            + np.einsum("fk,fk->f", b, c) * la
            + np.einsum("fk,fk->f", c, a) * lb
        )
        out.append(np.sum(np.arctan2(det, den)) / (2 * np.pi))
    return np.asarray(out)


def _mesh_distance(points, tri):
    """Reference: exact point-triangle distances by trimesh, over the triangles whose bounding
    spheres could hold the nearest point (a lossless cull)."""
    centre = tri.mean(1)
    radius = np.linalg.norm(tri - centre[:, None], axis=-1).max(1)
    out = []
    for p in points:
        to_centre = np.linalg.norm(centre - p, axis=-1)
        cand = tri[to_centre - radius <= np.min(to_centre + radius)]
        closest = trimesh.triangles.closest_point(cand, np.repeat(p[None], len(cand), 0))
        out.append(np.linalg.norm(closest - p, axis=-1).min())
    return np.asarray(out)


def test_builtin_body_prior_against_exact_mesh_queries():
    body = builtin_body()
    guide = guide_body(body, get_preset("sitting"), "aug_rot")
    prior = BodyPrior.build(guide.vertices, guide.faces, bound=1.2, resolution=80)  # 3 cm cells
    tri = guide.vertices[guide.faces].astype(np.float64)
    rng = np.random.default_rng(2)
    # Points in the torso (centred on the mean vertex), around the body, and anywhere in the box.
    lo, hi = guide.vertices.min(0), guide.vertices.max(0)
    pts = np.concatenate(
        [
            rng.uniform(-0.15, 0.15, (30, 3)),
            rng.uniform(lo - 0.1, hi + 0.1, (120, 3)),
            rng.uniform(-1.2, 1.2, (20, 3)),
        ]
    )
    dist_ref = _mesh_distance(pts, tri)
    keep = dist_ref > prior.cell
    pts, dist_ref = pts[keep], dist_ref[keep]
    inside_ref = np.abs(_winding_numbers_np(pts, tri)) > 0.5
    assert inside_ref.sum() >= 5 and len(pts) >= 80
    _check(prior, pts, inside_ref, dist_ref)


class _FakeBody:
    """A rigid stand-in with the BodyModel interface: forward rotates about joint 0, then translates;
    body_pose shifts everything up by its sum so different poses give different meshes."""

    def __init__(self):
        rng = np.random.default_rng(3)
        self.rest_vertices = rng.normal(size=(40, 3)) * [0.3, 0.8, 0.2]
        self.rest_joints = rng.normal(size=(22, 3)) * 0.3
        self.faces = rng.integers(0, 40, (30, 3))

    def forward(self, body_pose, global_orient=None, transl=None, betas=None):
        shift = np.array([0.0, np.sum(body_pose), 0.0])
        rot = Rotation.from_rotvec(
            np.zeros(3) if global_orient is None else global_orient
        ).as_matrix()
        root = self.rest_joints[0] + shift
        t = np.zeros(3) if transl is None else np.asarray(transl)
        pose_pts = lambda x: (x + shift - root) @ rot.T + root + t
        return pose_pts(self.rest_vertices), pose_pts(self.rest_joints)


@pytest.mark.parametrize("mode", ["default", "aug_rot", "aug_trans"])
def test_guide_body_frames_and_modes(mode):
    body = _FakeBody()
    body_pose = np.full(63, 0.01)
    g = guide_body(body, body_pose, mode)
    shift = np.array([0.0, 0.63, 0.0])
    v = body.rest_vertices + shift
    j = body.rest_joints + shift
    if mode == "aug_rot":
        r = Rotation.from_euler("x", -30, degrees=True).as_matrix()
        v = (v - j[0]) @ r.T + j[0]
        j = (j - j[0]) @ r.T + j[0]
    offset = -(body.rest_joints[0]) if mode == "aug_trans" else -v.mean(0)
    v, j = v + offset, j + offset
    to_scene = lambda p: np.stack([p[..., 2], p[..., 0], p[..., 1]], -1)  # docs/method.md §2.1
    np.testing.assert_allclose(g.vertices, to_scene(v), atol=1e-5)
    np.testing.assert_allclose(g.head, to_scene(j[15]), atol=1e-5)
    np.testing.assert_array_equal(g.faces, body.faces)


def test_guide_body_rejects_unknown_mode_and_bad_pose():
    with pytest.raises(ValueError, match="default, aug_rot, aug_trans"):
        guide_body(_FakeBody(), np.zeros(63), "aug_scale")
    with pytest.raises(ValueError, match="63"):
        guide_body(_FakeBody(), np.zeros(72))


def test_builtin_guide_body_stands_up_in_the_scene():
    g = guide_body(builtin_body(), np.zeros(63), "default")
    np.testing.assert_allclose(g.vertices.mean(0), 0.0, atol=1e-5)
    extent = g.vertices.max(0) - g.vertices.min(0)
    assert extent[2] > 1.6 and g.head[2] > 0.5  # z up: height and head along +z
