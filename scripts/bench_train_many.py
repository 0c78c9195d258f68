"""Scenes per hour of train_many on one device: N = 1, 2, 4 scenes per device at the release's sizes.

Each row times the jitted step of interfusion_jax.train_many (the training step vmapped over N
release scenes, one UNet call of batch 8·N) at train step --at_step, next to the single run's
step; scenes per hour count the training steps of train.max_steps alone (no validation, test or
export). The UNet is the 4.43 B-parameter stand-in of IF-I-XL's layout in bfloat16 (random
weights, scripts/bench_train_step.py); each scene has its own prompts' pseudo-random embeddings.
Prints one table.

    GPU:        python scripts/bench_train_many.py
    CPU check:  python scripts/bench_train_many.py --small
"""
import argparse
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from guidance import IFUNet  # noqa: E402
from interfusion_jax.config import load_config  # noqa: E402
from interfusion_jax.guidance_setup import UNet, load_unet  # noqa: E402
from interfusion_jax.train import build  # noqa: E402
from interfusion_jax.train_many import (active_slots, make_many_step, scene_mesh,  # noqa: E402
                                        step_inputs)
from interfusion_jax.train_step import make_train_step  # noqa: E402
from scripts.bench_guidance import STAND_IN  # noqa: E402
from scripts.bench_train_step import stand_in_guidance  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RELEASE_SCENES = ("sitting_on_a_chair", "riding_a_bike", "playing_the_guitar", "riding_a_horse",
                  "carrying_a_backpack", "pushing_a_shopping_cart", "reading_a_laptop",
                  "sitting_on_a_sofa", "jumping_a_skateboard", "playing_the_saxophone",
                  "riding_a_motorcycle")
# --small: toy sizes that compile in about a minute on a CPU.
SMALL = ["render.width=16", "render.height=16", "body.prior_resolution=24",
         "render.max_samples=16384", "guidance.kind=if"]


def scene_configs(n, small, overrides):
    """n release scenes (--small: the demo with n seeds and IF guidance of the demo UNet)."""
    if small:
        return [load_config(os.path.join(ROOT, "configs", "demo.py"),
                            SMALL + [f"seed={i}", f"name=demo{i}"] + overrides) for i in range(n)]
    return [load_config(os.path.join(ROOT, "configs", f"{name}.py"), overrides)
            for name in RELEASE_SCENES[:n]]


def time_steps(step, state, iters):
    """(first call [s], median of `iters` calls [ms]) of state -> state, after 3 warm calls."""
    t0 = time.perf_counter()
    state = jax.block_until_ready(step(state))
    first = time.perf_counter() - t0
    for _ in range(3):
        state = step(state)
    jax.block_until_ready(state)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        state = jax.block_until_ready(step(state))
        times.append(1e3 * (time.perf_counter() - t0))
    return first, statistics.median(times)


def peak_memory():
    stats = jax.devices()[0].memory_stats()
    return f"{stats['peak_bytes_in_use'] / 2**30:.1f}" if stats else "n/a"


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true",
                    help="toy sizes and the demo UNet (CPU check)")
    ap.add_argument("--per_device", type=int, nargs="+", default=[1, 2, 4],
                    help="scenes per device to time (default 1 2 4)")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--at_step", type=int, default=3000,
                    help="training step the timed steps run at (after the ambient-only phase)")
    ap.add_argument("overrides", nargs="*", help="config overrides for every scene")
    args = ap.parse_args()

    cfgs = scene_configs(max(args.per_device), args.small, ["output_dir=/tmp/bench"] + args.overrides)
    key = jax.random.PRNGKey(0)
    t0 = time.perf_counter()
    if args.small:
        unet, unet_name = load_unet(cfgs[0]), "demo UNet"
    else:
        guidance, n = stand_in_guidance(cfgs[0], STAND_IN, jnp.bfloat16, key)
        unet = UNet(IFUNet.from_config(STAND_IN, dtype=jnp.bfloat16, source="stand-in"),
                    guidance.arrays["unet"], guidance.description)
        unet_name = f"IF-I-XL layout stand-in, {n / 1e9:.2f} B params, random weights, bfloat16"
    builts = [build(cfg, jax.random.PRNGKey(cfg.seed), unet) for cfg in cfgs]
    print(f"built {len(builts)} scenes in {time.perf_counter() - t0:.1f} s", file=sys.stderr,
          flush=True)
    max_steps = cfgs[0].train.max_steps

    def at_step(state):
        # A copy: a step donates its state's buffers, and the built states serve every row.
        return jax.tree_util.tree_map(jnp.copy, state).replace(
            step=jnp.asarray(args.at_step, jnp.int32))

    single = make_train_step(builts[0].model, builts[0].guidance, cfgs[0])
    first, ms = time_steps(lambda s: single(s)[0], at_step(builts[0].state), args.iters)
    rows = [("single run (train)", 1, first, ms, peak_memory())]
    for n in args.per_device:
        mesh, slots = scene_mesh(n, n)
        many = make_many_step(builts[0].model, builts[0].guidance, cfgs[0], mesh)
        states, arrays, shared = step_inputs(builts[:n], cfgs[:n],
                                             [at_step(b.state) for b in builts[:n]],
                                             mesh, slots)
        active = active_slots([True] * n, slots, mesh)
        first, ms = time_steps(lambda s, a=arrays, sh=shared, ac=active: many(s, a, sh, ac)[0],
                               states, args.iters)
        rows.append((f"train_many, N = {n}", n, first, ms, peak_memory()))
        del states, arrays, shared

    print(f"device: {jax.devices()[0].device_kind}; UNet: {unet_name}; scenes: "
          f"{', '.join(c.name for c in cfgs)}; {cfgs[0].render.width}x{cfgs[0].render.height} "
          f"rays, {max_steps} steps a scene (training steps only)")
    print("| step | scenes per device | step median [ms] | ms per scene-step | scenes per hour "
          "| first step [s] | peak GiB |")
    print("|---|---|---|---|---|---|---|")
    for name, n, first, ms, peak in rows:
        print(f"| {name} | {n} | {ms:.1f} | {ms / n:.1f} | {n * 3.6e6 / (ms * max_steps):.2f} "
              f"| {first:.1f} | {peak} |")


if __name__ == "__main__":
    main()
