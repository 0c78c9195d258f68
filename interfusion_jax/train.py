"""The interaction stage's command line: train a scene, resume it, render its test views, export it.

  python -m interfusion_jax.train --config configs/<scene>.py [--config.a.b=value ...] [--overwrite]
  python -m interfusion_jax.train --resume RUN_DIR [--config.train.max_steps=20000 ...]
  python -m interfusion_jax.train --test RUN_DIR
  python -m interfusion_jax.train --export RUN_DIR

A run writes RUN_DIR = <output_dir>/<name> (outputs/<scene> by default): config.py, metrics.jsonl,
tensorboard/, val/, ckpt/, test/, mesh/ and metrics.json (interfusion_jax.run_dir). Training
saves a checkpoint every train.checkpoint_every steps and at the end; Ctrl-C or SIGTERM saves one
at the current step and says how to resume (a second Ctrl-C quits at once). A finished run ends
with --test and --export; either can be run again later from the newest checkpoint.
"""
import argparse
import functools
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import jax
from tqdm import tqdm

from ifcommon import UserError, command_line, save_text, user_cache_dir
from interfusion_jax import run_dir as runs
from interfusion_jax.checkpoint import Checkpointer
from interfusion_jax.config import parse_config, save_config
from interfusion_jax.evaluate import (export_meshes, make_eval_renderer, save_test, save_validation,
                                      validation_sheet, validation_size)
from interfusion_jax.guidance_setup import load_unet, prompt_embeddings, setup_guidance
from interfusion_jax.inputs import check_inputs
from interfusion_jax.interrupt import StopRequest
from interfusion_jax.metrics import run_metrics
from interfusion_jax.run_log import RunLog
from interfusion_jax.scene import object_center, run_body
from interfusion_jax.timing import PhaseTimer, StepProfile
from interfusion_jax.train_step import init_state, make_scene_model, make_train_step
from body import BodyPrior

# Steps in a row whose loss or gradient is not finite after which a run gives up.
MAX_BAD_STEPS = 20


class Built(NamedTuple):
    """A run's scene model, initial state, guidance, body model and guide body."""

    model: Any
    state: Any
    guidance: Any
    body: Any
    guide: Any


def use_compile_cache(cfg):
    """JAX's persistent compilation cache in the user's cache folder, unless
    train.compile_cache is off: a second run of a config skips its compilation."""
    if cfg.train.compile_cache and not jax.config.jax_compilation_cache_dir:
        jax.config.update("jax_compilation_cache_dir", user_cache_dir("jax_compilation"))
        # JAX stores only programs that took a second or more to compile; a run also compiles
        # dozens of small ones (the guide body, cameras, metrics), each a compilation again in
        # every later run (build of the reference scene with a warm cache on 2 CPU cores: 1.9 ->
        # 1.3 s; a GPU's compilations of small programs cost more).
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)


def build(cfg, key, unet=None, timer=None):
    """Config -> Built; every path and prompt of the config is checked first. unet: the IF UNet
    when already loaded (guidance_setup.load_unet), as for scenes trained together; timer: a
    PhaseTimer for the parts of the build."""
    timer = timer or PhaseTimer()
    check_inputs(cfg)
    published = cfg.guidance.kind == "if" and bool(cfg.guidance.model_dir)
    embeddings = None
    if published:
        with timer("build: prompts"):  # the T5 encoder comes and goes before the UNet loads
            embeddings = prompt_embeddings(cfg)
    with ThreadPoolExecutor(1) as loader:
        # Published weights (gigabytes) load on their own thread, mostly file reads and copies
        # outside the GIL, while the body, its prior and the fields are built.
        pending = loader.submit(load_unet, cfg) if published and unet is None else None
        with timer("build: body"):
            body, gb = run_body(cfg)
        with timer("build: body prior"):
            prior = BodyPrior.build(gb.vertices, gb.faces, bound=cfg.field.radius,
                                    resolution=cfg.body.prior_resolution)
        # The key's second half once drew the demo UNet; splitting keeps each seed's fields as before.
        k_state = jax.random.split(key)[0]
        model = make_scene_model(cfg, gb.head, prior)
        with timer("build: fields"):
            # One compilation (cached on disk with the steps) instead of a dispatch per operation:
            # op by op, the initialisers cost 7.5 s on a fresh GPU.
            state = runs.on_device(jax.jit(functools.partial(init_state, model, cfg))(k_state))
            jax.block_until_ready(state)
        with timer("build: guidance"):
            guidance = setup_guidance(cfg, gb, body.vertex_colors,
                                      pending.result() if pending else unet, embeddings)
    return Built(model, state, guidance, body, gb)


def open_run(cfg, built, run_dir):
    """Write the config into RUN_DIR; the run's initial state and evaluation renderer."""
    save_config(cfg, os.path.join(run_dir, runs.CONFIG))
    return _initial_state(built, cfg, run_dir), make_eval_renderer(built.model, cfg)


