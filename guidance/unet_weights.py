"""Load a diffusers-layout IF UNet (`unet/config.json` + safetensors) into Flax parameters, no torch.

PyTorch keys map mechanically onto the Flax tree of `if_unet.IFUNet`: `down_blocks.0.resnets.1.conv1.weight`
-> `down_blocks_0/resnets_1/conv1/kernel`. Conv weights OIHW -> OHWI (if_unet.Conv), linear [out, in] -> [in, out], norm
weights -> `scale`. Every tensor must be used and every parameter filled; otherwise the error lists the keys.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from guidance.if_unet import IFUNet
from guidance.safetensors_io import (Checkpoint, assemble_params, candidate_files, dense_kernel, find_checkpoint,
                                    load_safetensors)

WEIGHTS_PREFIX = "diffusion_pytorch_model"
_HOW_TO_GET = (
    "The IF UNets are gated downloads: accept the licence on https://huggingface.co/DeepFloyd/IF-I-XL-v1.0 "
    "(stage II: DeepFloyd/IF-II-L-v1.0) while logged in, then e.g. `huggingface-cli login` and "
    "`huggingface-cli download DeepFloyd/IF-I-XL-v1.0 --include 'unet/*' 'text_encoder/*' 'tokenizer/*' "
    "'model_index.json' --local-dir IF-I-XL-v1.0`, and pass that folder (or its unet/ subfolder).")


def _layout_help(variant):
    names = [n for v in ([variant] if variant else [None, "fp16"]) for n in candidate_files(WEIGHTS_PREFIX, v)]
    return f"Expected layout: <model_dir>/unet/config.json and <model_dir>/unet/ one of {names}. {_HOW_TO_GET}"


def resolve_unet_dir(model_dir: str, variant: str | None = None) -> str:
    """The folder holding config.json: `model_dir/unet` (IF repository root) or `model_dir` itself."""
    for candidate in (os.path.join(model_dir, "unet"), model_dir):
        if os.path.isfile(os.path.join(candidate, "config.json")):
            return candidate
    what = "does not exist" if not os.path.isdir(model_dir) else "has neither unet/config.json nor config.json"
    raise FileNotFoundError(f"IF model folder {model_dir!r} {what}. {_layout_help(variant)}")


def torch_key_to_flax_path(key: str, ndim: int) -> tuple:
    """'down_blocks.0.resnets.1.conv1.weight' -> ('down_blocks_0', 'resnets_1', 'conv1', 'kernel')."""
    path = []
    for part in key.split("."):
        if part.isdigit() and path:
            path[-1] = f"{path[-1]}_{part}"
        else:
            path.append(part)
    if path[-1] == "weight":
        path[-1] = "scale" if ndim == 1 else "kernel"
    return tuple(path)


def _to_flax_layout(array: np.ndarray, path: tuple) -> np.ndarray:
    if path[-1] != "kernel":
        return array
    if array.ndim == 4:
        return array.transpose(0, 2, 3, 1)  # OIHW -> OHWI
    return dense_kernel(array)


def convert_state_dict(tensors: Checkpoint, expected: dict, dtype=jnp.float32, source: str = "checkpoint") -> dict:
    """Maps PyTorch-named tensors onto a Flax param tree shaped like `expected` (a tree of objects with
    .shape, e.g. from jax.eval_shape). Raises naming unused tensors, missing parameters, shape mismatches."""
    expected_flat = traverse_util.flatten_dict(expected)
    by_path = {torch_key_to_flax_path(k, len(tensors.shape(k))): k for k in tensors}
    unused = [by_path[p] for p in by_path.keys() - expected_flat.keys()]
    return assemble_params(tensors, by_path, unused, expected, _to_flax_layout, dtype, source, "UNet")


def param_shapes(module: IFUNet) -> dict:
    """The Flax parameter tree's shapes (no computation, no memory)."""
    cfg = module.config
    size = 2 ** (len(cfg.block_out_channels) - 1)
    text_dim = cfg.encoder_hid_dim or cfg.cross_attention_dim
    args = (jnp.zeros((1, size, size, cfg.in_channels)), jnp.zeros((1,)), jnp.zeros((1, 1, text_dim)),
            jnp.zeros((1,)) if cfg.class_embed_type else None)
    return jax.eval_shape(module.init, jax.random.PRNGKey(0), *args)["params"]


def load_if_unet(model_dir: str, dtype=jnp.float32, variant: str | None = None, attention_impl=None):
    """(module, params) of the IF UNet in `model_dir` (IF repository root or its unet/ folder).

    variant: "fp16" reads diffusion_pytorch_model.fp16.safetensors (or its sharded index); None reads
    the plain files, else falls back to the fp16 ones. Params are cast to `dtype` (bfloat16 for speed on
    GPU; norms and softmax still run in float32). Use as
    `module.apply({"params": params}, sample_nhwc, timesteps, encoder_hidden_states[, class_labels])`.
    """
    unet_dir = resolve_unet_dir(model_dir, variant)
    config_path = os.path.join(unet_dir, "config.json")
    with open(config_path) as f:
        try:
            config = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{config_path}: not valid JSON: {e}") from e
    module = IFUNet.from_config(config, dtype=dtype, attention_impl=attention_impl, source=config_path)
    weights_path = find_checkpoint(unet_dir, WEIGHTS_PREFIX, variant)
    if weights_path is None:
        raise FileNotFoundError(f"No UNet weights in {unet_dir} (found {sorted(os.listdir(unet_dir))}). "
                                f"{_layout_help(variant)}")
    params = convert_state_dict(load_safetensors(weights_path), param_shapes(module), dtype, weights_path)
    return module, params
