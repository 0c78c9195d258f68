"""Writing files so that no half-written file is ever left under the final name.

Each writer writes to a temporary name in the same folder and renames it into place; a failure
removes the temporary file.
"""
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