def _initial_state(built, cfg, run_dir):
    """The run's newest checkpoint when it has one (a resume), else the fields of
    `train.init_from`'s newest checkpoint when set, else the fresh state."""
    ckpt_dir = os.path.join(run_dir, runs.CHECKPOINTS)
    if runs.complete_steps(ckpt_dir):
        return runs.restore_state(built.state, ckpt_dir)
    if cfg.train.init_from:
        return runs.restore_state(built.state, os.path.join(cfg.train.init_from, runs.CHECKPOINTS),
                                  weights_only=True)
    return built.state


def _warn_open_cuts(bar, step, row):
    if row["open_truncated_steps"]:
        bar.write(f"step {step}: {row['open_truncated_steps']} of the last {row['window_steps']} "
                  "steps cut rays short before they were opaque (up to "
                  f"{max(row['open_truncated_rays_max']):.1%} of a render's rays); raise "
                  "render.max_samples", file=sys.stderr)


def background_compiles_pay():
    """Whether compiling the evaluation renderer while training pays: not on a CPU, where the
    compiler would take the cores the steps use."""
    return jax.default_backend() != "cpu"


def compile_eval_ahead(render, state, cfg):
    """Start the evaluation renderer's compilations for the validation sheets and the test
    views (EvalRenderer.compile_ahead) where background_compiles_pay. Called once the training
    step is compiled: XLA's compilations side by side would share the host's cores, which the
    training steps, waiting on the device, leave idle."""
    if background_compiles_pay():
        render.compile_ahead(state, cfg, (validation_size(cfg), cfg.test.resolution))


def make_center_fn(model, cfg):
    """Jitted (object params, previous centre) -> the object centre (scene.object_center)."""
    return jax.jit(lambda params, prev: object_center(
        model.density_fn(params), prev, cfg.field.radius, cfg.train.object_center_resolution,
        cfg.train.object_center_density_scale))


def center_due(cfg, step):
    """Whether the object centre is refreshed before step `step`."""
    return step > 0 and step % cfg.train.object_center_every == 0


def first_step_done(t0, result, timers):
    """Wait for the first step (started at perf_counter t0) and record it: its time is mostly
    compilation and stays out of the ETA and the steps per second."""
    jax.block_until_ready(result)
    seconds = time.perf_counter() - t0
    for timer in timers:
        timer.add("first step", seconds)
    print(f"[interfusion] first step (compile and run) took {seconds:.1f} s", file=sys.stderr)


class Progress:
    """The host side of one run's training loop after each of its steps: the log row, progress
    bar, validation sheet and checkpoint, and the stop for non-finite steps. Runs trained together
    (train_many) have one each.

    A log row is written one step late, once the next step is dispatched (the last step's at
    once): reading a step's metrics waits for that step, and with nothing queued behind it the
    device would idle while the host writes the row (7 ms a row on a CPU core)."""

    def __init__(self, cfg, run_dir, first, val_render, ckpt, timer, position=0):
        self.cfg, self.run_dir, self.val_render, self.ckpt, self.timer = \
            cfg, run_dir, val_render, ckpt, timer
        self.saved, self.position = first, position
        self.log = RunLog(run_dir, first)
        self.bar, self.window, self.pending = None, [], None

    def after_step(self, step, metrics, state_fn, stop):
        """Step `step` is dispatched with `metrics` (this run's, device arrays); state_fn() gives
        this run's state, asked for only by a validation sheet or a checkpoint. A stop signal
        saves a checkpoint. Returns 1 when the run must stop for non-finite steps, else None."""
        cfg, timer, last = self.cfg, self.timer, self.cfg.train.max_steps
        self.window.append({k: metrics[k] for k in ("truncated_rays", "open_truncated_rays",
                                                    "skipped")})
        done = step + 1
        if self.bar is None:  # after the first step (first_step_done), out of the ETA
            self.bar = tqdm(total=last, initial=done, desc=cfg.name, position=self.position)
            self.t_row, self.row_step, self.other = time.perf_counter(), done, timer.total()
        else:
            self.bar.update(1)
        status = self._write_row()
        if step % cfg.train.log_every == 0 or done == last:
            self.pending, self.window = (step, metrics, self.window), []
            if done == last:
                status = self._write_row() or status
        if status:
            return status
        if done % cfg.train.val_every == 0:
            with timer("validation"):
                sheet = validation_sheet(self.val_render, state_fn(), cfg)
                save_validation(sheet, done, os.path.join(self.run_dir, "val"))
                self.log.image("validation", done, sheet)
        if done % cfg.train.checkpoint_every == 0 or done == last or stop.signal:
            with timer("checkpoints"):
                self.ckpt.save(done, *runs.checkpoint_items(state_fn()))
            self.saved = done
        return None

    def _write_row(self):
        """Write the pending log row, if any, once its step is done. Returns 1 when the run must
        stop for non-finite steps, else None."""
        if self.pending is None:
            return None
        (step, metrics, window), self.pending = self.pending, None
        cfg, timer, done = self.cfg, self.timer, step + 1
        jax.block_until_ready(metrics["loss"])
        # Steps per second of the training steps alone: validation and saves excluded.
        now = time.perf_counter()
        spent = now - self.t_row - (timer.total() - self.other)
        rate = (done - self.row_step) / spent if done > self.row_step else None
        timer.add("steps", spent, done - self.row_step)
        self.t_row, self.row_step, self.other = now, done, timer.total()
        row = self.log.row(step, metrics, window, rate)
        self.bar.set_postfix(loss=f"{row['loss']:.4g}")
        _warn_open_cuts(self.bar, step, row)
        bad = row["bad_steps"]
        if bad < MAX_BAD_STEPS:
            return None
        self.bar.write(f"[interfusion] {cfg.name} steps {done - bad}-{step}: {bad} steps in a row "
                       "had a non-finite loss or gradient and were skipped; stopping. The last "
                       f"good checkpoint is step {self.saved} in "
                       f"{os.path.join(self.run_dir, runs.CHECKPOINTS)}", file=sys.stderr)
        return 1

    def close(self):
        """Write the pending log row and close the log and the progress bar."""
        try:
            self._write_row()
        finally:
            self.log.close()
            if self.bar is not None:
                self.bar.close()


