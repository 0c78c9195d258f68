"""The interaction stage end to end at toy size: outputs on disk, then resume from the checkpoint."""
import json
import os

import jax
import numpy as np
import pytest
import trimesh

from interfusion_jax.config import load_config
from interfusion_jax.train import _resume, build, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["train.max_steps=2", "train.val_every=1", "train.val_views=1", "train.object_center_every=1",
        "train.object_center_resolution=16", "test.views=2", "test.resolution=16",
        "test.mesh_resolution=24", "render.width=16", "render.height=16", "body.prior_resolution=24",
        "render.max_samples=16384"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    cfg = load_config(os.path.join(ROOT, "configs", "demo.py"), TINY + [f"output_dir={out}"])
    return train(cfg)


def test_run_writes_config_metrics_images_checkpoint_videos_meshes(run_dir):
    for name in ("config.py", "metrics.jsonl", "val/it000001.png", "val/it000002.png",
                 "test/object.mp4", "test/human.mp4", "test/interaction.mp4", "mesh/object.obj",
                 "mesh/human.obj"):
        assert os.path.getsize(os.path.join(run_dir, name)) > 0, name
    rows = [json.loads(line) for line in open(os.path.join(run_dir, "metrics.jsonl"))]
    assert [r["step"] for r in rows] == [0, 1]
    assert all(np.isfinite(r["loss"]) and r["sds"] > 0 for r in rows)
    mesh = trimesh.load(os.path.join(run_dir, "mesh", "human.obj"), force="mesh")
    assert len(mesh.faces) > 0 and np.all(np.abs(mesh.vertices) <= 2.0 + 1e-4)
    assert not any(f.endswith(".tmp") or ".tmp." in f for _, _, fs in os.walk(run_dir) for f in fs)


def test_resume_restores_step_parameters_and_optimiser(run_dir):
    cfg = load_config(os.path.join(run_dir, "config.py"),
                      [f"train.resume={os.path.join(run_dir, 'ckpt')}"])
    _, fresh, _ = build(cfg, jax.random.PRNGKey(cfg.seed))
    resumed = _resume(fresh, cfg)
    assert int(resumed.step) == 2
    leaves = lambda t: jax.tree_util.tree_leaves(t)  # noqa: E731
    assert any(not np.array_equal(a, b) for a, b in zip(leaves(resumed.params), leaves(fresh.params)))
    assert any(not np.array_equal(a, b)
               for a, b in zip(leaves(resumed.opt_state), leaves(fresh.opt_state)))

    cfg = load_config(os.path.join(run_dir, "config.py"),
                      [f"train.resume={os.path.join(run_dir, 'ckpt')}", "train.weights_only=True"])
    weights_only = _resume(fresh, cfg)
    assert int(weights_only.step) == 0
    np.testing.assert_array_equal(leaves(weights_only.params)[0], leaves(resumed.params)[0])
    for a, b in zip(leaves(weights_only.opt_state), leaves(fresh.opt_state)):
        np.testing.assert_array_equal(a, b)
