"""Contact sheets: images tiled in a grid, each with an optional text label (PIL's default font)."""

import numpy as np
from PIL import Image, ImageDraw


def image_grid(images, labels=None, cols=None, pad=2, background=255):
    """images [N, H, W, 3] (floats in [0, 1] or uint8) -> uint8 sheet [rows*(H+pad)+pad, ...].

    labels: N strings drawn at each tile's top-left corner on a white box, or None. cols: tiles per
    row (default: all in one row up to 8, then ceil(sqrt(N))).
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"image_grid: images must be [N, H, W, 3], got {images.shape}")
    if labels is not None and len(labels) != len(images):
        raise ValueError(f"image_grid: {len(labels)} labels for {len(images)} images")
    if images.dtype != np.uint8:
        images = np.round(np.clip(images, 0.0, 1.0) * 255).astype(np.uint8)
    n, h, w, _ = images.shape
    if cols is None:
        cols = n if n <= 8 else int(np.ceil(np.sqrt(n)))
    rows = -(-n // cols)
    sheet = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), background, np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        sheet[
            pad + r * (h + pad) : pad + r * (h + pad) + h,
            pad + c * (w + pad) : pad + c * (w + pad) + w,
        ] = img
    if labels is None:
        return sheet
    canvas = Image.fromarray(sheet)
    draw = ImageDraw.Draw(canvas)
    for i, label in enumerate(labels):
        r, c = divmod(i, cols)
        x, y = pad + c * (w + pad) + 2, pad + r * (h + pad) + 2
        box = draw.textbbox((x, y), str(label))
        draw.rectangle((box[0] - 1, box[1] - 1, box[2] + 1, box[3] + 1), fill=(255, 255, 255))
        draw.text((x, y), str(label), fill=(0, 0, 0))
    return np.asarray(canvas)
