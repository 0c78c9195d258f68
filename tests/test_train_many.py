"""Several scenes in one run (train_many) at toy size: two scenes stepped together on two host
devices end as their single runs; scenes group by what their step compiles in; the command
line's mistakes are one line."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from test_train import TINY

from interfusion_jax.checkpoint import complete_steps
from interfusion_jax.config import load_config
from interfusion_jax.train_many import Scene, group_scenes, main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(ROOT, "configs", "demo.py")
# test_train's toy sizes without validation sheets, each scene its own length, and the demo UNet
# as guidance: its weights are what the scenes share. optim.eps=1 keeps Adam's steps linear in
# the gradient below 1: with the release's 1e-15 an entry whose gradient is rounding noise (here
# up to 1e-3, where the largest are about 100: sums of large terms that cancel) takes a whole
# +-lr step, so two runs equal to float rounding would differ by up to lr there.
SETS = [o for o in TINY if not o.startswith("train.max_steps")] + [
    "train.val_every=100", "guidance.kind=if", "optim.eps=1", "test.views=1", "test.resolution=32",
    "test.mesh_resolution=16", "test.metrics_grid=16"]
SCENE_A = """from configs import demo


def get_config():
    c = demo.get_config()
    c.name = "a"
    c.train.max_steps = 3
    return c
"""
# Another seed, guide body, object prompt, camera distances, shape weights and length.
SCENE_B = """from configs import demo


def get_config():
    c = demo.get_config()
    c.name, c.seed = "b", 1
    c.train.max_steps = 2
    c.body.pose = "preset:standing"
    c.prompts.object = "a photo of a stool, 8K, HD"
    c.camera.distance_range = (2.2, 2.8)
    c.loss.shape_weights = (0.002, 0.02, 0.2)
    return c
"""
# One process with two host devices: train_many of both scenes (their evaluation renderers
# compiled ahead while training, as on a GPU), then each scene's single run, which skips the
# test and export that the comparison does not read.
SCRIPT = """
import sys
import jax
from interfusion_jax import train, train_many
out, a, b, *sets = sys.argv[1:]
jax.config.update("jax_log_compiles", True)
train.background_compiles_pay = lambda: True
train_many.main([a, b, "--scenes_per_device", "1", "--set", f"output_dir={out}/many", *sets])
train.finish = lambda *args: None
train.background_compiles_pay = lambda: False
for config in (a, b):
    train.main(["--config", config, f"--config.output_dir={out}/single",
                *[f"--config.{s}" for s in sets]])
