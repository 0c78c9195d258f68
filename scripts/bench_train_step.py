"""Milliseconds per training step of the interaction stage at the release's sizes.

One jitted step = a random camera, four renders (object, human, interaction, head; 64x64 rays,
2^19-entry x 16-level hash grids), one batch-8 IF UNet call for the four SDS terms, the losses and
the Adam update. The UNet is the 4.43 B-parameter stand-in of docs/method.md §3 (IF-I-XL's layout, random
weights, labelled as such) in bfloat16; the prompt embeddings are random. Prints one table.

    GPU:        python scripts/bench_train_step.py
    CPU check:  python scripts/bench_train_step.py --small
"""
import argparse
import collections
import gzip
import json
import os
import re
import statistics
import sys
import time

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from guidance import IFUNet  # noqa: E402
from interfusion_jax.config import load_config  # noqa: E402
from guidance import MAX_LENGTH  # noqa: E402
from interfusion_jax.guidance_setup import DEMO_UNET, if_guidance  # noqa: E402
from interfusion_jax.train import build  # noqa: E402
from interfusion_jax.train_step import make_train_step  # noqa: E402
from scripts.bench_guidance import STAND_IN, stand_in_params  # noqa: E402


def stand_in_guidance(cfg, unet_config, dtype, key):
    module = IFUNet.from_config(unet_config, dtype=dtype, source="stand-in")
    params = stand_in_params(module, key, dtype)
    n_leaves = len(jax.tree_util.tree_leaves(params))
    embeddings = jax.random.normal(jax.random.fold_in(key, n_leaves),
                                   (17, MAX_LENGTH, unet_config["encoder_hid_dim"]))
    n = sum(p.size for p in jax.tree_util.tree_leaves(params))
    return if_guidance(cfg, module, params, embeddings, f"stand-in {n / 1e9:.2f} B"), n


def print_table(heading, rows):
    """A two-column markdown table of (name, value) rows."""
    width = max(len(r[0]) for r in rows)
    print(f"| {heading.ljust(width)} | value |\n|{'-' * (width + 2)}|-------|")
    for name, value in rows:
        print(f"| {name.ljust(width)} | {value} |")


# Kernel kinds by name, first match wins: cuDNN convolutions, fused attention, matrix products,
# layout changes, memory-bound indexing, copies.
KERNEL_KINDS = (("convolution", r"fprop|dgrad|wgrad|convolution"),
                ("attention", r"sdpa|flash|fmha"),
                ("matrix product", r"gemm|nvjet|cublas|cutlass|xmma"),
                ("transpose", r"transpose"),
                ("scatter / gather / sort", r"scatter|gather|sort"),
                ("copy / memset", r"memcpy|memset"))


def trace_events(trace_dir):
    """The events of the perfetto trace jax.profiler wrote under trace_dir, and its path."""
    path = next(os.path.join(d, f) for d, _, fs in os.walk(trace_dir) for f in fs
                if f == "perfetto_trace.json.gz")
    with gzip.open(path) as f:
        trace = json.load(f)
    return (trace["traceEvents"] if isinstance(trace, dict) else trace), path


def _process_ids(events, marker):
    return {e["pid"] for e in events if e.get("ph") == "M" and e.get("name") == "process_name"
            and marker in str(e.get("args", {}).get("name", ""))}


def kernel_table(trace_dir, steps, top=25):
    """Device time per step by kernel name, from the perfetto trace jax.profiler wrote."""
    events, path = trace_events(trace_dir)
    # Device streams are the threads whose process is named after the GPU.
    gpu_pids = _process_ids(events, "/device:GPU")
    if not gpu_pids:
        names = {str(e.get("args", {}).get("name")) for e in events if e.get("name") == "process_name"}
        return f"no GPU streams in {path}; processes: {sorted(names)}"
    totals = collections.Counter()
    for e in events:
        if e.get("ph") == "X" and e.get("pid") in gpu_pids:
            totals[e["name"][:90]] += e.get("dur", 0) / 1e3 / steps
    kinds = collections.Counter()
    for name, ms in totals.items():
        kinds[next((kind for kind, pattern in KERNEL_KINDS if re.search(pattern, name, re.I)),
                   "other fusions")] += ms
    lines = [f"device time per step: {sum(totals.values()):.1f} ms in {len(totals)} kernels",
             "| ms/step | kind of kernel |", "|---|---|"]
    lines += [f"| {ms:.2f} | {kind} |" for kind, ms in kinds.most_common()]
    lines += ["", "| ms/step | kernel |", "|---|---|"]
    lines += [f"| {ms:.2f} | {name} |" for name, ms in totals.most_common(top)]
    return "\n".join(lines)


