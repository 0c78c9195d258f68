"""Where the first training step's time goes, under sets of XLA flags.

For each flag set, in a fresh process (XLA reads its flags once, and no compilation cache is
used): the build, then the training step's trace, lowering and XLA compilation (ahead of time,
`jax.jit(...).trace/lower/compile`), the size of the compiled program (HLO instructions, fused
kernels, library GEMM calls), then the step's median time. The scene is
`configs/reference_chair.py` (the reference guidance, no UNet) or, with --stand_in,
`sitting_on_a_chair` with the 4.43 B stand-in IF UNet in bfloat16 (random weights, labelled as
such). Prints one table, a row per flag set; with --trace DIR, also each compilation's host
time by XLA pass (jax.profiler trace of the compile alone, DIR/<flag set>).

    GPU:        python scripts/bench_compile.py --sets default,no_triton_gemm,autotune_0
                python scripts/bench_compile.py --trace /tmp/compile_trace
    CPU check:  python scripts/bench_compile.py --small --sets default
"""
import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

FLAG_SETS = {
    "default": "",
    "no_triton_gemm": "--xla_gpu_enable_triton_gemm=false",
    "autotune_0": "--xla_gpu_autotune_level=0",
    "autotune_1": "--xla_gpu_autotune_level=1",
    # The GPU compiler's kernels compiled on 16 threads (the lent host's cores), and without the
    # autotuner that compares code generators per fusion.
    "parallel_16": "--xla_gpu_force_compilation_parallelism=16",
    "no_fusion_autotuner": "--xla_gpu_experimental_enable_fusion_autotuner=false",
    # Loops and conditionals inside CUDA graphs (conditional nodes): no host round trip per
    # iteration of the sampler's data-dependent loops.
    "graph_loops": "--xla_gpu_enable_command_buffer=FUSION,CUBLAS,CUBLASLT,CUSTOM_CALL,CUDNN,"
                   "WHILE,CONDITIONAL",
    "no_graphs": "--xla_gpu_enable_command_buffer=",
}


