"""Orbax checkpoints: full resume, weights-only resume, newest step, clear errors, kill -9."""
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from interfusion_jax.checkpoint import (CheckpointError, latest_step, restore_checkpoint,
                                        save_checkpoint)


def _state(seed):
    rng = np.random.default_rng(seed)
    params = {"field": {"table": jnp.asarray(rng.normal(size=(64, 2)), jnp.float32),
                        "w": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)}}
    opt_state = optax.adam(1e-2).init(params)
    grid = {"occs": jnp.asarray(rng.uniform(size=(8, 8, 8)), jnp.float32),
            "binary": jnp.asarray(rng.uniform(size=(8, 8, 8)) > 0.5)}
    return params, opt_state, grid


def _equal(a, b):
    return all(np.array_equal(np.asarray(x), np.asarray(y))
               for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


def test_full_and_weights_only_resume(tmp_path):
    params, opt_state, grid = _state(0)
    save_checkpoint(tmp_path / "ckpt", 10, {"params": params, "opt_state": opt_state,
                                            "state": grid}, meta={"center": [0.1, 0.2, 0.3]})
    params2, opt2, grid2 = _state(1)
    save_checkpoint(tmp_path / "ckpt", 20, {"params": params2, "opt_state": opt2, "state": grid2})
    assert latest_step(tmp_path / "ckpt") == 20

    fresh = _state(2)
    step, items, meta = restore_checkpoint(
        tmp_path / "ckpt", {"params": fresh[0], "opt_state": fresh[1], "state": fresh[2]}, step=10)
    assert step == 10 and meta["center"] == [0.1, 0.2, 0.3] and meta["step"] == 10
    assert _equal(items["params"], params) and _equal(items["opt_state"], opt_state)
    assert _equal(items["state"], grid)

    step, items, _ = restore_checkpoint(tmp_path / "ckpt", {"params": fresh[0]})
    assert step == 20 and set(items) == {"params"} and _equal(items["params"], params2)


def test_missing_checkpoint_names_the_folder(tmp_path):
    with pytest.raises(CheckpointError, match="no complete checkpoint in .*nothing"):
        restore_checkpoint(tmp_path / "nothing", {"params": {"a": jnp.zeros(2)}})


def test_structure_mismatch_is_reported(tmp_path):
    params, _, _ = _state(0)
    save_checkpoint(tmp_path / "ckpt", 1, {"params": params})
    with pytest.raises(CheckpointError, match="no step restores this run's model"):
        restore_checkpoint(tmp_path / "ckpt", {"params": {"field": {"table": jnp.zeros((32, 2))}}})


KILLED_SAVER = """
import sys
import numpy as np
from interfusion_jax.checkpoint import Checkpointer
with Checkpointer(sys.argv[1], keep=2) as ckpt:
    for step in range(1, 1000):
        # 8 MB a step, so that a kill often lands inside a save.
        ckpt.save(step, {"params": {"w": np.full((2**21,), step, np.float32)}})
        print(step, flush=True)
"""


@pytest.mark.parametrize("delay", [1.5, 3.0])
def test_kill_9_during_saves_leaves_a_restorable_newest_step(tmp_path, delay):
    """A process saving checkpoints is killed with SIGKILL at an arbitrary moment: the newest
    complete step restores, holding exactly that step's values."""
    directory = tmp_path / "ckpt"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_SAVER, str(directory)],
                            stdout=subprocess.PIPE, text=True)
    first = proc.stdout.readline()  # the first save is complete: the process is in its loop
    assert first.strip() == "1"
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    step = latest_step(directory)
    assert step is not None and step >= 1
    _, items, _ = restore_checkpoint(directory, {"params": {"w": np.zeros(2**21, np.float32)}})
    np.testing.assert_array_equal(items["params"]["w"], np.full(2**21, step, np.float32))
