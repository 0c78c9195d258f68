"""Pose files of the release (docs/method.md §1.2) and presets through `read_poses` / `load_pose`."""
import sys
import types

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from body.pose_files import PoseFileError, load_pose, read_poses
from body.presets import PRESETS


def _random_poses(n, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, 63)) * 0.6).astype(np.float32)


def _to_6d(poses):
    """[N, 3J] axis-angle -> [N, J, 6]: first two matrix columns, [3, 2] row-major (PIXIE's)."""
    mats = Rotation.from_rotvec(poses.reshape(-1, 3)).as_matrix()
    return mats[:, :, :2].reshape(len(poses), -1, 6).astype(np.float32)


def test_plain_npy_layouts(tmp_path):
    pose = _random_poses(1)[0]
    for name, array in (("a.npy", pose), ("b.npy", pose[None])):
        np.save(tmp_path / name, array)
        np.testing.assert_array_equal(read_poses(tmp_path / name), pose[None])
    smpl72 = np.concatenate([np.full(3, 9.0), pose, np.full(6, 7.0)]).astype(np.float32)
    np.save(tmp_path / "c.npy", smpl72)
    np.testing.assert_array_equal(load_pose(tmp_path / "c.npy"), pose)


def test_npz_poses_and_index(tmp_path):
    poses = _random_poses(3)
    np.savez(tmp_path / "p.npz", poses=poses)
    np.testing.assert_array_equal(read_poses(tmp_path / "p.npz"), poses)
    np.testing.assert_array_equal(load_pose(str(tmp_path / "p.npz"), index=1), poses[1])
    with pytest.raises(PoseFileError, match="holds 3 poses"):
        load_pose(tmp_path / "p.npz")


@pytest.mark.parametrize("shape", [(1, 21, 6), (21, 6), (1, 126), (126,)])
def test_pickled_dict_with_6d_pose(tmp_path, shape):
    poses = _random_poses(1, seed=1)
    record = {"pose": _to_6d(poses).reshape(shape), "betas": np.zeros((1, 10)), "orient": np.zeros((1, 6)),
              "trans": np.zeros((1, 3))}
    np.save(tmp_path / "img.npy", np.array(record, dtype=object), allow_pickle=True)
    got = read_poses(tmp_path / "img.npy")
    np.testing.assert_allclose(got, poses, atol=1e-5)


@pytest.mark.parametrize("shape", [(1, 24, 6), (144,)])
def test_pickled_dict_with_24_joint_6d_pose_is_sliced_as_the_release(tmp_path, shape):
    smpl72 = _random_poses(2, seed=4).reshape(-1)[:72]  # root, 21 body joints, two hand joints
    record = {"pose": _to_6d(smpl72[None]).reshape(shape)}
    np.save(tmp_path / "img.npy", np.array(record, dtype=object), allow_pickle=True)
    np.testing.assert_allclose(read_poses(tmp_path / "img.npy"), smpl72[None, 3:66], atol=1e-5)


class _FakeTensor:
    """Stands in for a torch tensor: the reader only calls detach().cpu().numpy()."""

    def __init__(self, array):
        self._array = array

    def detach(self):
        return self

    def cpu(self):
        return self

    def numpy(self):
        return self._array


def _save_torch_like_record(path, monkeypatch, array):
    """Pickles {'pose': tensor} whose unpickling, like a real torch tensor's, imports module torch."""
    fake_torch = types.ModuleType("torch")

    def rebuild(a):
        return _FakeTensor(a)

    rebuild.__module__, rebuild.__qualname__ = "torch", "rebuild"
    fake_torch.rebuild = rebuild

    class Tensor:
        def __reduce__(self):
            return rebuild, (array,)

    with monkeypatch.context() as m:
        m.setitem(sys.modules, "torch", fake_torch)
        np.save(path, np.array({"pose": Tensor()}, dtype=object), allow_pickle=True)
    assert b"torch" in open(path, "rb").read()
    return fake_torch


def test_torch_pickle_needs_torch(tmp_path, monkeypatch):
    poses = _random_poses(1, seed=2)
    fake_torch = _save_torch_like_record(tmp_path / "t.npy", monkeypatch, _to_6d(poses))
    monkeypatch.setitem(sys.modules, "torch", None)  # torch not importable
    with pytest.raises(PoseFileError, match=r"t\.npy.*needs torch \(pip install torch\)"):
        read_poses(tmp_path / "t.npy")
    monkeypatch.setitem(sys.modules, "torch", fake_torch)  # torch importable
    np.testing.assert_allclose(read_poses(tmp_path / "t.npy"), poses, atol=1e-5)


def test_presets_and_errors(tmp_path):
    np.testing.assert_array_equal(load_pose("preset:sitting"), PRESETS["sitting"])
    with pytest.raises(KeyError, match="riding"):
        load_pose("preset:flying")
    np.save(tmp_path / "bad.npy", np.zeros((2, 63)))
    with pytest.raises(PoseFileError, match=r"bad\.npy: found shape \(2, 63\); accepted: \(63,\)"):
        read_poses(tmp_path / "bad.npy")
    np.save(tmp_path / "nan.npy", np.full(63, np.nan))
    with pytest.raises(PoseFileError, match="not all finite"):
        read_poses(tmp_path / "nan.npy")
    np.savez(tmp_path / "x.npz", other=np.zeros((2, 63)))
    with pytest.raises(PoseFileError, match=r"x\.npz: .npz has no 'poses'.*other"):
        read_poses(tmp_path / "x.npz")
    np.save(tmp_path / "d.npy", np.array({"pose": np.zeros((20, 6))}, dtype=object), allow_pickle=True)
    with pytest.raises(PoseFileError, match=r"d\.npy: 6D 'pose' has shape \(20, 6\)"):
        read_poses(tmp_path / "d.npy")
    (tmp_path / "p.txt").write_text("0 0 0")
    with pytest.raises(PoseFileError, match=r"p\.txt: unknown pose file type"):
        read_poses(tmp_path / "p.txt")
