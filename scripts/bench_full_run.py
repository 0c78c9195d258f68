"""The whole run of a release scene, from the command to the last file written, phase by phase.

Runs interfusion_jax.train.train on `sitting_on_a_chair` at the release's sizes with a stand-in
IF UNet (IF-I-XL's layout, 4.43 B random weights, labelled as such; random prompt embeddings) in
a child process, twice: the full run, then a second run of the same config that stops after its
first step (the start-up a user sees the second time, with JAX's compilation cache warm). A scene
with reference guidance (--scene reference_chair) keeps it: no UNet, and a scene the evaluation
phases see as a real run's, where the stand-in's random guidance fills the box with fog.
--startup_only makes the first run stop after its first step too: it only warms the cache.
Prints one table: the phases of RUN_DIR/timings.json, the step time after the ambient-only phase
(from metrics.jsonl), peak GPU memory (with preallocation off) and the wall time of both runs;
with --trace STEP, first the device time per step by kernel of 5 steps traced from STEP.

    GPU:        XLA_PYTHON_CLIENT_PREALLOCATE=false python scripts/bench_full_run.py
                python scripts/bench_full_run.py --scene reference_chair
                python scripts/bench_full_run.py --startup_only
                python scripts/bench_full_run.py --trace 2500 train.max_steps=3000
    CPU check:  python scripts/bench_full_run.py --small
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def child(args):
    """One run in this process; prints a JSON line with what the parent reports."""
    import jax
    import jax.numpy as jnp

    from interfusion_jax import train as train_module
    from interfusion_jax.config import load_config
    from interfusion_jax.guidance_setup import DEMO_UNET
    from scripts.bench_guidance import STAND_IN
    from scripts.bench_train_step import stand_in_guidance

    scene = "demo" if args.small else args.scene
    overrides = [f"output_dir={args.out}", f"name={args.name}"] + args.overrides
    if args.small:
        overrides += ["train.max_steps=40", "train.val_every=20", "test.views=6",
                      "test.resolution=64", "test.mesh_resolution=48", "test.metrics_views=2",
                      "test.metrics_grid=48", "guidance.kind=if"]
    if args.first_step_only:  # the start-up alone; the rest at toy sizes
        overrides += ["train.max_steps=1", "test.views=1", "test.resolution=32",
                      "test.mesh_resolution=32", "test.metrics_views=1", "test.metrics_grid=32"]
    cfg = load_config(os.path.join(ROOT, "configs", f"{scene}.py"), overrides)
    unet_ready = dict(seconds=0.0, params=0)

    def stand_in(cfg, guide, body_colors=None, unet=None, embeddings=None):
        t0 = time.perf_counter()
        guidance, n = stand_in_guidance(cfg, DEMO_UNET if args.small else STAND_IN,
                                        jnp.dtype(cfg.guidance.dtype), jax.random.PRNGKey(0))
        jax.block_until_ready(guidance.arrays)
        unet_ready.update(seconds=time.perf_counter() - t0, params=n)
        return guidance

    if cfg.guidance.kind != "reference":
        train_module.setup_guidance = stand_in
    video_writer = _opencv_writer_if_no_ffmpeg()
    startup = time.time() - args.t0  # interpreter start and imports, until train() begins
    status = train_module.train(cfg, overwrite=True)
    stats = jax.devices()[0].memory_stats() or {}
    print(json.dumps(dict(status=status, unet=unet_ready, startup=startup, video_writer=video_writer,
                          device=jax.devices()[0].device_kind,
                          peak_bytes=stats.get("peak_bytes_in_use"),
                          run_dir=os.path.join(args.out, args.name))), flush=True)


def _opencv_writer_if_no_ffmpeg():
    """Where imageio-ffmpeg is missing (the lent GPU image has OpenCV but no ffmpeg), the test
    videos go through OpenCV's mp4v writer instead, and the table says so."""
    try:
        import imageio_ffmpeg  # noqa: F401
        return "imageio-ffmpeg (libx264)"
    except ImportError:
        pass
    import cv2
    import numpy as np

    from interfusion_jax import evaluate

    class Writer:
        def __init__(self, path, fps, **_):
            self.path, self.fps, self.cv = path, fps, None

        def append_data(self, frame):
            if self.cv is None:
                h, w = frame.shape[:2]
                self.cv = cv2.VideoWriter(self.path, cv2.VideoWriter_fourcc(*"mp4v"), self.fps,
                                          (w, h))
            self.cv.write(np.ascontiguousarray(frame[..., ::-1]))

        def close(self):
            if self.cv is not None:
                self.cv.release()
                self.cv = None

    evaluate.imageio.get_writer = lambda path, fps, **kw: Writer(path, fps)
    return "OpenCV mp4v (no ffmpeg in this environment)"


