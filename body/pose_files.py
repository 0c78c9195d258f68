"""Reading body poses (63-d SMPL-X axis-angle) from the files of the release and from presets (docs/method.md §1.2).

Accepted:
  - `.npy` array of shape (63,), (1, 63) or (72,); 72 numbers are 24 SMPL joints, of which the root
    and the two hand joints are dropped (numbers 3..65 kept);
  - `.npy` holding a pickled dict (PIXIE/ICON output) whose 'pose' is the body pose in 6D, with
    trailing shape (126,) or (21, 6) after any leading axes, or 24 joints, (144,) or (24, 6), which
    are converted and then sliced as the 72 numbers above (the release's `load_pose`); the release
    pickles torch tensors there, so that one format needs torch importable;
  - `.npz` with an N x 63 'poses' array.
"""
import os

import numpy as np

from body.presets import get_preset
from body.rotations import rot6d_to_axis_angle

_ACCEPTED = ("(63,), (1, 63) or (72,) arrays in .npy; a pickled dict in .npy with a 6D 'pose' of "
             "trailing shape (126,), (21, 6), (144,) or (24, 6); an .npz with 'poses' of shape "
             "(N, 63)")
# 6D poses: joints given -> the axis-angle numbers kept (24 joints: drop the root and the hands).
_6D_JOINTS = {21: slice(0, 63), 24: slice(3, 66)}


class PoseFileError(ValueError):
    """A pose file that cannot be read as body poses."""


def _to_numpy(value):
    if hasattr(value, "detach"):  # a torch tensor: convert without importing torch here
        value = value.detach().cpu().numpy()
    return np.asarray(value, np.float64)


def _load_npy(path):
    try:
        return np.load(path, allow_pickle=True)
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] == "torch":
            raise PoseFileError(
                f"{path}: this pickled-dict pose file holds torch tensors; reading this one format "
                f"needs torch (pip install torch)"
            ) from e
        raise


def _from_6d(path, record):
    if "pose" not in record:
        raise PoseFileError(f"{path}: pickled dict has no 'pose' key (keys: {sorted(record)}); "
                            f"accepted: {_ACCEPTED}")
    pose6d = _to_numpy(record["pose"])
    shape = pose6d.shape
    joints = next((n for n in _6D_JOINTS if shape[-1:] == (6 * n,) or shape[-2:] == (n, 6)), None)
    if joints is None:
        raise PoseFileError(f"{path}: 6D 'pose' has shape {pose6d.shape}; accepted: {_ACCEPTED}")
    import jax.numpy as jnp

    axis_angle = rot6d_to_axis_angle(jnp.asarray(pose6d.reshape(-1, joints, 6)))
    return np.asarray(axis_angle).reshape(-1, 3 * joints)[:, _6D_JOINTS[joints]]


def read_poses(path):
    """All body poses in `path` as a float32 array [N, 63]."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"pose file not found: {path}")
    if path.endswith(".npz"):
        with np.load(path, allow_pickle=False) as data:
            if "poses" not in data:
                raise PoseFileError(f"{path}: .npz has no 'poses' array (keys: {sorted(data.files)}); "
                                    f"accepted: {_ACCEPTED}")
            poses = np.asarray(data["poses"], np.float64)
        if poses.ndim != 2 or poses.shape[1] != 63:
            raise PoseFileError(f"{path}: 'poses' has shape {poses.shape}; accepted: {_ACCEPTED}")
    elif path.endswith(".npy"):
        array = _load_npy(path)
        if array.dtype == object and array.shape == () and isinstance(array.item(), dict):
            poses = _from_6d(path, array.item())
        elif array.dtype != object and array.shape in ((63,), (1, 63)):
            poses = np.asarray(array, np.float64).reshape(1, 63)
        elif array.dtype != object and array.shape == (72,):
            poses = np.asarray(array, np.float64)[3:66].reshape(1, 63)
        else:
            found = "a pickled object" if array.dtype == object else f"shape {array.shape}"
            raise PoseFileError(f"{path}: found {found}; accepted: {_ACCEPTED}")
    else:
        raise PoseFileError(f"{path}: unknown pose file type; accepted: {_ACCEPTED}")
    if not np.all(np.isfinite(poses)):
        raise PoseFileError(f"{path}: pose values are not all finite")
    return poses.astype(np.float32)


def load_pose(spec, index=None):
    """One body pose (63,) from `preset:NAME` or a pose file (`index` picks one of several)."""
    spec = os.fspath(spec)
    if spec.startswith("preset:"):
        return get_preset(spec[len("preset:"):])
    poses = read_poses(spec)
    if index is None:
        if len(poses) != 1:
            raise PoseFileError(f"{spec}: holds {len(poses)} poses; pass an index to pick one")
        index = 0
    if not -len(poses) <= index < len(poses):
        raise PoseFileError(f"{spec}: pose index {index} out of range for {len(poses)} poses")
    return poses[index]
