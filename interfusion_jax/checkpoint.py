"""Training checkpoints through Orbax: named pytrees per step, resumable in full or weights only.

A checkpoint holds several items (e.g. "params", "opt_state", "scene", and a JSON "meta"), so a
weights-only resume reads "params" alone and the optimiser restarts from scratch. Orbax writes each
step to a temporary folder and renames it when complete, so a save killed at any moment (even by
`kill -9`) leaves nothing that a restore would pick up; the leftover temporary folder is removed the
next time the folder is opened for writing. A step that is complete but cannot be read (a file
damaged later) is skipped with a warning in favour of the next older one.
"""
import os
import sys

import jax
import orbax.checkpoint as ocp

from ifcommon import UserError


class CheckpointError(UserError):
    """A checkpoint folder with no step that this run's model can restore."""


def _manager(directory, max_to_keep=None, read_only=False):
    return ocp.CheckpointManager(
        os.path.abspath(directory),
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=not read_only,
                                             read_only=read_only,
                                             cleanup_tmp_directories=not read_only))


def _save_args(step, items, meta):
    args = {name: ocp.args.StandardSave(tree) for name, tree in items.items()}
    args["meta"] = ocp.args.JsonSave(dict(meta or {}, step=int(step)))
    return ocp.args.Composite(**args)


class Checkpointer:
    """Saves of one run's checkpoint folder, keeping the newest `keep` steps. A save writes in the
    background while training goes on; `wait` (and leaving the `with` block) blocks until the
    last one is complete."""

    def __init__(self, directory, keep=2):
        self._manager = _manager(directory, max_to_keep=keep)

    def save(self, step, items, meta=None):
        """Save pytrees `items` (name -> pytree) and a JSON-able `meta` dict as step `step`."""
        self._manager.save(int(step), args=_save_args(step, items, meta), force=True)

    def wait(self):
        self._manager.wait_until_finished()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._manager.close()


def save_checkpoint(directory, step, items, meta=None, keep=2):
    """One complete save (see Checkpointer.save)."""
    with Checkpointer(directory, keep) as ckpt:
        ckpt.save(step, items, meta)


def complete_steps(directory):
    """The complete checkpoint steps in `directory`, newest first ([] when there is none)."""
    if not os.path.isdir(directory):
        return []
    with _manager(directory, read_only=True) as manager:
        return sorted(manager.all_steps(), reverse=True)


def latest_step(directory):
    """The newest complete checkpoint step in `directory`, or None."""
    steps = complete_steps(directory)
    return steps[0] if steps else None


def _first_line(error):
    lines = [line for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0] if lines else ''}"[:300]


def _restore_step(directory, step, templates):
    abstract = {
        name: ocp.args.StandardRestore(jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, t))
        for name, t in templates.items()
    }
    abstract["meta"] = ocp.args.JsonRestore()
    with _manager(directory, read_only=True) as manager:
        restored = manager.restore(int(step), args=ocp.args.Composite(**abstract))
    return {name: restored[name] for name in templates}, dict(restored["meta"])


def restore_checkpoint(directory, templates, step=None):
    """Restore the items named in `templates` (name -> pytree of the expected structure/shapes).

    Returns (step, {name: pytree}, meta). Items not named are not read, which is how a weights-only
    resume skips the optimiser state. step None: the newest step that restores, older ones tried
    in turn (each failure warned about in one line). Raises CheckpointError in one line naming the
    folder when there is no checkpoint, or when no step matches this run's model.
    """
    directory = os.path.abspath(directory)
    steps = complete_steps(directory) if step is None else [step]
    if not steps:
        raise CheckpointError(f"no complete checkpoint in {directory}")
    failures = []
    for s in steps:
        try:
            items, meta = _restore_step(directory, s, templates)
        except Exception as e:  # noqa: BLE001 - Orbax and TensorStore raise many kinds
            failures.append(f"step {s}: {_first_line(e)}")
            if s != steps[-1]:
                print(f"[interfusion] warning: checkpoint {directory} {failures[-1]}; trying the "
                      "previous step", file=sys.stderr)
            continue
        return int(s), items, meta
    raise CheckpointError(
        f"checkpoint {directory}: no step restores this run's model (items {sorted(templates)}); "
        f"{failures[0]}")
