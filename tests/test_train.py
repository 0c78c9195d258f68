"""The interaction stage as users run it, at toy size: the command line, its outputs, resume,
test and export from a checkpoint, run folders that never mix, skipped non-finite steps."""
import gzip
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
import trimesh

from interfusion_jax.checkpoint import complete_steps, restore_checkpoint
from interfusion_jax import train as train_module
from interfusion_jax.timing import PROFILE_STEPS, StepProfile
from interfusion_jax.train import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(ROOT, "configs", "demo.py")
TINY = ["train.max_steps=3", "train.val_every=2", "train.val_views=1", "train.log_every=1",
        "train.checkpoint_every=2", "train.object_center_every=2",
        "train.object_center_resolution=16", "test.views=2", "test.resolution=32",
        "test.mesh_resolution=24", "test.metrics_views=1", "test.metrics_grid=24",
        "render.width=16", "render.height=16", "body.prior_resolution=24",
        "render.max_samples=16384"]


def run(*args):
    """main(argv) -> its exit status."""
    try:
        main(list(args))
    except SystemExit as e:
        return e.code
    return 0


def flags(overrides):
    return [f"--config.{o}" for o in overrides]


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.records = []

    def emit(self, record):
        self.records.append(record)


# The threads that compiled the evaluation renderer during the fixture's run.
RENDER_COMPILES = []


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    handler = _Records()
    logging.getLogger().addHandler(handler)
    jax.config.update("jax_log_compiles", True)
    try:
        with pytest.MonkeyPatch.context() as mp:
            # The evaluation renderer compiles ahead while training, as it does on a GPU.
            mp.setattr(train_module, "background_compiles_pay", lambda: True)
            assert run("--config", DEMO,
                       *flags(TINY + [f"output_dir={out}", "train.profile_at=1"])) == 0
    finally:
        jax.config.update("jax_log_compiles", False)
        logging.getLogger().removeHandler(handler)
    RENDER_COMPILES[:] = [r.threadName for r in handler.records
                          if r.getMessage().startswith("Finished XLA compilation of jit(render)")]
    return os.path.join(out, "demo")


def _items(run_dir, step):
    """The arrays of checkpoint `step` of a run, as stored (no template needed)."""
    path = os.path.join(run_dir, "ckpt", str(step))
    return {name: ocp.PyTreeCheckpointer().restore(os.path.join(path, name))
            for name in ("params", "opt_state", "scene")}


def _assert_trees_equal(a, b):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_run_writes_every_output(run_dir):
    for name in ("config.py", "metrics.jsonl", "val/it000002.png", "test/object.mp4",
                 "test/human.mp4", "test/interaction.mp4", "test/panel.mp4",
                 "test/frames/interaction/0001.png", "mesh/object.glb", "mesh/human.glb",
                 "mesh/body_guide.glb", "mesh/scene.glb", "metrics.json"):
        assert os.path.getsize(os.path.join(run_dir, name)) > 0, name
    rows = [json.loads(line) for line in open(os.path.join(run_dir, "metrics.jsonl"))]
    assert [r["step"] for r in rows] == [0, 1, 2]
    assert all(np.isfinite(r["loss"]) and r["sds"] > 0 and r["skipped"] == 0 for r in rows)
    assert complete_steps(os.path.join(run_dir, "ckpt")) == [3, 2]
    events = os.listdir(os.path.join(run_dir, "tensorboard"))
    assert events and events[0].startswith("events.out.tfevents")
    scene = trimesh.load(os.path.join(run_dir, "mesh", "scene.glb"))
    assert sorted(scene.graph.nodes_geometry) == ["body_guide", "human", "object"]
    human = scene.geometry["human"]
    assert len(human.faces) > 0 and np.all(np.abs(human.vertices) <= 2.0 + 1e-4)
    assert json.load(open(os.path.join(run_dir, "metrics.json")))["step"] == 3
    assert _executions_traced(os.path.join(run_dir, "profile"), "train_step") == 2  # 1 and 2
    assert not any(".tmp" in f for _, _, fs in os.walk(run_dir) for f in fs)
    # One size (validation and test are 32x32), compiled ahead after the first step, served the
    # renders of the later states: no second compilation.
    assert RENDER_COMPILES == ["compile evaluation renders"]


