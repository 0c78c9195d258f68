"""Checkpoint reading and parameter assembly (guidance.safetensors_io) on small files written here."""
import json

import jax
import numpy as np
import pytest
from safetensors.numpy import save_file

from guidance.safetensors_io import Checkpoint, assemble_params, dense_kernel


@pytest.mark.parametrize("shape", [(128, 192), (96, 40), (7, 5), (1, 64)])
def test_dense_kernel_is_the_transpose(shape):
    weight = np.random.default_rng(0).standard_normal(shape).astype(np.float16)
    kernel = dense_kernel(weight)
    assert kernel.flags.c_contiguous
    np.testing.assert_array_equal(kernel, weight.T)


def _sharded(tmp_path, shards):
    """shards: list of {key: array} -> path of the index naming them."""
    weight_map = {}
    for i, tensors in enumerate(shards):
        name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(tensors, str(tmp_path / name))
        weight_map.update(dict.fromkeys(tensors, name))
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return str(index)


def test_checkpoint_reads_every_shard_and_knows_shapes_from_headers(tmp_path):
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((3, 4)).astype(np.float32), rng.standard_normal(5).astype(np.float16)
    ckpt = Checkpoint(_sharded(tmp_path, [{"a": a}, {"b": b}]))
    assert sorted(ckpt) == ["a", "b"] and len(ckpt) == 2
    assert ckpt.shape("a") == (3, 4) and ckpt.shape("b") == (5,)
    np.testing.assert_array_equal(ckpt["a"], a)
    np.testing.assert_array_equal(ckpt["b"], b)


def test_a_key_in_two_shards_is_named(tmp_path):
    one = np.zeros(2, np.float32)
    path = _sharded(tmp_path, [{"x": one, "dup": one}, {"dup": one}])
    with pytest.raises(ValueError, match="'dup' appears in more than one shard"):
        Checkpoint(path)


def test_parallel_assembly_gives_each_parameter_its_own_tensor(tmp_path):
    # Many tensors of one shape: a mix-up between threads would pass every shape check.
    rng = np.random.default_rng(2)
    weights = {f"layer{i}.weight": rng.standard_normal((64, 32)).astype(np.float32) for i in range(24)}
    ckpt = Checkpoint(_sharded(tmp_path, [dict(list(weights.items())[:12]), dict(list(weights.items())[12:])]))
    expected = {f"layer{i}": {"kernel": jax.ShapeDtypeStruct((32, 64), np.float32)} for i in range(24)}
    by_path = {(f"layer{i}", "kernel"): f"layer{i}.weight" for i in range(24)}
    params = assemble_params(ckpt, by_path, [], expected, lambda a, _: dense_kernel(a), np.float32,
                             "test", "model", workers=4)
    for i in range(24):
        np.testing.assert_array_equal(np.asarray(params[f"layer{i}"]["kernel"]), weights[f"layer{i}.weight"].T)


def test_a_wrong_shape_is_named_with_its_key(tmp_path):
    ckpt = Checkpoint(_sharded(tmp_path, [{"w": np.zeros((4, 3), np.float32)}]))
    with pytest.raises(ValueError, match="tensor 'w' has shape \\(4, 3\\)"):
        assemble_params(ckpt, {("w",): "w"}, [], {"w": jax.ShapeDtypeStruct((4, 3), np.float32)},
                        lambda a, _: a.T, np.float32, "test", "model", workers=2)
