"""Flax T5 v1.1 encoder vs transformers' PyTorch T5EncoderModel (fixture from scripts/parity_t5.py: tiny
random model saved as sharded safetensors, tiny sentencepiece tokenizer), and the prompt-embedding cache."""

import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import guidance.t5
from guidance import PromptCache, embed_prompts, load_t5_encoder

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "t5")


@pytest.fixture(scope="module")
def encoder():
    return load_t5_encoder(FIXTURE)


@pytest.fixture(scope="module")
def ref():
    return np.load(os.path.join(FIXTURE, "reference.npz"))


def assert_close(out, expected, tol=1e-4):
    assert out.shape == expected.shape
    assert np.linalg.norm(out - expected) / np.linalg.norm(expected) < tol
    assert np.abs(out - expected).max() < tol * np.abs(expected).max()


def test_fixture_is_sharded():
    files = os.listdir(os.path.join(FIXTURE, "text_encoder"))
    assert "model.safetensors.index.json" in files and sum(f.startswith("model-0") for f in files) > 1


def test_random_ids_match_pytorch(encoder, ref):
    out = encoder.encode_ids(ref["random_ids"].astype(np.int32), ref["random_mask"].astype(np.int32))
    assert_close(out, ref["random_out"])


def test_prompts_through_tokenizer_match_pytorch(encoder, ref):
    prompts = [str(p) for p in ref["prompts"]]
    ids, mask = encoder.tokenize(prompts)
    np.testing.assert_array_equal(ids, ref["prompt_ids"])
    np.testing.assert_array_equal(mask, ref["prompt_mask"])
    embeddings, mask = encoder.encode(prompts, batch_size=3)  # 2 batches, the last one padded
    assert embeddings.dtype == np.float32 and embeddings.shape == (4, 77, 32)
    assert_close(embeddings, ref["prompt_out"])


def test_bfloat16_is_close(ref):
    out = load_t5_encoder(FIXTURE, dtype=jnp.bfloat16).encode_ids(ref["random_ids"].astype(np.int32),
                                                                  ref["random_mask"].astype(np.int32))
    assert_close(out, ref["random_out"], tol=5e-2)


def test_missing_folder_names_path_layout_and_source(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_t5_encoder(str(tmp_path / "IF-I-XL-v1.0"))
    msg = str(err.value)
    assert "IF-I-XL-v1.0" in msg and "text_encoder/config.json" in msg and "DeepFloyd/IF-I-XL-v1.0" in msg
    assert "licence" in msg


def test_float16_weights_stay_float16_and_give_the_float32_results(tmp_path, ref):
    # IF ships the encoder as float32 and float16 files; the float16 one is preferred and held in
    # float16 (9.5 GB for T5-XXL, not 19), each layer upcasting it: float32 results.
    root = tmp_path / "IF"
    shutil.copytree(FIXTURE, root)
    enc = root / "text_encoder"
    tensors = {}
    for shard in sorted(enc.glob("model-*.safetensors")):
        tensors.update(load_file(str(shard)))
    save_file({k: v.astype(np.float16) for k, v in tensors.items()}, str(enc / "model.fp16.safetensors"))
    plain_key = guidance.t5.t5_model_key(os.path.join(FIXTURE, "text_encoder"))

    module, params = guidance.t5.load_t5_weights(str(enc))
    assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(params)} == {jnp.dtype(jnp.float16)}
    ids, mask = ref["random_ids"].astype(np.int32), ref["random_mask"].astype(np.int32)
    out = module.apply({"params": params}, ids, mask)
    upcast = jax.tree_util.tree_map(lambda a: a.astype(jnp.float32), params)
    assert out.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(out), np.asarray(module.apply({"params": upcast}, ids, mask)))
    assert_close(np.asarray(out), ref["random_out"], tol=5e-3)  # the weights' float16 rounding
    # Embeddings of the two files are cached apart.
    assert guidance.t5.t5_model_key(str(enc)) != plain_key.replace(FIXTURE, str(root))
    assert "model.fp16.safetensors" in guidance.t5.t5_model_key(str(enc))


def test_mismatched_tensor_is_named(tmp_path):
    root = tmp_path / "IF"
    shutil.copytree(FIXTURE, root)
    shard = root / "text_encoder" / "model-00003-of-00004.safetensors"
    tensors = load_file(str(shard))
    tensors["encoder.block.1.layer.0.SelfAttention.qq.weight"] = tensors.pop(
        "encoder.block.1.layer.0.SelfAttention.q.weight")
    save_file(tensors, str(shard))
    index = root / "text_encoder" / "model.safetensors.index.json"
    index.write_text(index.read_text().replace("SelfAttention.q.weight\": \"model-00003",
                                               "SelfAttention.qq.weight\": \"model-00003"))
    with pytest.raises(ValueError) as err:
        load_t5_encoder(str(root))
    assert "encoder.block.1.layer.0.SelfAttention.qq.weight" in str(err.value)
    assert "block_1/q/kernel" in str(err.value)


def test_prompt_cache_computes_each_text_once(tmp_path):
    calls = []

    def encode_fn(texts):
        calls.append(list(texts))
        return np.stack([np.full((2, 3), len(t), np.float32) for t in texts])

    cache = PromptCache(str(tmp_path))
    first = cache.get_or_compute("model-a", ["ab", "c", "ab"], encode_fn)
    assert calls == [["ab", "c"]]
    np.testing.assert_array_equal(first[:, 0, 0], [2, 1, 2])
    second = cache.get_or_compute("model-a", ["c", "ab", "dddd"], encode_fn)
    assert calls[1:] == [["dddd"]]
    np.testing.assert_array_equal(second[:, 0, 0], [1, 2, 4])
    cache.get_or_compute("model-b", ["c"], encode_fn)  # another model does not share entries
    assert calls[2:] == [["c"]]
    leftovers = [f for _, _, fs in os.walk(tmp_path) for f in fs if not f.endswith(".npz")]
    assert leftovers == []


def test_embed_prompts_caches_and_skips_the_encoder(tmp_path, ref, monkeypatch):
    prompts = [str(p) for p in ref["prompts"]]
    embeddings = embed_prompts(FIXTURE, prompts, str(tmp_path))
    assert_close(embeddings, ref["prompt_out"])

    def fail(*args, **kwargs):
        raise AssertionError("the encoder was loaded although every prompt is cached")

    monkeypatch.setattr(guidance.t5, "load_t5_encoder", fail)
    np.testing.assert_array_equal(embed_prompts(FIXTURE, prompts[::-1], str(tmp_path)), embeddings[::-1])


def test_a_prompt_longer_than_77_tokens_is_cut_with_a_warning(encoder, capsys):
    long = " ".join(["a person riding a red bike"] * 30)
    ids, mask = encoder.tokenize(["a short prompt", long])
    assert ids.shape == (2, 77) and mask[1].all()
    err = capsys.readouterr().err
    assert err.count("warning") == 1 and "only its first 77 are used" in err and "short" not in err
