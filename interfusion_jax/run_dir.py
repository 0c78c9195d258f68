"""A run's folder: what it holds, how a new run claims one, and how a run is read back.

RUN_DIR = `<output_dir>/<name>` holds config.py (the resolved config: `--config` it to repeat the
run), metrics.jsonl and tensorboard/ (the training log), val/ (validation sheets), ckpt/ (Orbax
checkpoints: items params, opt_state, scene = grids and object centre, and meta = the PRNG key),
test/ (videos and frames), mesh/ (meshes) and metrics.json. A new run never writes into a folder
that holds an earlier one: it is refused unless the run is resumed (`--resume RUN_DIR`) or the
user asks to start over (`--overwrite`, which deletes the earlier run first).
"""
import functools
import os
import shutil
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ifcommon import UserError
from interfusion_jax.checkpoint import complete_steps, restore_checkpoint
from interfusion_jax.config import load_config
from interfusion_jax.evaluate import make_eval_renderer
from interfusion_jax.scene import run_body
from interfusion_jax.train_step import TrainState, init_state, make_scene_model

CONFIG = "config.py"
CHECKPOINTS = "ckpt"


def claim(cfg, overwrite=False):
    """The folder of a new run of `cfg`, created empty. Raises UserError when it holds an
    earlier run, unless `overwrite` (which deletes it)."""
    run_dir = os.path.join(cfg.output_dir, cfg.name)
    if os.path.isdir(run_dir) and os.listdir(run_dir):
        if not overwrite:
            raise UserError(f"{run_dir} holds an earlier run: continue it with --resume {run_dir}, "
                            "start over with --overwrite, or pick another --config.name")
        shutil.rmtree(run_dir)
    os.makedirs(run_dir, exist_ok=True)
    return run_dir


def run_config(run_dir, overrides=(), flag="--resume"):
    """The saved config of RUN_DIR with `a.b=value` overrides. Raises UserError naming `flag`
    when RUN_DIR is not a run folder or has no complete checkpoint."""
    if not os.path.isdir(run_dir):
        raise UserError(f"{flag} {run_dir}: no such folder")
    path = os.path.join(run_dir, CONFIG)
    if not os.path.isfile(path):
        raise UserError(f"{flag} {run_dir}: not a run folder (no {CONFIG})")
    if not complete_steps(os.path.join(run_dir, CHECKPOINTS)):
        raise UserError(f"{flag} {run_dir}: no complete checkpoint in "
                        f"{os.path.join(run_dir, CHECKPOINTS)}")
    return load_config(path, overrides)


def scene_item(state):
    """Occupancy grids and object centre, one checkpoint item (Orbax stores no bare arrays)."""
    return {"grids": state.grids, "center": state.center}


def checkpoint_items(state):
    """(items, meta) of a TrainState as saved in ckpt/."""
    items = {"params": state.params, "opt_state": state.opt_state, "scene": scene_item(state)}
    return items, {"key": np.asarray(state.key).tolist()}


def restore_state(state, ckpt_dir, weights_only=False):
    """`state` (a fresh TrainState, the template) with the newest checkpoint of `ckpt_dir`: all of
    it, or with weights_only its parameters alone (step 0, fresh optimiser and grids). The result
    lies on the default device like the output of a training step, so the step compiles once."""
    templates = {"params": state.params}
    if not weights_only:
        templates.update(opt_state=state.opt_state, scene=scene_item(state))
    step, items, meta = restore_checkpoint(ckpt_dir, templates)
    state = state.replace(params=items["params"])
    if not weights_only:
        state = state.replace(opt_state=items["opt_state"], **items["scene"],
                              step=jnp.asarray(step, jnp.int32),
                              key=jnp.asarray(np.asarray(meta["key"], np.uint32)))
    return on_device(state)


def on_device(tree):
    """`tree` committed to the default device, as a jitted step's outputs are: a fresh, a restored
    and a stepped state then share one compiled step."""
    return jax.device_put(tree, jax.devices()[0])


class Run(NamedTuple):
    """A trained run: its config, scene model, state (a TrainState with the params, grids, centre
    and step of the last checkpoint; no optimiser state or key), guide body, body model and
    evaluation renderer (evaluate.make_eval_renderer)."""

    cfg: Any
    model: Any
    state: Any
    guide: Any
    body: Any
    render: Any


def load_run(run_dir, overrides=(), flag="run folder"):
    """RUN_DIR (config.py, ckpt/) -> Run from its newest checkpoint; UserError naming the flag
    and the missing or unreadable path."""
    cfg = run_config(run_dir, overrides, flag)
    body, guide = run_body(cfg)
    # The body prior only shapes training losses; evaluation never reads it.
    model = make_scene_model(cfg, guide.head, None)
    shapes = jax.eval_shape(functools.partial(init_state, model, cfg), jax.random.PRNGKey(0))
    step, items, _ = restore_checkpoint(
        os.path.join(run_dir, CHECKPOINTS),
        {"params": shapes.params, "scene": scene_item(shapes)})
    state = TrainState(step=jnp.asarray(step, jnp.int32), params=items["params"], opt_state=None,
                       key=None, bad_steps=None, **items["scene"])
    return Run(cfg, model, state, guide, body,
               make_eval_renderer(model, cfg))
