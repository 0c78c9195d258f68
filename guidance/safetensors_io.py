"""Read Hugging Face safetensors checkpoints (single file or sharded with an index) into NumPy, no torch.

File names follow diffusers/transformers: `{prefix}.safetensors`, `{prefix}.{variant}.safetensors`,
`{prefix}.safetensors.index.json`, `{prefix}.safetensors.index.{variant}.json` (the index's
`weight_map` names the shard files, which lie in the same folder). bfloat16 tensors come back as
`ml_dtypes.bfloat16` arrays.
"""

import json
import os

import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from safetensors import safe_open


def candidate_files(prefix: str, variant: str | None) -> list[str]:
    """The file names that hold a `prefix` checkpoint of `variant`, in the order they are tried."""
    if variant:
        return [f"{prefix}.{variant}.safetensors", f"{prefix}.safetensors.index.{variant}.json"]
    return [f"{prefix}.safetensors", f"{prefix}.safetensors.index.json"]


def find_checkpoint(directory: str, prefix: str, variant: str | None = None) -> str | None:
    """Path of the single file or index for `variant`; with variant None, the plain files, else the
    fp16 variant (the only file IF's repositories are sometimes fetched with). None if absent."""
    variants = [variant] if variant else [None, "fp16"]
    for v in variants:
        for name in candidate_files(prefix, v):
            path = os.path.join(directory, name)
            if os.path.isfile(path):
                return path
    return None


def _shards(path: str) -> list[str]:
    if not path.endswith(".json"):
        return [path]
    with open(path) as f:
        try:
            weight_map = json.load(f)["weight_map"]
        except (json.JSONDecodeError, KeyError) as e:
            raise ValueError(f"{path}: not a safetensors index (expected JSON with a 'weight_map'): {e}") from e
    folder = os.path.dirname(path)
    shards = sorted(set(weight_map.values()))
    missing = [s for s in shards if not os.path.isfile(os.path.join(folder, s))]
    if missing:
        raise FileNotFoundError(f"{path}: the index names shard files that are missing in {folder}: {missing}")
    return [os.path.join(folder, s) for s in shards]


def _open(shard: str):
    """safe_open of one file; a damaged file (truncated download, wrong format) raises naming it."""
    try:
        return safe_open(shard, framework="numpy")
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
        raise ValueError(f"{shard}: not a readable safetensors file (a truncated or interrupted "
                         f"download?): {e}") from None


def check_safetensors(path: str) -> None:
    """Read the headers of a .safetensors file or of every shard of an index: a damaged file is
    found before any weight is loaded (ValueError naming it)."""
    for shard in _shards(path):
        with _open(shard):
            pass


def load_safetensors(path: str) -> dict[str, np.ndarray]:
    """All tensors of one .safetensors file or of all shards listed by a .safetensors.index*.json."""
    tensors = {}
    for shard in _shards(path):
        with _open(shard) as f:
            for key in f.keys():
                if key in tensors:
                    raise ValueError(f"{shard}: tensor {key!r} appears in more than one shard of {path}.")
                tensors[key] = f.get_tensor(key)
    return tensors


def load_safetensors_dir(directory: str, prefix: str, variant: str | None = None) -> dict[str, np.ndarray]:
    """Tensors of the `prefix` checkpoint in `directory` (e.g. prefix "diffusion_pytorch_model" for a
    diffusers model, "model" for a transformers model); variant e.g. "fp16" (see find_checkpoint)."""
    path = find_checkpoint(directory, prefix, variant)
    if path is None:
        variants = [variant] if variant else [None, "fp16"]
        expected = [n for v in variants for n in candidate_files(prefix, v)]
        present = sorted(os.listdir(directory)) if os.path.isdir(directory) else "folder does not exist"
        raise FileNotFoundError(f"No safetensors checkpoint in {directory}: expected one of {expected}; "
                                f"found {present}.")
    return load_safetensors(path)


def assemble_params(tensors: dict, by_path: dict, unused: list, expected: dict, to_flax_layout, dtype,
                    source: str, model: str) -> dict:
    """A Flax param tree shaped like `expected` from checkpoint `tensors`.

    by_path: Flax path (tuple) -> checkpoint key; unused: checkpoint keys the model does not take;
    to_flax_layout(array, path) -> array in Flax layout. Raises naming the unused tensors, the missing
    parameters (both at once) or a shape mismatch; `source` names the file and `model` the network.
    """
    expected_flat = traverse_util.flatten_dict(expected)
    missing = sorted("/".join(p) for p in expected_flat.keys() - by_path.keys())
    if unused or missing:
        raise ValueError(f"{source}: checkpoint tensors do not match the {model} built from config.json.\n"
                         f"  tensors in the file that the model does not use ({len(unused)}): {sorted(unused)}\n"
                         f"  model parameters absent from the file ({len(missing)}): {missing}")
    flat = {}
    for path, shape in expected_flat.items():
        array = to_flax_layout(tensors[by_path[path]], path)
        if tuple(array.shape) != tuple(shape.shape):
            raise ValueError(f"{source}: tensor {by_path[path]!r} has shape {tensors[by_path[path]].shape}; "
                             f"the config implies {tuple(shape.shape)} (Flax layout) for {'/'.join(path)}.")
        # Cast on the device: host-side bfloat16 casts of billions of values are slow, while the
        # layout change is one host copy at memory speed (2.4 GB/s for IF's largest kernel here).
        flat[path] = jnp.asarray(np.ascontiguousarray(array)).astype(dtype)
    return traverse_util.unflatten_dict(flat)
