"""body.rotations against scipy.spatial.transform.Rotation."""
import numpy as np
from scipy.spatial.transform import Rotation

from body.rotations import axis_angle_to_matrix, matrix_to_axis_angle, rot6d_to_axis_angle, rot6d_to_matrix


def _rotvecs(angles, seed=0):
    axes = np.random.default_rng(seed).normal(size=(len(angles), 3))
    return (axes / np.linalg.norm(axes, axis=1, keepdims=True) * np.asarray(angles)[:, None]).astype(np.float32)


def _check_round_trip(aa):
    mats = np.asarray(axis_angle_to_matrix(aa))
    np.testing.assert_allclose(mats, Rotation.from_rotvec(aa).as_matrix(), atol=2e-6)
    np.testing.assert_allclose(np.asarray(matrix_to_axis_angle(mats)), aa, atol=2e-4)


def test_axis_angle_round_trip_matches_scipy():
    # Zero, the small-angle (Taylor) branch, and angles up to where the near-pi branch takes over.
    angles = np.concatenate([[0.0, 1e-6, 1e-3], np.random.default_rng(1).uniform(0.0, 2.6, 61)])
    _check_round_trip(_rotvecs(angles))


def test_axis_angle_round_trip_near_pi():
    _check_round_trip(_rotvecs(np.linspace(2.7, np.pi - 1e-3, 32)))


def test_6d_uses_gram_schmidt_on_the_two_columns():
    rng = np.random.default_rng(1)
    mats = Rotation.random(32, random_state=2).as_matrix()
    n = len(mats)
    # Scale the first stored column and shear the second along it: Gram-Schmidt must undo both;
    # 6D is the [3, 2] block of the matrix flattened row-major.
    cols = mats[:, :, :2].copy()
    cols[:, :, 0] *= rng.uniform(0.5, 2.0, (n, 1))
    cols[:, :, 1] += cols[:, :, 0] * rng.uniform(-0.5, 0.5, (n, 1))
    x = cols.reshape(n, 6).astype(np.float32)
    np.testing.assert_allclose(np.asarray(rot6d_to_matrix(x)), mats, atol=1e-5)
    np.testing.assert_allclose(np.asarray(rot6d_to_axis_angle(x)), Rotation.from_matrix(mats).as_rotvec(),
                               atol=1e-4)
