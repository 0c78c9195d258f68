"""SMPL-X forward vs the smplx PyTorch package (fixture), the built-in body and the pose presets."""
import os

import jax
import numpy as np
import pytest
import trimesh
from scipy.spatial.transform import Rotation

from body import load_body
from body.body_model import BODY_JOINT_NAMES, load_smplx
from body.builtin_body import builtin_body
from body.presets import LYING_GLOBAL_ORIENT, PRESETS, get_preset

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "smplx")
J = {n: i for i, n in enumerate(BODY_JOINT_NAMES)}


def _fwd(model, body_pose, global_orient=None, transl=None, betas=None):
    return model.forward(body_pose, global_orient, transl, betas)


_forward = jax.jit(_fwd)


def _batched_forward(model, body_pose, global_orient=None, transl=None, betas=None):
    axes = tuple(None if x is None else 0 for x in (global_orient, transl, betas))
    v, j = jax.jit(jax.vmap(_fwd, in_axes=(None, 0) + axes))(model, body_pose, global_orient, transl, betas)
    return np.asarray(v), np.asarray(j)


def test_smplx_matches_reference_package():
    ref = np.load(os.path.join(FIXTURE, "reference.npz"))
    model = load_smplx(os.path.join(FIXTURE, "SMPLX_NEUTRAL.npz"))
    v, j = _batched_forward(model, ref["body_pose"], ref["global_orient"], ref["transl"], ref["betas"])
    # smplx appends vertex/landmark joints after its 55 skeleton joints; the fixture keeps the 55.
    assert j.shape == ref["joints"].shape == (8, 55, 3)
    np.testing.assert_allclose(v, ref["vertices"], atol=1e-5)
    np.testing.assert_allclose(j, ref["joints"], atol=1e-5)
    # Single-pose calls agree with the vmapped batch.
    v0, j0 = _forward(model, ref["body_pose"][3], ref["global_orient"][3], ref["transl"][3], ref["betas"][3])
    np.testing.assert_allclose(np.asarray(v0), v[3], atol=1e-6)
    np.testing.assert_allclose(np.asarray(j0), j[3], atol=1e-6)
    assert model.name == "smplx" and model.faces.dtype == np.int32 and model.vertex_colors is None


def test_smplx_loader_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.npz"):
        load_smplx(tmp_path / "nowhere.npz")
    with np.load(os.path.join(FIXTURE, "SMPLX_NEUTRAL.npz")) as data:
        arrays = {k: data[k] for k in data.files if k != "weights"}
    bad = tmp_path / "SMPLX_NEUTRAL.npz"
    np.savez(bad, **arrays)
    with pytest.raises(KeyError, match=r"SMPLX_NEUTRAL.npz.*'weights'"):
        load_smplx(bad)
    with pytest.raises(ValueError, match="body_pose: expected 63"):
        load_smplx(os.path.join(FIXTURE, "SMPLX_NEUTRAL.npz")).forward(np.zeros((2, 63)))
    with pytest.raises(ValueError, match="betas"):
        load_smplx(os.path.join(FIXTURE, "SMPLX_NEUTRAL.npz")).forward(np.zeros(63), betas=np.zeros(301))


def _numpy_smplx(data, body_pose, hand_pose):
    """Independent NumPy SMPL-X LBS (smplx.lbs.lbs, betas 0): body_pose [63], hand_pose [90] (left
    then right fingers, axis-angle), jaw and eyes at zero -> vertices [V,3]."""
    parents = np.asarray(data["kintree_table"])[0].astype(np.int64)
    full = np.zeros((55, 3))
    full[1:22], full[25:] = body_pose.reshape(21, 3), hand_pose.reshape(30, 3)
    rots = Rotation.from_rotvec(full).as_matrix()
    v_template = data["v_template"].astype(np.float64)
    joints = data["J_regressor"] @ v_template
    feature = (rots[1:] - np.eye(3)).reshape(-1)
    v_posed = v_template + np.einsum("vck,k->vc", data["posedirs"], feature)
    world = np.zeros((55, 4, 4))
    for j in range(55):
        local = np.eye(4)
        local[:3, :3] = rots[j]
        local[:3, 3] = joints[j] - (joints[parents[j]] if j else 0.0)
        world[j] = world[parents[j]] @ local if j else local
    skin = world.copy()
    skin[:, :3, 3] -= np.einsum("jab,jb->ja", world[:, :3, :3], joints)
    per_vertex = np.einsum("vj,jab->vab", data["weights"], skin)
    return np.einsum("vab,vb->va", per_vertex[:, :3, :3], v_posed) + per_vertex[:, :3, 3]