def child(args):
    """One flag set in this process; prints a JSON line of seconds and milliseconds."""
    import jax
    import jax.numpy as jnp

    from interfusion_jax.config import load_config
    from interfusion_jax.guidance_setup import DEMO_UNET
    from interfusion_jax.train import build
    from interfusion_jax.train_step import bind_step, step_arrays
    from scripts.bench_guidance import STAND_IN
    from scripts.bench_train_many import time_steps
    from scripts.bench_train_step import host_table, stand_in_guidance

    scene = "demo" if args.small else "sitting_on_a_chair" if args.stand_in else "reference_chair"
    overrides = ["output_dir=/tmp/bench_compile", "train.compile_cache=False"] + args.overrides
    cfg = load_config(os.path.join(ROOT, "configs", f"{scene}.py"), overrides)
    out = {}
    t0 = time.perf_counter()
    built = build(cfg, jax.random.PRNGKey(0))
    guidance = built.guidance
    if args.stand_in or args.small:
        guidance = stand_in_guidance(cfg, DEMO_UNET if args.small else STAND_IN,
                                     jnp.float32 if args.small else jnp.bfloat16,
                                     jax.random.PRNGKey(0))[0]
        jax.block_until_ready(guidance.arrays)
    out["build"] = time.perf_counter() - t0

    jitted = jax.jit(bind_step(built.model, guidance, cfg), donate_argnums=(0,))
    arrays = step_arrays(built.model, guidance, cfg)
    state = built.state.replace(step=jnp.asarray(args.at_step, jnp.int32))
    t0 = time.perf_counter()
    traced = jitted.trace(state, arrays)
    out["trace"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    lowered = traced.lower()
    out["lower"] = time.perf_counter() - t0
    trace_dir = os.path.join(args.trace, args.set_name) if args.trace else None
    with (jax.profiler.trace(trace_dir, create_perfetto_trace=True) if trace_dir
          else contextlib.nullcontext()):
        t0 = time.perf_counter()
        compiled = lowered.compile()
        out["compile"] = time.perf_counter() - t0
    if trace_dir:
        print(f"{args.set_name}: host time of the compilation\n{host_table(trace_dir)}",
              file=sys.stderr, flush=True)
    out.update(program_size(compiled.as_text()))
    out["first run"], out["step_ms"] = time_steps(lambda st: compiled(st, arrays)[0], state,
                                                  args.iters)
    out["device"] = jax.devices()[0].device_kind
    print(json.dumps(out), flush=True)


def program_size(hlo):
    """Counts in the compiled program's HLO text: instructions, fused kernels, library GEMMs."""
    return dict(instructions=len(re.findall(r"^\s+\S+ = ", hlo, re.M)),
                fusions=len(re.findall(r"\bfusion\(", hlo)),
                gemms=len(re.findall(r'custom_call_target="__cublas', hlo)))


def main():
    from scripts.bench_train_step import print_table

    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", default="default",
                    help=f"comma-separated flag sets, of: {', '.join(FLAG_SETS)}")
    ap.add_argument("--stand_in", action="store_true",
                    help="sitting_on_a_chair with the stand-in IF UNet instead of the reference")
    ap.add_argument("--small", action="store_true", help="demo sizes, tiny UNet (CPU)")
    ap.add_argument("--at_step", type=int, default=3000,
                    help="the step number the timed steps start at (after the ambient-only phase)")
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--trace", help="folder for a jax.profiler trace of each compilation; prints "
                    "the host time by XLA pass")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--set_name", default="default", help=argparse.SUPPRESS)
    ap.add_argument("overrides", nargs="*", help="config overrides, e.g. render.max_samples=65536")
    args = ap.parse_args()
    if args.child:
        return child(args)

    sets = args.sets.split(",")
    unknown = [s for s in sets if s not in FLAG_SETS]
    if unknown:
        ap.error(f"--sets: unknown flag set {', '.join(unknown)}; expected some of "
                 f"{', '.join(FLAG_SETS)}")
    results = {}
    for name in sets:
        env = dict(os.environ, XLA_FLAGS=" ".join(
            f for f in (os.environ.get("XLA_FLAGS", ""), FLAG_SETS[name]) if f))
        cmd = [sys.executable, os.path.abspath(__file__), "--child", "--set_name", name,
               "--at_step", str(args.at_step), "--iters", str(args.iters)] + \
            (["--trace", args.trace] if args.trace else []) + \
            (["--small"] if args.small else []) + (["--stand_in"] if args.stand_in else []) + \
            args.overrides
        done = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True)
        if done.returncode:
            print(f"{name}: the run failed (exit status {done.returncode})", file=sys.stderr)
            continue
        results[name] = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{name}: {results[name]}", file=sys.stderr, flush=True)
    if not results:
        sys.exit("every flag set failed")

    first = next(iter(results.values()))
    scene = "demo, tiny UNet" if args.small else \
        "sitting_on_a_chair, stand-in IF UNet (random weights)" if args.stand_in else \
        "reference_chair (reference guidance)"
    print_table("quantity", [("device", first["device"]), ("scene", scene)])
    print()
    cols = ("build", "trace", "lower", "compile", "first run")
    counts = ("instructions", "fusions", "gemms")
    print("| flag set | XLA flags | " + " | ".join(f"{c} [s]" for c in cols) + " | step [ms] | " +
          " | ".join(counts) + " |")
    print("|---|---|" + "---|" * (len(cols) + 1 + len(counts)))
    for name, r in results.items():
        print(f"| {name} | {FLAG_SETS[name] or '-'} | " +
              " | ".join(f"{r[c]:.1f}" for c in cols) + f" | {r['step_ms']:.1f} | " +
              " | ".join(str(r[c]) for c in counts) + " |")


if __name__ == "__main__":
    main()