def test_existing_run_folder_is_refused(run_dir, capsys):
    out = os.path.dirname(run_dir)
    assert run("--config", DEMO, *flags(TINY + [f"output_dir={out}"])) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: ") and "--resume" in err and "--overwrite" in err


def _interrupt_after(metrics_path, step):
    """A thread that sends this process SIGINT (a Ctrl-C) once metrics.jsonl has a row of `step`."""
    def watch():
        while True:
            if os.path.isfile(metrics_path):
                rows = [json.loads(line) for line in open(metrics_path) if line.endswith("\n")]
                if rows and rows[-1]["step"] >= step:
                    os.kill(os.getpid(), signal.SIGINT)
                    return
            time.sleep(0.05)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_resume_continues_exactly_compiles_once_and_stops_on_ctrl_c(run_dir, tmp_path, caplog,
                                                                     capsys):
    """Resuming from step 2 (an override extending the run) reproduces the uninterrupted step 3
    bit for bit with one compilation of the step and no doubled log rows; Ctrl-C then saves the
    current step and says how to resume. (No validation sheets: the fixture's run has them.)"""
    copy = str(tmp_path / "demo")
    shutil.copytree(run_dir, copy)
    shutil.rmtree(os.path.join(copy, "ckpt", "3"))
    _interrupt_after(os.path.join(copy, "metrics.jsonl"), 4)
    jax.config.update("jax_log_compiles", True)
    try:
        with caplog.at_level(logging.WARNING):
            status = run("--resume", copy, "--config.train.max_steps=1000",
                         "--config.train.checkpoint_every=1", "--config.train.keep_checkpoints=99",
                         "--config.train.val_every=1000")
    finally:
        jax.config.update("jax_log_compiles", False)
    assert status == 130
    assert f"resume with: python -m interfusion_jax.train --resume {copy}" in capsys.readouterr().err
    compiles = [r for r in caplog.records
                if r.getMessage().startswith("Finished XLA compilation of jit(train_step)")]
    assert len(compiles) == 1, [r.getMessage() for r in compiles]
    steps = complete_steps(os.path.join(copy, "ckpt"))
    rows = [json.loads(line)["step"] for line in open(os.path.join(copy, "metrics.jsonl"))]
    assert rows == list(range(rows[-1] + 1)) and rows[-1] >= 4
    assert steps[0] == rows[-1] + 1 and steps == list(range(steps[0], 1, -1))
    _assert_trees_equal(_items(copy, 3), _items(run_dir, 3))


def test_non_finite_steps_are_skipped_then_the_run_stops(run_dir, tmp_path, capsys):
    copy = str(tmp_path / "demo")
    shutil.copytree(run_dir, copy)
    # No validation sheets (the fixture's run has them): TINY's val_every=2 would render ten.
    status = run("--resume", copy, "--config.loss.lambda_sparsity=nan",
                 "--config.train.max_steps=40", "--config.train.checkpoint_every=1",
                 "--config.train.val_every=1000")
    assert status == 1
    assert "non-finite" in capsys.readouterr().err
    rows = [json.loads(line) for line in open(os.path.join(copy, "metrics.jsonl"))]
    assert all(r["skipped"] == 1 for r in rows if r["step"] >= 3)
    # 20 skipped steps in a row: 3, 4, ..., 22. Step 22's row is read while step 23 runs (rows
    # are written one step late), so the run stops after step 23, whose row is written too.
    assert [(r["step"], r["bad_steps"]) for r in rows[-2:]] == [(3 + 19, 20), (3 + 20, 21)]
    newest = complete_steps(os.path.join(copy, "ckpt"))[0]
    assert newest > 3
    # A skipped step changes neither the fields, the optimiser state nor the grids.
    _assert_trees_equal(_items(copy, newest), _items(run_dir, 3))


def test_test_and_export_from_a_checkpoint(run_dir, tmp_path):
    copy = str(tmp_path / "demo")
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("test", "mesh", "metrics.json"))
    assert run("--test", copy, "--config.test.views=1") == 0  # not the run's 2: the override holds
    assert sorted(os.listdir(os.path.join(copy, "test", "frames", "object"))) == ["0000.png"]
    assert os.path.isfile(os.path.join(copy, "metrics.json"))
    assert run("--export", copy, "--config.test.mesh_format=ply") == 0
    assert sorted(os.listdir(os.path.join(copy, "mesh"))) == \
        ["body_guide.ply", "human.ply", "object.ply", "scene.glb"]


