"""Read Hugging Face safetensors checkpoints (single file or sharded with an index) into NumPy, no torch.

File names follow diffusers/transformers: `{prefix}.safetensors`, `{prefix}.{variant}.safetensors`,
`{prefix}.safetensors.index.json`, `{prefix}.safetensors.index.{variant}.json` (the index's
`weight_map` names the shard files, which lie in the same folder). bfloat16 tensors come back as
`ml_dtypes.bfloat16` arrays. A `Checkpoint` reads a tensor only when asked for it, so that
`assemble_params` can read, convert and send a model's tensors to the device a few at a time on
several threads, instead of holding the whole file in host memory first.
"""

import json
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from safetensors import safe_open
from tqdm import tqdm


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


class Checkpoint(Mapping):
    """The tensors of one .safetensors file or of all shards listed by a .safetensors.index*.json:
    key -> np.ndarray, read from the file on each access; `shape(key)` and `dtype(key)` from the
    headers alone. A key in two shards raises naming it."""

    def __init__(self, path: str):
        self._file_of = {}
        for shard in _shards(path):
            f = _open(shard)
            for key in f.keys():
                if key in self._file_of:
                    raise ValueError(f"{shard}: tensor {key!r} appears in more than one shard of {path}.")
                self._file_of[key] = f

    def __getitem__(self, key: str) -> np.ndarray:
        return self._file_of[key].get_tensor(key)

    def __iter__(self):
        return iter(self._file_of)

    def __len__(self) -> int:
        return len(self._file_of)

    def shape(self, key: str) -> tuple:
        return tuple(self._file_of[key].get_slice(key).get_shape())

    def dtype(self, key: str) -> str:
        """The tensor's dtype as the header names it: "F16", "BF16", "F32", ..."""
        return self._file_of[key].get_slice(key).get_dtype()


def load_safetensors(path: str) -> Checkpoint:
    """The tensors of one .safetensors file or of all shards listed by a .safetensors.index*.json."""
    return Checkpoint(path)


def load_safetensors_dir(directory: str, prefix: str, variant: str | None = None) -> Checkpoint:
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


def dense_kernel(weight: np.ndarray) -> np.ndarray:
    """A torch Linear weight [out, in] as a Flax Dense kernel [in, out], C-contiguous.

    In two passes over square tiles: the tiles move first (runs of a tile's width of contiguous
    values), then each tile transposes within the cache. numpy's one-pass transpose of a large
    matrix misses the cache at every value: IF's float16 kernels transposed at 0.3-0.5 GB/s on a
    2-core CPU, against 0.9-1.6 GB/s in tiles.
    """
    rows, cols = weight.shape
    tile = next((t for t in (64, 32, 16, 8) if rows % t == 0 and cols % t == 0), None)
    if tile is None:
        return np.ascontiguousarray(weight.T)
    tiles = np.ascontiguousarray(
        weight.reshape(rows // tile, tile, cols // tile, tile).transpose(2, 0, 1, 3))
    return np.ascontiguousarray(tiles.transpose(0, 3, 1, 2)).reshape(cols, rows)


def assemble_params(tensors: Mapping, by_path: dict, unused: list, expected: dict, to_flax_layout, dtype,
                    source: str, model: str, workers: int | None = None) -> dict:
    """A Flax param tree shaped like `expected` from checkpoint `tensors` (a Checkpoint or a dict).

    by_path: Flax path (tuple) -> checkpoint key; unused: checkpoint keys the model does not take;
    to_flax_layout(array, path) -> array in Flax layout. Raises naming the unused tensors, the missing
    parameters (both at once) or a shape mismatch; `source` names the file and `model` the network.
    Tensors are read, converted and sent to the device on `workers` threads (default: one per CPU
    core, at most 8), with a progress bar: numpy's copies and the transfers release the GIL.
    """
    expected_flat = traverse_util.flatten_dict(expected)
    missing = sorted("/".join(p) for p in expected_flat.keys() - by_path.keys())
    if unused or missing:
        raise ValueError(f"{source}: checkpoint tensors do not match the {model} built from config.json.\n"
                         f"  tensors in the file that the model does not use ({len(unused)}): {sorted(unused)}\n"
                         f"  model parameters absent from the file ({len(missing)}): {missing}")

    def load(path):
        tensor = tensors[by_path[path]]
        array = to_flax_layout(tensor, path)
        if tuple(array.shape) != tuple(expected_flat[path].shape):
            raise ValueError(f"{source}: tensor {by_path[path]!r} has shape {tensor.shape}; the config "
                             f"implies {tuple(expected_flat[path].shape)} (Flax layout) for {'/'.join(path)}.")
        # Cast on the device: host-side bfloat16 casts of billions of values are slow.
        return jnp.asarray(np.ascontiguousarray(array)).astype(dtype)

    paths = list(expected_flat)
    with ThreadPoolExecutor(workers or min(8, os.cpu_count() or 1)) as pool:
        loaded = pool.map(load, paths)
        try:
            flat = dict(zip(paths, tqdm(loaded, total=len(paths), desc=f"{model} weights", unit="tensor",
                                        leave=False)))
        except BaseException:
            pool.shutdown(cancel_futures=True)  # a wrong shape or Ctrl-C: read nothing more
            raise
    return traverse_util.unflatten_dict(flat)
