"""IF UNet in Flax vs diffusers' PyTorch UNet2DConditionModel (fixtures from scripts/parity_unet.py).

stage1: IF-I layout, weights as the sharded fp16 variant. stage2: IF-II layout (noise-level class
embedding, 6 input channels, per-block layers, only cross-attention), single fp32 file.
"""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from guidance import IFUNet, TextContext, encode_text, load_if_unet, load_safetensors_dir

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "if_unet")


@pytest.mark.parametrize("stage", ["stage1", "stage2"])
def test_matches_diffusers_reference(stage):
    model_dir = os.path.join(FIXTURES, stage)
    module, params = load_if_unet(model_dir)
    ref = np.load(os.path.join(model_dir, "reference.npz"))
    class_labels = ref["class_labels"] if "class_labels" in ref else None
    out = np.asarray(jax.jit(module.apply)({"params": params}, ref["sample_nhwc"], ref["timesteps"],
                                           ref["encoder_hidden_states"], class_labels))
    expected = ref["output_nhwc"]
    assert out.shape == expected.shape
    assert np.linalg.norm(out - expected) / np.linalg.norm(expected) < 1e-4
    assert np.abs(out - expected).max() < 1e-4 * np.abs(expected).max()


def test_half_precisions_run_and_float16_is_the_closer_to_float32():
    model_dir = os.path.join(FIXTURES, "stage1")
    ref = np.load(os.path.join(model_dir, "reference.npz"))
    inputs = (ref["sample_nhwc"], ref["timesteps"], ref["encoder_hidden_states"])
    expected = ref["output_nhwc"]  # diffusers in float32, which our float32 matches to 1e-4
    rel = {}
    for dtype in (jnp.bfloat16, jnp.float16):
        module, params = load_if_unet(model_dir, dtype=dtype)
        out = jax.jit(module.apply)({"params": params}, *inputs)
        assert out.dtype == dtype
        rel[dtype] = np.linalg.norm(np.asarray(out, np.float32) - expected) / np.linalg.norm(expected)
    # 11 mantissa bits against bfloat16's 8: float16's rounding error is about 8x smaller.
    assert rel[jnp.float16] < 5e-3 and rel[jnp.float16] < rel[jnp.bfloat16] / 3, rel


def test_float16_unet_sets_no_dot_algorithm():
    # jax.nn.dot_product_attention's XLA path sets the dot algorithm F16_F16_F32 for float16: CPUs
    # reject it, and XLA's GPU simplifier aborts on it in the text pooling's one-query product
    # ("Unsupported dot precision algorithm: 4"). The UNet's attention leaves it unset.
    module, params = load_if_unet(os.path.join(FIXTURES, "stage1"), dtype=jnp.float16)
    ref = np.load(os.path.join(FIXTURES, "stage1", "reference.npz"))
    text = jax.jit(module.apply).lower({"params": params}, ref["sample_nhwc"], ref["timesteps"],
                                        ref["encoder_hidden_states"]).as_text()
    assert "dot_general" in text and "algorithm" not in text


def test_unet_folder_and_explicit_variant_load_the_same_weights():
    unet_dir = os.path.join(FIXTURES, "stage1", "unet")
    _, params = load_if_unet(unet_dir, variant="fp16")
    raw = load_safetensors_dir(unet_dir, "diffusion_pytorch_model", variant="fp16")
    kernel = np.asarray(params["down_blocks_1"]["attentions_0"]["to_q"]["kernel"])
    np.testing.assert_array_equal(kernel, raw["down_blocks.1.attentions.0.to_q.weight"].T.astype(np.float32))
    conv = np.asarray(params["conv_in"]["kernel"])
    # OIHW -> OHWI, the layout of if_unet.Conv.
    np.testing.assert_array_equal(conv, raw["conv_in.weight"].transpose(0, 2, 3, 1).astype(np.float32))