def test_field_evaluation_compiles_once_for_both_fields_and_every_export(run_dir, tmp_path,
                                                                           caplog):
    """Meshes and metrics evaluate a field with its weights as an argument, not compiled in as
    constants: one compilation serves both fields and every later export of any run."""
    copy = str(tmp_path / "demo")
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("mesh"))
    jax.config.update("jax_log_compiles", True)
    try:
        with caplog.at_level(logging.WARNING):
            exports = []
            for _ in range(2):
                caplog.clear()
                assert run("--export", copy) == 0
                exports.append([r.getMessage() for r in caplog.records
                                if r.getMessage().startswith("Finished XLA compilation")])
    finally:
        jax.config.update("jax_log_compiles", False)
    for name in ("field_density", "field_albedo"):  # 0 when an earlier test compiled it
        assert sum(f"jit({name})" in m for m in exports[0]) <= 1, exports[0]
    assert exports[1] == []


def _executions_traced(folder, name):
    """How many times the jitted function `name` ran in the Perfetto trace of folder."""
    path = next(os.path.join(d, f) for d, _, fs in os.walk(folder) for f in fs
                if f == "perfetto_trace.json.gz")
    with gzip.open(path) as f:
        events = json.load(f)
    events = events["traceEvents"] if isinstance(events, dict) else events
    calls, end = 0, -1.0
    # A call is one event or two nested ones: count the outermost.
    for ts, dur in sorted((e["ts"], -e["dur"]) for e in events
                          if e.get("name") == f"PjitFunction({name})"):
        if ts >= end:
            calls, end = calls + 1, ts - dur
    return calls


def test_a_profile_traces_the_steps_from_profile_at(tmp_path):
    @jax.jit
    def step_fn(x):
        return x * 2.0 + 1.0

    for at, steps in ((3, 10), (3, 6), (0, 10)):
        folder, x = str(tmp_path / f"profile_{at}_{steps}"), jax.numpy.ones(4)
        profile = StepProfile(folder, at)
        for step in range(steps):
            profile.before_step(step, x)
            x = step_fn(x)
        profile.close(x)
        if at:  # PROFILE_STEPS of them, or up to the loop's end
            assert _executions_traced(folder, "step_fn") == min(PROFILE_STEPS, steps - at)
        else:
            assert not os.path.exists(folder)


@pytest.mark.parametrize("args, message", [
    (["--resume", "/nonexistent/run"], "--resume /nonexistent/run: no such folder"),
    (["--test", "{tmp}"], "not a run folder (no config.py)"),
    (["--config", DEMO, "--config.body.pose=/no/pose.npy"],
     "--config.body.pose=/no/pose.npy: pose file does not exist"),
    (["--config", DEMO, "--config.body.pose=preset:flying"], "unknown pose preset 'flying'"),
    (["--config", DEMO, "--config.prompts.human= "], "--config.prompts.human: the human prompt"),
    (["--config", DEMO, "--config.reference.object_mesh=/no/chair.obj"],
     "reference mesh does not exist"),
    (["--config", DEMO, "--config.reference.object_mesh=builtin:sofa"], "unknown built-in"),
    (["--config", DEMO, "--config.guidance.kind=if", "--config.guidance.model_dir=/no/IF"],
     "--config.guidance.model_dir: IF model folder '/no/IF' does not exist"),
    (["--config", DEMO, "--config.test.mesh_format=stl"], "--config.test.mesh_format=stl"),
    (["--config", DEMO, "--config.train.init_from=/no/run"], "--config.train.init_from=/no/run"),
    (["--config", DEMO, "--config.train.profile_at=-1"], "--config.train.profile_at=-1: a step"),
    (["--config", DEMO, "stray"], "unrecognised arguments: stray"),
])
def test_bad_inputs_are_one_line_before_any_work(args, message, tmp_path, capsys):
    status = run(*[a.replace("{tmp}", str(tmp_path)) for a in args],
                 f"--config.output_dir={tmp_path / 'out'}")
    err = capsys.readouterr().err.strip()
    assert status == 2 and message in err, err
    assert len(err.splitlines()) <= 2  # argparse's usage line, then the error
    assert not os.path.exists(tmp_path / "out")