def test_smplx_mean_hand_pose_poses_the_fingers():
    path = os.path.join(FIXTURE, "SMPLX_NEUTRAL.npz")
    with np.load(path) as f:
        data = {k: f[k] for k in f.files}
    pose = np.random.default_rng(3).normal(size=63).astype(np.float32) * 0.4
    mean_hands = np.concatenate([data["hands_meanl"], data["hands_meanr"]])
    assert np.abs(mean_hands).max() > 0.1  # the fixture's hands are far from flat
    flat = np.asarray(_forward(load_smplx(path), pose)[0])
    relaxed = np.asarray(_forward(load_smplx(path, flat_hand_mean=False), pose)[0])
    np.testing.assert_allclose(flat, _numpy_smplx(data, pose, np.zeros(90)), atol=1e-5)
    np.testing.assert_allclose(relaxed, _numpy_smplx(data, pose, mean_hands), atol=1e-5)
    assert np.abs(relaxed - flat).max() > 0.05
    # The built-in body has no finger joints: it keeps its own hands either way.
    builtin = [np.asarray(_forward(load_body(None, flat_hand_mean=f), pose)[0]) for f in (True, False)]
    np.testing.assert_array_equal(builtin[0], builtin[1])


def test_smplx_mean_hand_pose_needs_its_keys(tmp_path):
    with np.load(os.path.join(FIXTURE, "SMPLX_NEUTRAL.npz")) as data:
        arrays = {k: data[k] for k in data.files if k != "hands_meanr"}
    np.savez(tmp_path / "SMPLX_NEUTRAL.npz", **arrays)
    load_smplx(tmp_path / "SMPLX_NEUTRAL.npz")  # flat hands do not need it
    with pytest.raises(KeyError, match="hands_meanr"):
        load_smplx(tmp_path / "SMPLX_NEUTRAL.npz", flat_hand_mean=False)


@pytest.fixture(scope="module")
def body():
    return builtin_body()


def test_builtin_body_is_a_closed_adult_sized_mesh(body):
    verts = np.asarray(body.v_template)
    mesh = trimesh.Trimesh(verts, body.faces, process=False)
    assert mesh.is_watertight and mesh.is_winding_consistent and mesh.volume > 0.04
    assert 5_000 <= len(verts) <= 15_000
    assert mesh.edges_unique_length.max() < 0.03  # small triangles only
    assert 1.6 < np.ptp(verts[:, 1]) < 1.9
    assert body.vertex_colors.shape == verts.shape and load_body(None).name == "builtin"
    # T-pose: arms along x, the head on top, the left side at +x, the feet forward (+z).
    joints = np.asarray(body.j_template)
    assert joints[J["left_wrist"], 0] > 0.6 and joints[J["right_wrist"], 0] < -0.6
    assert joints[J["head"], 1] == joints[:, 1].max()
    assert joints[J["left_foot"], 2] > joints[J["left_ankle"], 2]


def test_builtin_zero_pose_is_the_rest_pose(body):
    v, j = _forward(body, np.zeros(63, np.float32))
    np.testing.assert_allclose(np.asarray(v), np.asarray(body.v_template), atol=1e-6)
    np.testing.assert_allclose(np.asarray(j), np.asarray(body.j_template), atol=1e-6)


