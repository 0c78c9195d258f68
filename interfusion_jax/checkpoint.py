"""Training checkpoints through Orbax: named pytrees per step, resumable in full or weights only.

A checkpoint holds several items (e.g. "params", "opt_state", "state", and a JSON "meta"), so a
weights-only resume reads "params" alone and the optimiser restarts from scratch. Orbax writes each
step to a temporary folder and renames it when complete, so an interrupted save leaves nothing that
a resume would pick up.
"""
import os

import jax
import orbax.checkpoint as ocp


def _manager(directory, max_to_keep=None):
    directory = os.path.abspath(directory)
    return ocp.CheckpointManager(
        directory, options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
    )


def save_checkpoint(directory, step, items, meta=None, max_to_keep=2):
    """Save pytrees `items` (name -> pytree) and a JSON-able `meta` dict as checkpoint `step`."""
    args = {name: ocp.args.StandardSave(tree) for name, tree in items.items()}
    args["meta"] = ocp.args.JsonSave(dict(meta or {}, step=int(step)))
    with _manager(directory, max_to_keep) as manager:
        manager.save(int(step), args=ocp.args.Composite(**args))
        manager.wait_until_finished()


def latest_step(directory):
    """The newest complete checkpoint step in `directory`, or None."""
    if not os.path.isdir(directory):
        return None
    with _manager(directory) as manager:
        return manager.latest_step()


def restore_checkpoint(directory, templates, step=None):
    """Restore the items named in `templates` (name -> pytree of the expected structure/shapes).

    Returns (step, {name: pytree}, meta). Items not named are not read, which is how a weights-only
    resume skips the optimiser state. Fails naming the folder when there is no checkpoint, and
    naming the item when the stored structure differs from the template.
    """
    step = latest_step(directory) if step is None else step
    if step is None:
        raise FileNotFoundError(f"no checkpoint in {os.path.abspath(directory)} (resume flag)")
    abstract = {
        name: ocp.args.StandardRestore(jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, t))
        for name, t in templates.items()
    }
    abstract["meta"] = ocp.args.JsonRestore()
    with _manager(directory) as manager:
        try:
            restored = manager.restore(int(step), args=ocp.args.Composite(**abstract))
        except (ValueError, KeyError) as e:
            raise ValueError(
                f"checkpoint {directory} step {step} does not match this run's model "
                f"(items {sorted(templates)}): {e}"
            ) from None
    items = {name: restored[name] for name in templates}
    return int(step), items, dict(restored["meta"])
