"""The interaction stage end to end against a known answer: the reference scene at release sizes.

Trains configs/reference_chair.py (sitting_on_a_chair's sizes, schedules and losses: 64x64 rays,
2^19 x 16-level grids, 10 000 steps; guidance: the ideal denoiser of the built-in body on the
built-in chair) and scores the scene with interfusion_jax.metrics at the milestone steps. Prints
one table of metrics per milestone, the wall time of the steps and of the whole run, and the
sampler's truncation over all steps. Targets at 10 000 steps (issue 9): iou_object >= 0.8,
iou_human >= 0.8, psnr_interaction >= 25 dB, penetration < 0.01.

    GPU:        python scripts/bench_reference.py
    CPU check:  python scripts/bench_reference.py --small
"""
import argparse
import json
import os
import sys
import time

import jax
import numpy as np
from tqdm import tqdm

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from interfusion_jax.config import load_config  # noqa: E402
from interfusion_jax.evaluate import make_eval_renderer  # noqa: E402
from interfusion_jax.metrics import run_metrics  # noqa: E402
from interfusion_jax.run_dir import Run  # noqa: E402
from interfusion_jax.scene import VIEWS  # noqa: E402
from interfusion_jax.train import build, make_center_fn  # noqa: E402
from interfusion_jax.train_step import make_train_step  # noqa: E402

COLUMNS = ("iou_object", "iou_human", "psnr_object", "psnr_human", "psnr_interaction",
           "chamfer_object", "chamfer_human", "penetration", "contact_gap", "contact_area",
           "object_volume")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--small", action="store_true", help="the demo's sizes (CPU check)")
    ap.add_argument("--milestones", default="1000,2000,5000,10000")
    ap.add_argument("--views", type=int, default=8, help="test views for the PSNRs")
    ap.add_argument("--out", default="/tmp/bench_reference", help="metrics.json per milestone")
    ap.add_argument("overrides", nargs="*", help="config overrides, e.g. render.max_samples=65536")
    args = ap.parse_args()
    milestones = sorted(int(m) for m in args.milestones.split(","))

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    scene = "demo" if args.small else "reference_chair"
    cfg = load_config(os.path.join(root, "configs", f"{scene}.py"),
                      [f"train.max_steps={milestones[-1]}", f"output_dir={args.out}"]
                      + args.overrides)
    t_start = time.perf_counter()
    model, state, guidance, body, guide = build(cfg, jax.random.PRNGKey(cfg.seed))
    step_fn = make_train_step(model, guidance, cfg)
    center_fn = make_center_fn(model, cfg)
    render = make_eval_renderer(model, cfg)
    print(f"[bench_reference] {guidance.description}; built in "
          f"{time.perf_counter() - t_start:.1f} s", file=sys.stderr)

    rows, cuts, t_steps, t_metrics = [], [], 0.0, 0.0
    for step in tqdm(range(milestones[-1]), desc=cfg.name):
        t0 = time.perf_counter()
        if step > 0 and step % cfg.train.object_center_every == 0:
            state = state.replace(center=center_fn(state.params["object"], state.center))
        state, metrics, _ = step_fn(state)
        cuts.append({k: metrics[k] for k in ("truncated_rays", "open_truncated_rays")})
        if step + 1 in milestones:
            jax.block_until_ready(state)
            t_steps += time.perf_counter() - t0
            t0 = time.perf_counter()
            scores = run_metrics(Run(cfg, model, state, guide, body, render), views=args.views)
            t_metrics += time.perf_counter() - t0
            rows.append(scores)
            os.makedirs(args.out, exist_ok=True)
            with open(os.path.join(args.out, f"metrics_{step + 1:06d}.json"), "w") as f:
                json.dump(scores, f, indent=2)
            tqdm.write(json.dumps(scores))
        else:
            t_steps += time.perf_counter() - t0
    cut = {k: np.stack([np.asarray(c[k]) for c in jax.device_get(cuts)]) for k in cuts[0]}

    print(f"device: {jax.devices()[0].device_kind}  config: {cfg.name}  guidance: "
          f"{guidance.description}")
    print(f"steps: {milestones[-1]} in {t_steps:.0f} s ({1e3 * t_steps / milestones[-1]:.1f} ms "
          f"each, compile included); metrics {t_metrics:.0f} s; whole run "
          f"{time.perf_counter() - t_start:.0f} s")
    print("| step | " + " | ".join(COLUMNS) + " |")
    print("|---" * (len(COLUMNS) + 1) + "|")
    for row in rows:
        print(f"| {row['step']} | " + " | ".join(
            "-" if row.get(k) is None else f"{row[k]:.4g}" for k in COLUMNS) + " |")
    print("| render | cut rays median | cut rays max | cut open max | steps cutting open rays |")
    print("|---|---|---|---|---|")
    for v, name in enumerate(VIEWS):
        c, o = cut["truncated_rays"][:, v], cut["open_truncated_rays"][:, v]
        print(f"| {name} | {np.median(c):.2%} | {c.max():.2%} | {o.max():.2%} | "
              f"{np.mean(o > 0):.2%} |")


if __name__ == "__main__":
    main()
