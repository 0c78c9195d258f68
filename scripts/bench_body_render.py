"""Benchmark: body renderer at the pose stage's size and the posed-body prior's build.

Full size (GPU): 2048 poses x 4 views x 224^2 of the built-in body, as the codebook renders them,
then BodyPrior.build at 128^3 and 256^3.  --small: a CPU-sized check that the script works.

  python scripts/bench_body_render.py            # on the GPU machine
  JAX_PLATFORMS=cpu python scripts/bench_body_render.py --small
"""

import argparse
import time

import jax
import numpy as np

from body import PRESETS, BodyPrior, builtin_body, guide_body, orbit_cameras, render_mesh
from body import body_render


def _timed(fn):
    t = time.perf_counter()
    out = jax.block_until_ready(fn())
    return out, time.perf_counter() - t


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="CPU-sized run")
    parser.add_argument("--poses", type=int, default=2048)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--chunk", type=int, default=512, help="views per jitted call")
    args = parser.parse_args()
    if args.small:
        args.poses, args.chunk = 8, 16
    resolutions = (64,) if args.small else (128, 256)

    body = builtin_body()
    rng = np.random.default_rng(0)
    presets = np.stack(list(PRESETS.values()))
    body_pose = presets[rng.integers(0, len(presets), args.poses)]
    body_pose = body_pose + rng.normal(0, 0.1, body_pose.shape).astype(np.float32)
    verts, _ = jax.jit(jax.vmap(body.forward))(body_pose)
    verts = jax.numpy.repeat(verts, 4, axis=0)  # 4 views per pose
    num_views = verts.shape[0]
    azimuth = np.tile([0.0, 90.0, 180.0, 270.0], args.poses)
    elevation = rng.normal(0.0, 0.3, num_views)
    cams = orbit_cameras(azimuth, elevation, 2.7, fov_deg=60.0, size=args.size)
    print(
        f"device: {jax.devices()[0].device_kind}; body: {body.faces.shape[0]} faces, "
        f"{verts.shape[1]} vertices"
    )

    first_chunk = body_render._take((verts, cams), 0, min(args.chunk, num_views), args.chunk)
    spans = np.asarray(body_render._face_spans(first_chunk[0], body.faces, first_chunk[1]))
    windows, groups, brute = body_render._plan(spans)
    sizes = ", ".join(f"{k}:{int(np.sum(g >= 0))}" for k, g in zip(windows, groups))
    render = lambda: render_mesh(
        verts, body.faces, cams, vertex_colors=body.vertex_colors, chunk=args.chunk
    )["image"]
    _, first = _timed(render)
    images, second = _timed(render)
    print(
        "| views | size | chunk | faces per window K (1st chunk) | brute-force faces | first call s | "
        "warm s | views/s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    print(
        f"| {num_views} | {args.size} | {args.chunk} | {sizes} | {int(np.sum(brute >= 0))} | "
        f"{first:.2f} | {second:.2f} | {num_views / second:.0f} |"
    )
    assert np.isfinite(np.asarray(images[:4])).all()

    guide = guide_body(body, presets[0], "default")
    print("\n| prior resolution | cell cm | build s |")
    print("|---|---|---|")
    for res in resolutions:
        build = lambda: BodyPrior.build(guide.vertices, guide.faces, resolution=res).grid
        _, seconds = _timed(build)
        print(f"| {res}^3 | {400 / (res - 1):.2f} | {seconds:.2f} |")


if __name__ == "__main__":
    main()