def test_truncated_if_weights_name_the_file(tmp_path, capsys):
    unet = tmp_path / "IF" / "unet"
    unet.mkdir(parents=True)
    (unet / "config.json").write_text("{}")
    (unet / "diffusion_pytorch_model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")
    status = run("--config", DEMO, "--config.guidance.kind=if",
                 f"--config.guidance.model_dir={tmp_path / 'IF'}")
    err = capsys.readouterr().err.strip()
    assert status == 2 and len(err.splitlines()) == 1
    assert "diffusion_pytorch_model.safetensors: not a readable safetensors file" in err


def test_help_lists_the_modes(capsys):
    assert run("--help") == 0
    out = capsys.readouterr().out
    for word in ("--config", "--resume", "--test", "--export", "--overwrite", "outputs/"):
        assert word in out


def test_a_damaged_newest_checkpoint_falls_back_to_the_previous(run_dir, tmp_path, capsys):
    copy = str(tmp_path / "demo")
    shutil.copytree(run_dir, copy)
    for root, _, files in os.walk(os.path.join(copy, "ckpt", "3", "params")):
        for f in files:
            if "manifest" in f:
                open(os.path.join(root, f), "wb").close()
    template = {"params": _items(run_dir, 2)["params"]}
    step, items, _ = restore_checkpoint(os.path.join(copy, "ckpt"), template)
    assert step == 2
    _assert_trees_equal(items["params"], template["params"])
    assert "step 3" in capsys.readouterr().err


class _Metric:
    """A step's metric that records when the host first waits for it or reads it."""

    def __init__(self, step, value, events):
        self.step, self.value, self.events = step, np.asarray(value), events

    def _read(self):
        if ("read", self.step) not in self.events:
            self.events.append(("read", self.step))

    def block_until_ready(self):
        self._read()
        return self

    def __array__(self, dtype=None, copy=None):
        self._read()
        return self.value if dtype is None else self.value.astype(dtype)


def test_log_rows_read_a_step_only_once_the_next_is_dispatched(tmp_path, monkeypatch):
    from interfusion_jax.config import load_config
    from interfusion_jax.timing import PhaseTimer

    cfg = load_config(DEMO, ["train.max_steps=7", "train.log_every=2", "train.val_every=1000",
                             "train.checkpoint_every=1000"])
    saved = []
    monkeypatch.setattr(train_module.runs, "checkpoint_items", lambda state: ())
    ckpt = type("Ckpt", (), {"save": lambda self, step, *items: saved.append(step)})()
    stop = type("Stop", (), {"signal": False})()
    progress = train_module.Progress(cfg, str(tmp_path), 0, None, ckpt, PhaseTimer())
    events = []
    values = dict(truncated_rays=np.zeros(4), open_truncated_rays=np.zeros(4), skipped=0,
                  bad_steps=0)
    for step in range(7):
        events.append(("dispatched", step))
        metrics = {k: _Metric(step, v, events) for k, v in dict(values, loss=1.0 + step).items()}
        assert progress.after_step(step, metrics, lambda: None, stop) is None
    events.append(("closing", None))
    progress.close()

    # Rows at steps 0, 2, 4 and 6 (the last), each with the window of steps since the previous
    # row: the host waits for a step only once the next one is queued behind it, and for the
    # last step at once.
    order = events.index
    assert sorted(s for e, s in events if e == "read") == list(range(7))
    for step in range(6):
        assert order(("read", step)) > order(("dispatched", step + 1))
    assert order(("read", 6)) < order(("closing", None))
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert [r["step"] for r in rows] == [0, 2, 4, 6]
    assert [r["loss"] for r in rows] == [1.0, 3.0, 5.0, 7.0]
    assert saved == [7]