def _copy_stage2(tmp_path):
    dst = tmp_path / "IF-II"
    shutil.copytree(os.path.join(FIXTURES, "stage2"), dst)
    return dst / "unet"


def test_mismatched_keys_are_named(tmp_path):
    unet_dir = _copy_stage2(tmp_path)
    weights = unet_dir / "diffusion_pytorch_model.safetensors"
    tensors = load_file(str(weights))
    tensors["mid_block.attentions.0.to_qq.weight"] = tensors.pop("mid_block.attentions.0.to_q.weight")
    save_file(tensors, str(weights))
    with pytest.raises(ValueError) as err:
        load_if_unet(str(unet_dir.parent))
    assert "mid_block.attentions.0.to_qq.weight" in str(err.value)  # unused tensor
    assert "mid_block/attentions_0/to_q/kernel" in str(err.value)  # missing parameter


def test_wrong_shape_is_named(tmp_path):
    unet_dir = _copy_stage2(tmp_path)
    weights = unet_dir / "diffusion_pytorch_model.safetensors"
    tensors = load_file(str(weights))
    tensors["conv_out.bias"] = np.zeros(5, np.float32)
    save_file(tensors, str(weights))
    with pytest.raises(ValueError, match="conv_out.bias"):
        load_if_unet(str(unet_dir))


def test_unsupported_config_key_is_named(tmp_path):
    unet_dir = _copy_stage2(tmp_path)
    config = json.loads((unet_dir / "config.json").read_text())
    with pytest.raises(ValueError, match="'class_embeddings_concat'"):
        IFUNet.from_config(dict(config, class_embeddings_concat=True))
    with pytest.raises(ValueError, match="'some_new_key'"):
        IFUNet.from_config(dict(config, some_new_key=1))
    with pytest.raises(ValueError, match="'down_block_types'"):
        IFUNet.from_config(dict(config, down_block_types=["DownBlock2D"] * 3))


def test_missing_model_explains_layout_and_download(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_if_unet(str(tmp_path / "nowhere"))
    message = str(err.value)
    assert "nowhere" in message and "unet/config.json" in message and "DeepFloyd/IF-I-XL-v1.0" in message
    unet_dir = _copy_stage2(tmp_path)
    os.remove(unet_dir / "diffusion_pytorch_model.safetensors")
    with pytest.raises(FileNotFoundError, match="diffusion_pytorch_model.fp16.safetensors"):
        load_if_unet(str(unet_dir.parent))


def test_stage2_requires_noise_level(tmp_path):
    module, params = load_if_unet(os.path.join(FIXTURES, "stage2"))
    ref = np.load(os.path.join(FIXTURES, "stage2", "reference.npz"))
    with pytest.raises(ValueError, match="class_labels"):
        module.apply({"params": params}, ref["sample_nhwc"], ref["timesteps"], ref["encoder_hidden_states"])


@pytest.mark.parametrize("stage", ["stage1", "stage2"])
def test_text_context_gives_the_embeddings_output_with_less_work(stage):
    model_dir = os.path.join(FIXTURES, stage)
    module, params = load_if_unet(model_dir)
    ref = np.load(os.path.join(model_dir, "reference.npz"))
    extra = (ref["class_labels"],) if "class_labels" in ref else ()
    apply = jax.jit(lambda p, text: module.apply({"params": p}, ref["sample_nhwc"], ref["timesteps"], text,
                                                 *extra))
    context = jax.jit(lambda p, e: encode_text(module, p, e))(params, ref["encoder_hidden_states"])
    assert isinstance(context, TextContext) and context.layers
    np.testing.assert_allclose(np.asarray(apply(params, context)),
                               np.asarray(apply(params, ref["encoder_hidden_states"])), rtol=1e-5, atol=1e-5)
    flops = lambda text: apply.lower(params, text).cost_analysis()["flops"]  # noqa: E731
    assert flops(context) < flops(ref["encoder_hidden_states"])