def test_bending_the_elbow_moves_only_forearm_and_hand(body):
    pose = np.zeros((21, 3), np.float32)
    pose[J["left_elbow"] - 1] = (0.0, -np.pi / 2, 0.0)
    v, j = _forward(body, pose.reshape(-1))
    rest = np.asarray(body.v_template)
    joints = np.asarray(body.j_template)
    moved = np.linalg.norm(np.asarray(v) - rest, axis=1) > 1e-5
    elbow, wrist = joints[J["left_elbow"]], joints[J["left_wrist"]]
    # Skinning blends across the elbow over a few centimetres of the upper arm, no further.
    assert moved.any() and np.all(rest[moved, 0] > elbow[0] - 0.08)
    hand = rest[:, 0] > wrist[0] + 0.04
    assert np.all(moved[hand])
    # The hand turns rigidly about the elbow, a quarter turn forward (+z) for the left arm.
    np.testing.assert_allclose(np.linalg.norm(np.asarray(v)[hand] - elbow, axis=1),
                               np.linalg.norm(rest[hand] - elbow, axis=1), atol=1e-5)
    np.testing.assert_allclose(np.asarray(j)[J["left_wrist"]] - elbow,
                               [0.0, 0.0, wrist[0] - elbow[0]], atol=0.02)


def test_vmap_equals_single_pose(body):
    poses = np.stack(list(PRESETS.values()))
    v, j = _batched_forward(body, poses)
    for i, p in enumerate(poses):
        vi, ji = _forward(body, p)
        np.testing.assert_allclose(v[i], np.asarray(vi), atol=1e-5)
        np.testing.assert_allclose(j[i], np.asarray(ji), atol=1e-5)


def _angle(a, b, c):
    """Angle at b (degrees) of the path a-b-c."""
    u, w = a - b, c - b
    return np.degrees(np.arccos(np.dot(u, w) / np.linalg.norm(u) / np.linalg.norm(w)))


def test_presets_have_their_geometry(body):
    names = list(PRESETS)
    v, j = _batched_forward(body, np.stack([PRESETS[n] for n in names]))
    jt = {n: j[i] for i, n in enumerate(names)}
    for name in names:
        for side in ("left", "right"):
            knee = _angle(*(jt[name][J[f"{side}_{p}"]] for p in ("hip", "knee", "ankle")))
            hip_flex = _angle(jt[name][J["spine1"]], jt[name][J["pelvis"]], jt[name][J[f"{side}_knee"]])
            if name == "sitting":
                assert 70 < knee < 110 and 70 < hip_flex < 110, (name, knee, hip_flex)
            elif name == "riding":
                assert 90 < knee < 150 and hip_flex < 140, (name, knee, hip_flex)
            else:
                assert knee > 160 and hip_flex > 160, (name, knee, hip_flex)
    standing = jt["standing"]
    ankles_apart = {n: abs(jt[n][J["left_ankle"], 0] - jt[n][J["right_ankle"], 0]) for n in names}
    assert ankles_apart["riding"] > 0.4 > ankles_apart["standing"]
    for name in ("standing", "lying"):  # arms hang below the shoulders, at the sides
        for side in ("left", "right"):
            assert jt[name][J[f"{side}_wrist"], 1] < jt[name][J[f"{side}_shoulder"], 1] - 0.4
    chest_z = standing[J["spine3"], 2]
    for name, min_forward in (("riding", 0.35), ("carrying", 0.25), ("playing", 0.25)):
        wrists = jt[name][[J["left_wrist"], J["right_wrist"]]]
        assert np.all(wrists[:, 2] - chest_z > min_forward), name
    # Carrying holds at waist height, playing raises the hands to the chest.
    assert np.all(jt["carrying"][[J["left_wrist"], J["right_wrist"]], 1] < standing[J["spine3"], 1])
    assert np.all(jt["playing"][[J["left_wrist"], J["right_wrist"]], 1] > standing[J["spine2"], 1])
    # Laid down with its documented global orientation, 'lying' is flat and face up.
    v_lying, j_lying = _forward(body, get_preset("lying"), np.asarray(LYING_GLOBAL_ORIENT, np.float32))
    extent = np.ptp(np.asarray(v_lying), axis=0)
    assert extent[1] < 0.45 and extent[2] > 1.6
    nose = np.asarray(v_lying)[np.argmax(np.asarray(body.v_template)[:, 2])]
    assert nose[1] > np.asarray(j_lying)[J["head"], 1] + 0.05
    with pytest.raises(KeyError, match="standing"):
        get_preset("dancing")