def run_child(args, name, first_step_only):
    cmd = [sys.executable, os.path.abspath(__file__), "--child", "--t0", repr(time.time()),
           "--out", args.out,
           "--name", name, "--scene", args.scene] + (["--small"] if args.small else []) + \
        (["--first_step_only"] if first_step_only else []) + args.overrides
    t0 = time.perf_counter()
    out = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True).stdout
    wall = time.perf_counter() - t0
    return wall, json.loads(out.strip().splitlines()[-1])


def step_ms_after(run_dir, step):
    """Median ms per training step over the metrics.jsonl rows after `step`."""
    rates = [r["steps_per_second"] for r in map(json.loads, open(os.path.join(run_dir,
                                                                               "metrics.jsonl")))
             if r["step"] > step and r.get("steps_per_second")]
    return 1e3 / statistics.median(rates) if rates else float("nan")


def main():
    from interfusion_jax.timing import PROFILE_STEPS
    from scripts.bench_train_step import kernel_table, print_table

    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true", help="demo sizes, tiny UNet, 40 steps (CPU)")
    ap.add_argument("--startup_only", action="store_true",
                    help="the first run stops after its first step too (warms the cache)")
    ap.add_argument("--scene", default="sitting_on_a_chair")
    ap.add_argument("--out", default=os.path.join(tempfile.gettempdir(), "bench_full_run"))
    ap.add_argument("--name", default="bench")
    ap.add_argument("--trace", type=int, default=0, metavar="STEP",
                    help=f"trace {PROFILE_STEPS} training steps from STEP (train.profile_at) "
                         "and print the device time per step by kernel")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--first_step_only", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--t0", type=float, default=0.0, help=argparse.SUPPRESS)
    ap.add_argument("overrides", nargs="*", help="config overrides, e.g. train.max_steps=3000")
    args = ap.parse_args()
    if args.child:
        return child(args)

    if args.trace:
        args.overrides = args.overrides + [f"train.profile_at={args.trace}"]
    wall, res = run_child(args, args.name, first_step_only=args.startup_only)
    if args.trace:
        print(kernel_table(os.path.join(res["run_dir"], "profile"), PROFILE_STEPS))
    times = json.load(open(os.path.join(res["run_dir"], "timings.json")))
    # The first run's phases now, in case the second run does not finish.
    print(f"first run: {wall:.1f} s; {json.dumps(times['seconds'])}", file=sys.stderr, flush=True)
    _, res2 = run_child(args, args.name + "_second", first_step_only=True)
    seconds, counts = times["seconds"], times["counts"]
    cfg_steps = counts.get("steps", 0) + 1
    second = json.load(open(os.path.join(res2["run_dir"], "timings.json")))["seconds"]
    build2 = sum(s for phase, s in second.items() if phase.startswith("build"))
    rows = [("device", res["device"]),
            ("video writer", res["video_writer"]),
            ("UNet", "tiny demo UNet" if args.small else
             f"stand-in of IF-I-XL's layout, {res['unet']['params'] / 1e9:.2f} B params, "
             "random weights" if res["unet"]["params"] else "none (reference guidance)"),
            ("steps", str(cfg_steps)),
            ("whole run, command to last file [s]" if not args.startup_only else
             "first run (cold cache, stops after step 1), command to last file [s]", f"{wall:.1f}")]
    rows += [(f"{phase} [s]", f"{s:.1f}" + (f" ({counts[phase]}x)" if counts[phase] > 1 and
                                            phase not in ("steps",) else ""))
             for phase, s in seconds.items()]
    stand_in = bool(res["unet"]["params"])
    if stand_in:
        rows += [("of the build: stand-in UNet init [s]", f"{res['unet']['seconds']:.1f}")]
    if counts.get("steps"):
        rows += [("step, mean over the run [ms]", f"{1e3 * seconds['steps'] / counts['steps']:.1f}"),
                 ("step after step 2001, median [ms]",
                  f"{step_ms_after(res['run_dir'], 2001):.1f}")]
    rows += [("peak device memory [GB]",
              f"{res['peak_bytes'] / 1e9:.2f}" if res["peak_bytes"] else "n/a"),
             ("second run: command to end of first step [s]",
              f"{res2['startup'] + build2 + second['first step']:.1f}"),
             ("second run: build [s]", f"{build2:.1f}"),
             ("second run: first step (compile cache warm) [s]",
              f"{second['first step']:.1f}")]
    if stand_in:
        without = res2["startup"] + build2 - res2["unet"]["seconds"] + second["first step"]
        rows.insert(-2, ("second run: the same without the stand-in UNet's random init [s]",
                         f"{without:.1f}"))
    print_table("phase", rows)


if __name__ == "__main__":
    main()