def _loop(cfg, run_dir, built, state, val_render, ckpt, stop, timer):
    """Train from state.step to train.max_steps, with validation sheets of val_render
    (evaluate.make_eval_renderer); phases timed by `timer` (PhaseTimer). Returns (state, exit
    status or None)."""
    step_fn = make_train_step(built.model, built.guidance, cfg)
    center_fn = make_center_fn(built.model, cfg)
    first, last = int(state.step), cfg.train.max_steps
    progress = Progress(cfg, run_dir, first, val_render, ckpt, timer)
    profile = StepProfile(os.path.join(run_dir, "profile"), cfg.train.profile_at)
    if first < last:
        print("[interfusion] compiling the training step (a minute or two on a CPU)",
              file=sys.stderr)
    t0 = time.perf_counter()
    try:
        for step in range(first, last):
            if center_due(cfg, step):
                with timer("object centre"):
                    state = state.replace(center=center_fn(state.params["object"], state.center))
            profile.before_step(step, state)
            state, metrics, _ = step_fn(state)
            if step == first:
                first_step_done(t0, state.step, [timer])
                compile_eval_ahead(val_render, state, cfg)
            if progress.after_step(step, metrics, lambda: state, stop):
                return state, 1
            if stop.signal and step + 1 < last:
                ckpt.wait()
                progress.bar.write(f"[interfusion] stopped at step {step + 1}, checkpoint saved; "
                                   f"resume with: python -m interfusion_jax.train --resume {run_dir}",
                                   file=sys.stderr)
                return state, stop.exit_status
    finally:
        profile.close(state)
        progress.close()
        val_render.wait()
    return state, None


def train(cfg, run_dir=None, overwrite=False):
    """Train the run of `cfg`, then test and export it. run_dir: a run to resume (its newest
    checkpoint is the start); None claims `<output_dir>/<name>` for a new run (run_dir.claim,
    with `overwrite`) once the config's inputs passed their checks. Returns the exit status (0
    when the run finished)."""
    use_compile_cache(cfg)
    timer = PhaseTimer()
    built = build(cfg, jax.random.PRNGKey(cfg.seed), timer=timer)
    run_dir = run_dir or runs.claim(cfg, overwrite)
    print(f"[interfusion] {built.guidance.description}", file=sys.stderr)
    state, render = open_run(cfg, built, run_dir)
    with Checkpointer(os.path.join(run_dir, runs.CHECKPOINTS), cfg.train.keep_checkpoints) as ckpt, \
            StopRequest() as stop:
        state, status = _loop(cfg, run_dir, built, state, render, ckpt, stop, timer)
        with timer("checkpoints"):
            ckpt.wait()
    if status is not None:
        return status
    finish(cfg, run_dir, built, state, render, timer)
    return 0


def finish(cfg, run_dir, built, state, render, timer):
    """The end of a trained run: its test outputs, meshes and timings.json."""
    run = runs.Run(cfg, built.model, state, built.guide, built.body, render)
    written = test(run, run_dir, timer) + export(run, run_dir, timer)
    timer.save(os.path.join(run_dir, "timings.json"))
    print(f"[interfusion] wrote {run_dir}: "
          f"{', '.join(os.path.relpath(p, run_dir) for p in written)}; {timer.summary()}",
          file=sys.stderr)