def host_table(trace_dir, top=30):
    """Host time by event name (self time: nested events subtracted), over every host thread of
    the perfetto trace: where a compilation's seconds go, by XLA pass and phase."""
    events, _ = trace_events(trace_dir)
    host_pids = _process_ids(events, "/host:")
    spans = collections.defaultdict(list)
    for e in events:
        if e.get("ph") == "X" and e.get("pid") in host_pids:
            spans[(e["pid"], e.get("tid"))].append((e["ts"], e.get("dur", 0), e["name"][:90]))
    self_time, calls = collections.Counter(), collections.Counter()
    for thread in spans.values():
        thread.sort(key=lambda s: (s[0], -s[1]))
        stack = []  # (end, name) of the open events enclosing the current one
        for ts, dur, name in thread:
            while stack and stack[-1][0] <= ts:
                stack.pop()
            if stack:
                self_time[stack[-1][1]] -= dur
            self_time[name] += dur
            calls[name] += 1
            stack.append((ts + dur, name))
    lines = ["| self s | calls | host event |", "|---|---|---|"]
    lines += [f"| {us / 1e6:.2f} | {calls[name]} | {name} |"
              for name, us in self_time.most_common(top)]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--small", action="store_true", help="demo sizes and a tiny UNet (CPU check)")
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--at_step", type=int, default=3000,
                    help="training step the timed steps run at (after the ambient-only phase)")
    ap.add_argument("--trace", default=None,
                    help="folder for a jax.profiler trace of 5 steps; prints the device time per "
                         "step by kernel")
    ap.add_argument("overrides", nargs="*", help="config overrides, e.g. render.max_samples=65536")
    args = ap.parse_args()

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    scene = "demo" if args.small else "sitting_on_a_chair"
    cfg = load_config(os.path.join(root, "configs", f"{scene}.py"), ["output_dir=/tmp/bench"] + args.overrides)
    key = jax.random.PRNGKey(0)
    t0 = time.perf_counter()
    model, state = build(cfg, key)[:2]
    t_build = time.perf_counter() - t0
    unet_cfg = DEMO_UNET if args.small else STAND_IN
    guidance, n_params = stand_in_guidance(cfg, unet_cfg, jnp.float32 if args.small else jnp.bfloat16,
                                           key)
    print(f"built in {t_build:.1f} s; UNet weights ready after {time.perf_counter() - t0:.1f} s",
          file=sys.stderr, flush=True)
    step_fn = make_train_step(model, guidance, cfg)

    state = state.replace(step=jnp.asarray(args.at_step, jnp.int32))
    t0 = time.perf_counter()
    state, metrics, _ = step_fn(state)
    jax.block_until_ready(state)
    t_first = time.perf_counter() - t0
    for _ in range(3):
        state, metrics, _ = step_fn(state)
    jax.block_until_ready(state)
    times = []
    for _ in range(args.iters):
        t0 = time.perf_counter()
        state, metrics, _ = step_fn(state)
        jax.block_until_ready(state)
        times.append(1e3 * (time.perf_counter() - t0))
    if args.trace:
        with jax.profiler.trace(args.trace, create_perfetto_trace=True):
            for _ in range(5):
                state, metrics, _ = step_fn(state)
            jax.block_until_ready(state)
        print(kernel_table(args.trace, steps=5))
    last = jax.device_get(metrics)
    per_render = lambda k, fmt: ", ".join(fmt.format(v) for v in last[k])  # noqa: E731
    rows = [
        ("device", str(jax.devices()[0].device_kind)),
        ("scene config", scene),
        ("UNet", f"{'tiny demo' if args.small else 'IF-I-XL layout stand-in'}, "
                 f"{n_params / 1e6:.1f} M params, random weights"),
        ("rays per render", f"{cfg.render.width}x{cfg.render.height}"),
        ("sample buffer (render.max_samples)", str(cfg.render.max_samples)),
        ("kept samples (obj, human, inter., head)", per_render("num_samples", "{}")),
        ("rays cut short, last step", per_render("truncated_rays", "{:.2%}")),
        ("rays cut before opaque, last step", per_render("open_truncated_rays", "{:.2%}")),
        ("build (body, prior, fields) [s]", f"{t_build:.1f}"),
        ("first step (compile + run) [s]", f"{t_first:.1f}"),
        ("step median [ms]", f"{statistics.median(times):.1f}"),
        ("step min / max [ms]", f"{min(times):.1f} / {max(times):.1f}"),
        ("steps per second", f"{1e3 / statistics.median(times):.2f}"),
        ("10 000 steps [min]", f"{10000 * statistics.median(times) / 6e4:.1f}"),
    ]
    print_table("quantity", rows)


if __name__ == "__main__":
    main()
