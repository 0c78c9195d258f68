"""Evaluation renders of a trained scene: milliseconds per camera by ray chunk and buffer sizes.

Trains the reference scene (configs/reference_chair.py, release sizes, the ideal denoiser of the
built-in body on the built-in chair) for `--steps` steps so that its occupancy grids look like a
finished scene's, then renders cameras of the test circle (object, human and interaction views at
test.resolution) with evaluate.make_eval_renderer at each setting of `--settings`
(ray_chunk:samples_per_ray:candidates_per_ray). Prints one table: compile seconds, milliseconds
per camera, the test videos' render time it implies (test.views cameras), a validation sheet's,
and the largest difference to the first setting's images (complete renders: float rounding only).

    GPU:        python scripts/bench_eval_render.py
    CPU check:  python scripts/bench_eval_render.py --small
"""
import argparse
import os
import sys
import time

import jax
import numpy as np
from tqdm import tqdm

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from interfusion_jax.config import load_config  # noqa: E402
from interfusion_jax.evaluate import eval_circle, make_eval_renderer, validation_size  # noqa: E402
from interfusion_jax.train import build, center_due, make_center_fn  # noqa: E402
from interfusion_jax.train_step import make_train_step  # noqa: E402
from scripts.bench_train_step import kernel_table  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETTINGS = "8192:32:128,32768:8:32,65536:4:16,65536:2:8,262144:2:8,262144:1:4"
SMALL_SETTINGS = "256:32:128,1024:4:16,4096:1:4"


def trained_state(cfg, steps):
    """The reference scene's state after `steps` training steps, and its model."""
    model, state, guidance = build(cfg, jax.random.PRNGKey(cfg.seed))[:3]
    step_fn, center_fn = make_train_step(model, guidance, cfg), make_center_fn(model, cfg)
    for step in tqdm(range(steps), desc="train reference scene", leave=False):
        if center_due(cfg, step):
            state = state.replace(center=center_fn(state.params["object"], state.center))
        state = step_fn(state)[0]
    return model, jax.block_until_ready(state)


def time_cameras(render, state, cams, size, n):
    """(first call [s], median ms per camera over cameras 1..n, rgb of cameras 0..n)."""
    def one(i):
        return render(state.params, state.grids, state.center, cams.c2w[i], cams.fovy[i],
                      cams.light_position[i], state.step, size)["rgb"]

    t0 = time.perf_counter()
    images = [np.asarray(one(0))]
    first = time.perf_counter() - t0
    times = []
    for i in range(1, n + 1):
        t0 = time.perf_counter()
        images.append(np.asarray(one(i)))
        times.append(1e3 * (time.perf_counter() - t0))
    return first, float(np.median(times)), np.stack(images)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--small", action="store_true", help="the demo's sizes (CPU check)")
    ap.add_argument("--steps", type=int, default=3000, help="training steps before rendering")
    ap.add_argument("--cameras", type=int, default=8, help="timed cameras per setting")
    ap.add_argument("--settings", help=f"ray_chunk:samples_per_ray:candidates_per_ray,... "
                                       f"(default {SETTINGS}; --small {SMALL_SETTINGS})")
    ap.add_argument("--trace", help="folder for a jax.profiler trace of the first setting's "
                                    "cameras; prints device time per camera by kernel")
    ap.add_argument("overrides", nargs="*", help="config overrides, e.g. test.resolution=256")
    args = ap.parse_args()
    settings = [tuple(int(v) for v in s.split(":"))
                for s in (args.settings or (SMALL_SETTINGS if args.small else SETTINGS)).split(",")]

    scene = "demo" if args.small else "reference_chair"
    overrides = (["guidance.kind=reference", "reference.object_mesh=builtin:chair"]
                 if args.small else [])
    cfg = load_config(os.path.join(ROOT, "configs", f"{scene}.py"),
                      overrides + ["output_dir=/tmp/bench_eval_render"] + args.overrides)
    t0 = time.perf_counter()
    model, state = trained_state(cfg, args.steps)
    print(f"[bench_eval_render] {cfg.name}: {args.steps} steps trained in "
          f"{time.perf_counter() - t0:.0f} s", file=sys.stderr)
    cams = eval_circle(cfg, cfg.test.views)
    size, val_size = cfg.test.resolution, validation_size(cfg)

    print(f"device: {jax.devices()[0].device_kind}; {cfg.name} after {args.steps} steps; "
          f"{size}^2 test images, {val_size}^2 validation images, 3 views per camera")
    print("| ray_chunk | samples/ray | candidates/ray | compile [s] | ms/camera | "
          f"test videos ({cfg.test.views} cameras) [s] | ms/val camera | "
          f"val sheet ({cfg.train.val_views}) [s] | max diff |")
    print("|---|---|---|---|---|---|---|---|---|", flush=True)
    first_images = None
    for chunk, samples, candidates in settings:
        render = make_eval_renderer(model, _with_chunk(cfg, chunk), samples, candidates)
        compile_s, ms, images = time_cameras(render, state, cams, size, args.cameras)
        _, val_ms, _ = time_cameras(render, state, cams, val_size, args.cameras)
        if first_images is None:
            first_images, diff = images, 0.0
            if args.trace:
                with jax.profiler.trace(args.trace, create_perfetto_trace=True):
                    time_cameras(render, state, cams, size, args.cameras)
        else:
            diff = float(np.max(np.abs(images - first_images)))
        print(f"| {chunk} | {samples} | {candidates} | {compile_s:.1f} | {ms:.1f} | "
              f"{ms * cfg.test.views / 1e3:.1f} | {val_ms:.1f} | "
              f"{val_ms * cfg.train.val_views / 1e3:.2f} | {diff:.2g} |", flush=True)
    if args.trace:
        print(kernel_table(args.trace, steps=args.cameras + 1))


def _with_chunk(cfg, chunk):
    cfg = cfg.copy_and_resolve_references()
    cfg.test.ray_chunk = chunk
    return cfg


if __name__ == "__main__":
    main()