def test(run, run_dir, timer=None):
    """The test circle's videos and frames in RUN_DIR/test and metrics.json; returns the paths."""
    cfg, timer = run.cfg, timer or PhaseTimer()
    with timer("test videos"):
        videos = save_test(run.render, run.state, cfg, os.path.join(run_dir, "test"))
    with timer("metrics"):
        scores = run_metrics(run, views=cfg.test.metrics_views,
                             grid_resolution=cfg.test.metrics_grid)
    path = os.path.join(run_dir, "metrics.json")
    save_text(path, json.dumps(scores, indent=2) + "\n")
    print(f"[interfusion] metrics: {json.dumps(scores)}", file=sys.stderr)
    return videos + [path]


def export(run, run_dir, timer=None):
    """The meshes in RUN_DIR/mesh; returns the paths."""
    with (timer or PhaseTimer())("meshes"):
        return export_meshes(run.state, run.model, run.cfg, run.guide, run.body.vertex_colors,
                             os.path.join(run_dir, "mesh"))


def test_run(run_dir, overrides=()):
    """--test RUN_DIR: the test outputs from the run's newest checkpoint."""
    run = runs.load_run(run_dir, overrides, "--test")
    use_compile_cache(run.cfg)
    return test(run, run_dir)


def export_run(run_dir, overrides=()):
    """--export RUN_DIR: the meshes from the run's newest checkpoint."""
    run = runs.load_run(run_dir, overrides, "--export")
    use_compile_cache(run.cfg)
    return export(run, run_dir)


def parse_args(argv):
    """Command-line arguments -> (mode namespace, the --config arguments)."""
    p = argparse.ArgumentParser(
        prog="python -m interfusion_jax.train", allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="%(prog)s (--config FILE | --resume RUN_DIR | --test RUN_DIR | --export RUN_DIR) "
              "[--config.KEY=VALUE ...] [--overwrite]",
        description=__doc__.split("\n\n", 1)[1],
        epilog="examples:\n"
               "  %(prog)s --config configs/demo.py\n"
               "  %(prog)s --config configs/riding_a_bike.py "
               "--config.guidance.model_dir=weights/IF-I-XL-v1.0 --config.seed=1\n"
               "  %(prog)s --resume outputs/riding_a_bike --config.train.max_steps=20000\n"
               "Every config value can be overridden with --config.<group>.<key>=value "
               "(see configs/base.py).")
    modes = p.add_mutually_exclusive_group()
    modes.add_argument("--resume", metavar="RUN_DIR",
                       help="continue a run from its newest checkpoint, with its saved config "
                            "(overrides allowed, e.g. a higher train.max_steps)")
    modes.add_argument("--test", metavar="RUN_DIR",
                       help="render the test circle (videos, frames) and metrics.json")
    modes.add_argument("--export", metavar="RUN_DIR", help="write the meshes")
    p.add_argument("--overwrite", action="store_true",
                   help="start a new run even if its folder holds an earlier run, which is "
                        "deleted (without it such a run is refused)")
    a, rest = p.parse_known_args(argv)
    rest = _join_values(rest)
    unknown = [r for r in rest if not r.startswith("--config")]
    if unknown:
        p.error(f"unrecognised arguments: {' '.join(unknown)}")
    mode_dir = a.resume or a.test or a.export
    if mode_dir and any(r == "--config" or r.startswith("--config=") for r in rest):
        p.error("--config is the run's own config.py with --resume, --test or --export; "
                "pass only --config.KEY=VALUE overrides")
    if not mode_dir and not rest:
        p.error("one of --config, --resume, --test or --export is required")
    return a, rest


def _join_values(args):
    """`--config FILE` and `--config.a.b VALUE` -> `--config=FILE`, `--config.a.b=VALUE`."""
    joined = []
    for arg in args:
        if joined and joined[-1].startswith("--config") and "=" not in joined[-1] \
                and not arg.startswith("--"):
            joined[-1] = f"{joined[-1]}={arg}"
        else:
            joined.append(arg)
    return joined


def _overrides(rest):
    """`--config.a.b=v` arguments -> `a.b=v` overrides."""
    return [r[len("--config."):] for r in rest]


@command_line
def main(argv):
    a, rest = parse_args(argv)
    if a.test:
        test_run(a.test, _overrides(rest))
        return 0
    if a.export:
        export_run(a.export, _overrides(rest))
        return 0
    if a.resume:
        cfg = runs.run_config(a.resume, _overrides(rest), "--resume")
        return train(cfg, a.resume)
    cfg, positional = parse_config(["interfusion_jax.train"] + rest)
    if positional:
        raise UserError(f"unexpected arguments: {' '.join(positional)}")
    return train(cfg, overwrite=a.overwrite)


if __name__ == "__main__":
    main()
