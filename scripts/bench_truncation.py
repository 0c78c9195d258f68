"""What the sampler cuts in a training run: per render, per step, from step 0.

Runs `--steps` training steps of a scene config from scratch (release sizes by default) and
records, for each of the four renders (object, human, interaction, head) and every step, the
fraction of rays cut short, the fraction cut before they were opaque, the samples dropped, the
pruning rounds and the slots used. Prints one table (median and maximum per render, and the share
of steps that cut an open ray) and writes the last validation sheet to `--out`, to look for bands.

The guidance is the 4.43 B IF-I-XL-layout stand-in with random weights (labelled as such: the
blob-phase worst case), or with `--reference` the reference scene's ideal denoiser (realistic
density fields).

    GPU:        python scripts/bench_truncation.py --steps 2000 --out /tmp/trunc
    CPU check:  python scripts/bench_truncation.py --small --steps 20 --out /tmp/trunc
"""
import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from interfusion_jax.config import load_config  # noqa: E402
from interfusion_jax.evaluate import (make_eval_renderer, save_validation,  # noqa: E402
                                      validation_sheet)
from interfusion_jax.guidance_setup import DEMO_UNET  # noqa: E402
from interfusion_jax.scene import VIEWS  # noqa: E402
from interfusion_jax.train import build  # noqa: E402
from interfusion_jax.train_step import BUFFER_FIGURES, make_train_step  # noqa: E402
from scripts.bench_guidance import STAND_IN  # noqa: E402
from scripts.bench_train_step import stand_in_guidance  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--small", action="store_true", help="demo sizes and a tiny UNet (CPU check)")
    ap.add_argument("--reference", action="store_true", help="reference-scene guidance")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--out", required=True, help="folder for the validation sheet")
    ap.add_argument("overrides", nargs="*", help="config overrides, e.g. render.max_samples=65536")
    args = ap.parse_args()

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    scene = "demo" if args.small else ("reference_chair" if args.reference else "sitting_on_a_chair")
    overrides = [f"output_dir={args.out}"] + args.overrides
    if args.reference:
        overrides += ["guidance.kind=reference", "reference.object_mesh=builtin:chair"]
    cfg = load_config(os.path.join(root, "configs", f"{scene}.py"), overrides)
    key = jax.random.PRNGKey(cfg.seed)
    model, state, guidance = build(cfg, key)[:3]
    if not args.reference:
        unet = DEMO_UNET if args.small else STAND_IN
        guidance, _ = stand_in_guidance(cfg, unet, jnp.float32 if args.small else jnp.bfloat16,
                                        key)
    print(f"[bench_truncation] {guidance.description}", file=sys.stderr)
    step_fn = make_train_step(model, guidance, cfg)

    records, times = [], []
    for _ in tqdm(range(args.steps), desc="steps"):
        t0 = time.perf_counter()
        state, metrics, _ = step_fn(state)
        records.append({k: metrics[k] for k in BUFFER_FIGURES})
        if len(records) % 100 == 0:
            jax.block_until_ready(state)
        times.append(time.perf_counter() - t0)
    jax.block_until_ready(state)
    rec = {k: np.stack([np.asarray(r[k]) for r in jax.device_get(records)]) for k in records[0]}
    render = make_eval_renderer(model, cfg)
    sheet = save_validation(validation_sheet(render, state, cfg), state.step, args.out)

    print(f"device: {jax.devices()[0].device_kind}  scene: {cfg.name}  guidance: "
          f"{guidance.description}  steps: {args.steps}  rays: {cfg.render.width}x"
          f"{cfg.render.height}  budgets: max_samples {cfg.render.max_samples}, max_candidates "
          f"{cfg.render.max_candidates} x {cfg.render.max_rounds} rounds")
    print(f"step time median {1e3 * np.median(times[10:] or times):.1f} ms")
    print("| render | cut rays median | cut rays max | cut open median | cut open max | "
          "steps cutting open rays | dropped max | rounds median / max | slots median / max |")
    print("|---|---|---|---|---|---|---|---|---|")
    for v, name in enumerate(VIEWS):
        cut, cut_open = rec["truncated_rays"][:, v], rec["open_truncated_rays"][:, v]
        print(f"| {name} | {np.median(cut):.2%} | {cut.max():.2%} | {np.median(cut_open):.2%} | "
              f"{cut_open.max():.2%} | {np.mean(cut_open > 0):.2%} | "
              f"{rec['dropped_samples'][:, v].max()} | {np.median(rec['rounds'][:, v]):.0f} / "
              f"{rec['rounds'][:, v].max()} | {np.median(rec['num_samples'][:, v]):.0f} / "
              f"{rec['num_samples'][:, v].max()} |")
    any_open = np.any(rec["open_truncated_rays"] > 0, axis=1)
    print(f"steps with any open cut (any render): {np.mean(any_open):.2%}; validation sheet: "
          f"{sheet}")


if __name__ == "__main__":
    main()
