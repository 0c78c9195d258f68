"""Flax CLIP vs transformers' PyTorch CLIPModel (fixture from scripts/parity_clip.py)."""
import os

import numpy as np
import pytest

from pose.clip_model import load_clip

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "clip")


@pytest.fixture(scope="module")
def clip_and_ref():
    return load_clip(FIXTURE), np.load(os.path.join(FIXTURE, "reference.npz"))


def _rel(a, b):
    return float(np.abs(np.asarray(a) - b).max() / np.abs(b).max())


def test_tokenizer_matches_reference(clip_and_ref):
    clip, ref = clip_and_ref
    np.testing.assert_array_equal(clip.tokenize(list(ref["texts"])), ref["input_ids"])


def test_image_and_text_features_match_pytorch(clip_and_ref):
    clip, ref = clip_and_ref
    assert _rel(clip.image_features(ref["images"]), ref["image_features"]) < 1e-4
    assert _rel(clip.text_features(list(ref["texts"])), ref["text_features"]) < 1e-4


def test_missing_folder_names_path_and_hub(tmp_path):
    with pytest.raises(FileNotFoundError, match="openai/clip-vit-base-patch32") as e:
        load_clip(str(tmp_path / "nope"))
    assert "nope" in str(e.value)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="vocab.json"):
        load_clip(str(tmp_path))
