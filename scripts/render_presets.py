"""Renders every pose preset from several azimuths into one labelled PNG sheet.

  python scripts/render_presets.py [--body SMPLX_NEUTRAL.npz] [--out outputs/presets.png]

One row per preset (front, front-left, left side, back, right side). The built-in body is used unless
--body names an SMPL-X file. Each posed body is centred at its mean vertex (docs/method.md §2.1's default);
'lying' is laid on its back with `body.presets.LYING_GLOBAL_ORIENT`.
"""
import argparse

import jax
import numpy as np

from ifcommon import save_png
from body import load_body
from body.body_render import orbit_cameras, render_mesh
from pose.image_sheet import image_grid
from body.presets import LYING_GLOBAL_ORIENT, PRESETS

AZIMUTHS = (0, 45, 90, 180, 270)
VIEW_NAMES = ("front", "front-left", "left", "back", "right")


def render_sheet(body, size=256, distance=3.2, fov_deg=40.0, elevation_deg=10.0):
    """uint8 sheet [rows, cols, 3]: one row per preset, one column per azimuth."""
    names = list(PRESETS)
    poses = np.stack([PRESETS[n] for n in names])
    orients = np.zeros((len(names), 3), np.float32)
    orients[names.index("lying")] = LYING_GLOBAL_ORIENT
    verts, _ = jax.jit(jax.vmap(lambda p, g: body.forward(p, g)))(poses, orients)
    verts = np.asarray(verts - verts.mean(axis=1, keepdims=True))
    n_views = len(AZIMUTHS)
    cams = orbit_cameras(np.tile(AZIMUTHS, len(names)), np.full(len(names) * n_views, elevation_deg),
                         distance, fov_deg, size)
    images = render_mesh(np.repeat(verts, n_views, axis=0), body.faces, cams,
                         vertex_colors=body.vertex_colors, chunk=n_views)["image"]
    labels = [f"{n}: {v}" for n in names for v in VIEW_NAMES]
    return image_grid(np.asarray(images), labels, cols=n_views)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--body", default="", help="SMPL-X model file (.npz); empty: the built-in body")
    parser.add_argument("--out", default="outputs/presets.png", help="PNG sheet to write")
    parser.add_argument("--size", type=int, default=256, help="pixels per view")
    args = parser.parse_args()
    sheet = render_sheet(load_body(args.body), size=args.size)
    save_png(args.out, sheet)
    print(f"wrote {args.out} ({sheet.shape[1]}x{sheet.shape[0]})")


if __name__ == "__main__":
    main()
