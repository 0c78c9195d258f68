"""Writing files so that no half-written file is ever left under the final name, and the user's
cache folder.

Each writer writes to a temporary name in the same folder and renames it into place; a failure
removes the temporary file.
"""
import hashlib
import os

import numpy as np


def atomic_write(path, write, suffix=""):
    """write(tmp_path) to a temporary name in the same folder (ending in `suffix`, for writers that
    append one), then os.replace, so no half-written file is ever left under `path`."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.tmp{suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_savez(path, **arrays):
    atomic_write(path, lambda t: np.savez(t, **arrays), ".npz")


def save_npy(path, array):
    atomic_write(path, lambda t: np.save(t, np.asarray(array)), ".npy")


def save_text(path, text):
    def write(t):
        with open(t, "w") as f:
            f.write(text)

    atomic_write(path, write)


def save_png(path, image):
    """uint8 or [0, 1] float [H, W, 3] -> PNG."""
    from PIL import Image

    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = np.round(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)
    atomic_write(path, lambda t: Image.fromarray(image).save(t, format="PNG"))


def cached_arrays(name, key, compute):
    """compute() -> {name: array}, kept in the user's cache under `name` and a digest of `key`
    (bytes: whatever the result depends on, the code that makes it included), so that later
    processes load it instead of computing it again."""
    digest = hashlib.sha256(key).hexdigest()[:24]
    path = user_cache_dir("arrays", f"{name}-{digest}.npz")
    if os.path.isfile(path):
        try:
            with np.load(path) as f:
                return {k: f[k] for k in f.files}
        except (OSError, ValueError):  # a damaged entry is computed again and replaced
            pass
    arrays = compute()
    atomic_savez(path, **arrays)
    return arrays


def source_bytes(module):
    """The source file of `module`, as part of a cache key: a change to the code invalidates."""
    with open(module.__file__, "rb") as f:
        return f.read()


def user_cache_dir(*parts):
    """`$XDG_CACHE_HOME/interfusion_jax/<parts>` (~/.cache when unset): caches never land in the
    working directory."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(root, "interfusion_jax", *parts)