@pytest.mark.parametrize("enabled", [True, False])
def test_the_compile_cache_keeps_small_programs_unless_turned_off(enabled, tmp_path):
    """A fresh process (JAX's cache settings are process-wide): with train.compile_cache, even a
    program that compiles in milliseconds lands in the user's cache folder; without it, none."""
    code = ("import sys, jax, jax.numpy as jnp\n"
            "from interfusion_jax.config import load_config\n"
            "from interfusion_jax.train import use_compile_cache\n"
            "use_compile_cache(load_config(sys.argv[1], [sys.argv[2]]))\n"
            "jax.jit(lambda x: x * 3 + 1)(jnp.arange(4.0)).block_until_ready()\n")
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path), PYTHONPATH=ROOT)
    subprocess.run([sys.executable, "-c", code, DEMO, f"train.compile_cache={enabled}"],
                   env=env, check=True, cwd=tmp_path)
    folder = tmp_path / "interfusion_jax" / "jax_compilation"
    entries = [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []
    assert bool(entries) == enabled, entries


def test_prompts_are_embedded_then_the_weights_load_while_the_body_and_fields_are_built(monkeypatch):
    from interfusion_jax.config import load_config

    cfg = load_config(DEMO, ["guidance.kind=if", "body.prior_resolution=24",
                             f"guidance.model_dir={os.path.join(ROOT, 'tests', 'fixtures', 'if_unet', 'stage1')}"])
    loading, events = threading.Event(), []

    def load_unet(c):
        loading.set()
        events.append(("load", threading.current_thread() is threading.main_thread()))
        time.sleep(0.5)  # still loading while the main thread builds
        events.append(("loaded", None))
        return "the UNet"

    def run_body(c):
        assert loading.wait(10), "the weights did not start loading before the body"
        events.append(("body", None))
        return original_run_body(c)

    original_run_body = train_module.run_body
    monkeypatch.setattr(train_module, "prompt_embeddings",
                        lambda c: events.append(("prompts", None)) or "the embeddings")
    monkeypatch.setattr(train_module, "load_unet", load_unet)
    monkeypatch.setattr(train_module, "run_body", run_body)
    monkeypatch.setattr(train_module, "setup_guidance",
                        lambda cfg, guide, colors, unet, emb: events.append(("guidance", unet, emb)))
    train_module.build(cfg, jax.random.PRNGKey(0))
    # T5 and the UNet never share the device: the prompts are embedded before the load starts.
    assert events[:2] == [("prompts", None), ("load", False)]  # the load on its own thread
    assert events.index(("body", None)) < events.index(("loaded", None))
    assert events[-1] == ("guidance", "the UNet", "the embeddings")


def test_published_weights_run_through_the_build_and_the_step(tmp_path):
    # The path of a real run, at toy size: IF's folder layout (the parity fixture's UNet, float16
    # shards), prompt embeddings from the cache, the UNet loaded beside the build, two steps.
    from guidance import PromptCache, load_if_unet
    from guidance.t5 import preprocess, t5_model_key
    from interfusion_jax.config import load_config
    from interfusion_jax.guidance_setup import prompt_texts
    from interfusion_jax.train_step import make_train_step

    model_dir = tmp_path / "IF-I-XL"
    shutil.copytree(os.path.join(ROOT, "tests", "fixtures", "if_unet", "stage1", "unet"), model_dir / "unet")
    (model_dir / "text_encoder").mkdir()
    shutil.copy(os.path.join(ROOT, "tests", "fixtures", "t5", "text_encoder", "config.json"),
                model_dir / "text_encoder")
    (model_dir / "tokenizer").mkdir()
    cfg = load_config(DEMO, TINY + ["guidance.kind=if", f"guidance.model_dir={model_dir}",
                                    f"guidance.embedding_cache={tmp_path / 'cache'}"])
    texts = [t for row in prompt_texts(cfg.prompts, cfg.guidance.view_dependent) for t in row] + [""]
    key = t5_model_key(str(model_dir / "text_encoder"))
    rng = np.random.default_rng(0)
    for text in texts:  # no T5 to run here: every text is cached
        PromptCache(str(tmp_path / "cache")).store(key, preprocess(text, False),
                                                   rng.standard_normal((77, 24)).astype(np.float32))

    built = train_module.build(cfg, jax.random.PRNGKey(0))
    assert str(model_dir) in built.guidance.description
    _, params = load_if_unet(str(model_dir), dtype=np.float16)
    _assert_trees_equal(built.guidance.arrays["unet"], params)
    step = make_train_step(built.model, built.guidance, cfg)
    state = built.state
    for _ in range(2):
        state, metrics, _ = step(state)
    assert int(state.step) == 2 and np.isfinite(float(metrics["loss"]))