"""
LOSSES = ("loss", "sds", "orient_object", "orient_human", "sparsity_object", "sparsity_human",
          "shape_human", "shape_object")


def _rows(run_dir):
    return [json.loads(line) for line in open(os.path.join(run_dir, "metrics.jsonl"))]


def _params(run_dir, step):
    return ocp.PyTreeCheckpointer().restore(os.path.join(run_dir, "ckpt", str(step), "params"))


def test_two_scenes_on_two_devices_end_as_their_single_runs(tmp_path):
    configs = []
    for name, text in (("a", SCENE_A), ("b", SCENE_B)):
        configs.append(str(tmp_path / f"{name}.py"))
        (tmp_path / f"{name}.py").write_text(text)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
               PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path), *configs, *SETS],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 scenes on 2 device(s), 1 per device" in done.stderr
    # One compilation for all steps, though scene b stops a step earlier and a's centre moves.
    assert done.stderr.count("Finished XLA compilation of jit(many_step)") == 1
    # Each scene's renderer compiled once, ahead (validation and test images are 32x32), from
    # its slice of the scenes' state after the first step: the test and metrics renders of the
    # final slices found it compiled.
    assert done.stderr.count("Finished XLA compilation of jit(render)") == 2
    for name, steps in (("a", 3), ("b", 2)):
        many, single = (str(tmp_path / kind / name) for kind in ("many", "single"))
        for output in ("config.py", "metrics.json", "mesh/scene.glb", "test/interaction.mp4",
                       "timings.json"):
            assert os.path.getsize(os.path.join(many, output)) > 0, (name, output)
        assert complete_steps(os.path.join(many, "ckpt"))[0] == steps
        rows, reference = _rows(many), _rows(single)
        assert [r["step"] for r in rows] == [r["step"] for r in reference] == list(range(steps))
        for row, ref in zip(rows, reference):
            for k in LOSSES:
                np.testing.assert_allclose(row[k], ref[k], rtol=1e-4, err_msg=f"{name} {k}")
        for x, y in zip(jax.tree_util.tree_leaves(_params(many, steps)),
                        jax.tree_util.tree_leaves(_params(single, steps)), strict=True):
            # Measured: up to 1e-4 (a tenth of a step of lr 0.01); a scene stepped with another
            # scene's numbers or arrays would be off by steps of lr in many entries.
            np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=5e-4, rtol=0)


def _scene(*overrides):
    return Scene(" ".join(overrides) or "demo", load_config(DEMO, list(overrides)), None)


def test_scenes_group_by_what_their_step_compiles_in():
    demo = _scene()
    other_scene = _scene("name=b", "seed=3", "body.pose=preset:standing",
                         "camera.distance_range=(2.0, 2.5)", "loss.shape_weights=(0.1, 0.2, 0.3)",
                         "prompts.object=a stool", "train.max_steps=7")
    wider = _scene("name=c", "render.width=32")
    constant_orient = _scene("name=d", "loss.lambda_orient=5.0")
    groups, notes = group_scenes([demo, wider, other_scene, constant_orient])
    assert groups == [[demo, other_scene], [wider], [constant_orient]]
    assert "render.width" in notes[0] and "group 2 of 3" in notes[0]
    assert "form of the step's numbers" in notes[1]


@pytest.mark.parametrize("args, message", [
    (["/no/scene.py"], "/no/scene.py: no such config file or run folder"),
    ([DEMO, DEMO], "both write"),
    ([DEMO, "--set", "train.max_step=3"], "--set train.max_step=3: no such config key"),
    ([DEMO, "--set", "body.pose=preset:flying"], "unknown pose preset 'flying'"),
    ([DEMO, "--scenes_per_device", "0"], "--scenes_per_device 0: must be at least 1"),
    ([DEMO, "--set", "train.profile_at=5"], "train.profile_at traces the steps of a single run"),
])
def test_bad_arguments_are_one_line_before_any_work(args, message, tmp_path, capsys):
    scenes = next((i for i, a in enumerate(args) if a.startswith("--")), len(args))
    with pytest.raises(SystemExit) as e:  # an override error names the last override
        main(args[:scenes] + ["--set", f"output_dir={tmp_path / 'out'}"] + args[scenes:])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and message in err, err
    assert len(err.splitlines()) <= 2  # argparse's usage line, then the error
    assert not os.path.exists(tmp_path / "out")


def test_an_earlier_run_is_refused_with_how_to_resume_it(tmp_path, capsys):
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "config.py").write_text("")
    with pytest.raises(SystemExit) as e:
        main([DEMO, "--set", f"output_dir={tmp_path}"])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1
    assert f"passing {tmp_path / 'demo'} in place of {DEMO}" in err and "--overwrite" in err


def test_help_says_how_scenes_share_a_step(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for word in ("--scenes_per_device", "--set", "run folder", "group after group", "resume"):
        assert word in out, word


def test_every_scene_embeds_its_prompts_before_any_unet_loads(tmp_path, monkeypatch):
    # The T5 encoder and the UNet do not fit a 24 GB card together: scene b's prompts must not
    # wait until scene a's batch has put the shared UNet on the device. One encoder load serves
    # both scenes' texts.
    import interfusion_jax.guidance_setup as guidance_setup
    import interfusion_jax.train_many as train_many

    class Loaded(Exception):
        pass

    events = []
    monkeypatch.setattr(guidance_setup, "embed_prompts",
                        lambda model_dir, texts, cache_dir, lowercase: events.append(("embed", texts)))

    def load_unet(cfg):
        events.append(("load", None))
        raise Loaded

    monkeypatch.setattr(train_many, "load_unet", load_unet)
    scene_b = tmp_path / "b.py"
    scene_b.write_text(SCENE_B)
    model_dir = os.path.join(ROOT, "tests", "fixtures", "if_unet", "stage1")
    with pytest.raises(Loaded):
        main([DEMO, str(scene_b), "--scenes_per_device", "1", "--set", f"output_dir={tmp_path / 'out'}",
              "--set", "guidance.kind=if", "--set", f"guidance.model_dir={model_dir}"])
    assert [e for e, _ in events] == ["embed", "load"]
    texts = events[0][1]
    # Both scenes' object prompts (b's is a stool), each text once.
    assert any("a stool" in t for t in texts) and any("a chair" in t for t in texts)
    assert len(texts) == len(set(texts)) and "" in texts
