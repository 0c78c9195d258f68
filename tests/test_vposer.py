"""Flax VPoser vs a PyTorch re-statement of human_body_prior's V02_05 (fixture from
scripts/parity_vposer.py); axis-angle checked against SciPy."""
import os

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from pose.vposer import load_vposer

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "vposer")


@pytest.fixture(scope="module")
def vp():
    return load_vposer(os.path.join(FIXTURE, "tiny.npz")), np.load(os.path.join(FIXTURE, "reference.npz"))


def test_encoder_mean_matches_pytorch(vp):
    model, ref = vp
    mean = np.asarray(model.encode_mean(ref["poses"]))
    assert np.abs(mean - ref["mean"]).max() < 1e-4 * np.abs(ref["mean"]).max()


def test_decoder_rotations_match_pytorch(vp):
    model, ref = vp
    np.testing.assert_allclose(np.asarray(model.decode_matrot(ref["z"])), ref["matrot"], atol=1e-5)


def _scipy_aa(matrot):
    return Rotation.from_matrix(matrot.reshape(-1, 3, 3).astype(np.float64)).as_rotvec()


def test_decoder_axis_angle_matches_scipy(vp):
    """All angles, including the (2.7, pi) range some decoded joints fall in."""
    model, ref = vp
    aa, want = np.asarray(model.decode(ref["z"])).reshape(-1, 3), _scipy_aa(ref["matrot"])
    assert (np.linalg.norm(want, axis=1) > 2.6).any()
    np.testing.assert_allclose(aa, want, atol=1e-4)


def test_bad_layer_names_are_named(tmp_path):
    with np.load(os.path.join(FIXTURE, "tiny.npz")) as f:
        sd = dict(f)
    sd["encoder_net.3.weight"] = sd.pop("encoder_net.2.weight")
    bad = tmp_path / "bad.npz"
    np.savez(bad, **sd)
    with pytest.raises(ValueError, match=r"bad\.npz.*missing \['encoder_net\.2\.weight'\].*encoder_net\.3\.weight"):
        load_vposer(str(bad))


def test_missing_weights_name_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="snapshots"):
        load_vposer(str(tmp_path))
