"""Several scenes in one run: the scenes sharded over the devices, N per device, and one UNet call
of batch 8·N for all the scenes of a device.

  python -m interfusion_jax.train_many SCENE [SCENE ...] [--scenes_per_device N]
      [--set KEY=VALUE ...] [--overwrite]

SCENE is a config file (a new run, as `train --config FILE`) or a run folder (resumed from its
newest checkpoint with its saved config, as `train --resume RUN_DIR`); every --set override applies
to every scene. Each scene writes the run folder of its single run (config.py, metrics.jsonl,
tensorboard/, val/, ckpt/, test/, mesh/, metrics.json), can be resumed alone with
`train --resume RUN_DIR`, and ends as its single run would, to float rounding: the training step
is vmapped over the N scenes of a device, so the UNet's weights (loaded once) serve them all while
each scene keeps its own prompt embeddings, fields, grids, optimiser, object centre and guide body.

Scenes of different lengths step together; a scene that reached its train.max_steps is held as it
is (its updates masked) while the others go on, and all are tested and exported when the last one
ends. Scenes share one compiled step when their configs agree on all but their name, seed,
output_dir, prompts, body.pose, body.mode, train.*, test.* and the camera, material, loss and grid
numbers that the step takes as arguments (train_step.StepSettings.numbers); scenes that differ in
more (render or field sizes, sampler budgets, guidance model, ...) are trained group after group,
each group with its own step, as printed at the start. Ctrl-C saves every scene and prints the
command that resumes them.
"""
import argparse
import contextlib
import math
import os
import sys
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from ifcommon import UserError, command_line
from interfusion_jax import run_dir as runs
from interfusion_jax.checkpoint import Checkpointer
from interfusion_jax.config import ConfigError, load_config
from interfusion_jax.guidance_setup import cache_prompt_embeddings, load_unet
from interfusion_jax.inputs import check_inputs
from interfusion_jax.interrupt import StopRequest
from interfusion_jax.timing import PhaseTimer
from interfusion_jax.train import (Progress, build, center_due, compile_eval_ahead, finish,
                                   first_step_done, make_center_fn, open_run, use_compile_cache)
from interfusion_jax.train_step import StepSettings, bind_step, step_arrays

AXIS = "scenes"

# Config entries that may differ between the scenes of one compiled step: those the host loop
# reads per scene, those that reach the step as the scene's own arrays (prompt embeddings, guide
# body) and the step's numbers (train_step.StepSettings.numbers).
PER_SCENE = ("name", "seed", "output_dir", "train", "test", "prompts", "body.pose", "body.mode",
             "guidance.embedding_cache", "camera", "material.ambient_only_steps",
             "material.albedo_prob", "material.textureless_prob", "loss.lambda_orient",
             "loss.lambda_sparsity", "loss.lambda_opaque", "loss.lambda_shape_human",
             "loss.shape_weights", "loss.shape_weight_steps", "loss.shape_density_scale",
             "render.grid_warmup_steps", "render.grid_decay", "render.grid_threshold")


class Scene(NamedTuple):
    """A scene of the command line: its argument, config, and run folder when resumed (None for a
    new run, claimed when its batch starts)."""

    source: str
    cfg: Any
    run_dir: Any


def _flat(tree, prefix=""):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _flat(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _per_scene(key):
    return any(key == k or key.startswith(k + ".") for k in PER_SCENE)


def step_signature(cfg):
    """{config key: value} of what one compiled step fixes for all its scenes: the entries outside
    PER_SCENE, the settings compiled in, and the form (number or schedule) of the step's numbers."""
    settings = StepSettings.from_config(cfg)
    entries = {k: repr(v) for k, v in _flat(cfg.to_dict()) if not _per_scene(k)}
    entries.update({f"step setting {k}": repr(v) for k, v in _flat(settings.static()._asdict())
                    if jax.tree_util.tree_leaves(v)})
    entries["(form of the step's numbers)"] = repr(jax.tree_util.tree_structure(settings.numbers()))
    return entries


def group_scenes(scenes):
    """Scenes -> groups (lists of scenes, first-seen order) that can share one compiled step, and
    one line per group after the first saying what sets it apart from the first."""
    groups = {}
    for scene in scenes:
        groups.setdefault(tuple(sorted(step_signature(scene.cfg).items())), []).append(scene)
    groups = list(groups.values())
    first = step_signature(groups[0][0].cfg)
    notes = []
    for n, group in enumerate(groups[1:], 2):
        other = step_signature(group[0].cfg)
        keys = [k for k in sorted(set(first) | set(other)) if first.get(k) != other.get(k)]
        notes.append(f"{', '.join(s.source for s in group)} differ from {groups[0][0].source} in "
                     f"{', '.join(keys)}: trained after it, as group {n} of {len(groups)}")
    return groups, notes


def scene_mesh(n_scenes, per_device):
    """(Mesh over the devices that hold the scenes, slots): ceil(n / per_device) devices, the
    scenes spread evenly over them; slots (a multiple of the devices) >= n_scenes."""
    n_devices = math.ceil(n_scenes / per_device)
    per_device = math.ceil(n_scenes / n_devices)
    return Mesh(np.array(jax.devices()[:n_devices]), (AXIS,)), n_devices * per_device


def make_many_step(model, guidance, cfg, mesh):
    """(states, arrays, shared, active) -> (states, metrics), one jitted step of every scene slot:
    the training step (train_step.bind_step) vmapped over the slots of a device, sharded over
    `mesh`. states, arrays (step_arrays without the shared ones), active [S] and the outputs have a
    leading slot axis, split over the devices; shared (the UNet weights) is the same for every
    scene, unmapped, so the UNet runs once per device on the images of all its scenes. A slot
    that is not active keeps its state. The states' buffers are donated."""
    step = bind_step(model, guidance, cfg)

    def one(state, arrays, shared, active):
        new, metrics, _ = step(state, dict(arrays, guidance=dict(arrays["guidance"], **shared)))
        return jax.tree_util.tree_map(lambda a, b: jnp.where(active, a, b), new, state), metrics

    slots, whole = P(AXIS), P()
    # No collective anywhere: each device steps its own slots. (The varying-axis check trips over
    # the grid refresh's lax.cond under vmap, so it is off.)
    sharded = jax.shard_map(jax.vmap(one, in_axes=(0, 0, None, 0)), mesh=mesh,
                            in_specs=(slots, slots, whole, slots), out_specs=(slots, slots),
                            check_vma=False)

    def many_step(states, arrays, shared, active):  # the name the compile log shows
        return sharded(states, arrays, shared, active)

    return jax.jit(many_step, donate_argnums=(0,))


def stack(trees, slots, sharding):
    """Per-scene pytrees -> one pytree with a leading slot axis (the first scene repeated into the
    spare slots), split over the devices by `sharding`."""
    trees = list(trees) + [trees[0]] * (slots - len(trees))
    return jax.device_put(jax.tree_util.tree_map(lambda *a: np.stack(a), *jax.device_get(trees)),
                          sharding)


def step_inputs(builts, cfgs, states, mesh, slots):
    """make_many_step's (states, arrays, shared) for scenes given by their Built, config and
    state: the first two stacked over `slots` and split over `mesh`, shared replicated."""
    split, whole = NamedSharding(mesh, P(AXIS)), NamedSharding(mesh, P())
    keys = builts[0].guidance.shared
    arrays = []
    for built, cfg in zip(builts, cfgs):
        a = step_arrays(built.model, built.guidance, cfg)
        a["guidance"] = {k: v for k, v in a["guidance"].items() if k not in keys}
        arrays.append(a)
    shared = jax.device_put({k: builts[0].guidance.arrays[k] for k in keys}, whole)
    return stack(states, slots, split), stack(arrays, slots, split), shared


def active_slots(active, slots, mesh):
    """[slots] bool, split over `mesh`: the scenes' `active` flags, spare slots inactive."""
    return jax.device_put(np.array(list(active) + [False] * (slots - len(active))),
                          NamedSharding(mesh, P(AXIS)))


def scene_state(states, i):
    """Scene i of stacked states, on the default device as a single run's state is (read from
    the device that holds it, no collective)."""
    def take(a):
        for shard in a.addressable_shards:
            start = shard.index[0].start or 0
            if start <= i < start + shard.data.shape[0]:
                return runs.on_device(shard.data[i - start])
        raise IndexError(i)

    return jax.tree_util.tree_map(take, states)


def _set_center(states, i, center):
    centers = np.array(states.center)
    centers[i] = np.asarray(center)
    return states.replace(center=jax.device_put(centers, states.center.sharding))


class Member(NamedTuple):
    """A scene of a batch as it trains: its config, run folder, Built (without its initial state,
    which the batch's stacked states hold), evaluation renderer, checkpointer and timer."""

    cfg: Any
    run_dir: str
    built: Any
    render: Any
    ckpt: Any
    timer: Any


def _train_together(members, states, per_device, stop):
    """Train the members of one group side by side from their `states` to their
    train.max_steps. `states` is emptied once stacked onto the devices, so that the scenes'
    single copies free their memory. Returns (state_of(i), the state member i ended with; per
    member 1 when it stopped for non-finite steps, else None; the exit status of a stop signal,
    or None)."""
    steps = [int(s.step) for s in states]
    lasts = [m.cfg.train.max_steps for m in members]
    status = [None] * len(members)
    if all(s >= last for s, last in zip(steps, lasts)):
        return lambda i: states[i], status, None
    mesh, slots = scene_mesh(len(members), per_device)
    lead = members[0]
    many_step = make_many_step(lead.built.model, lead.built.guidance, lead.cfg, mesh)
    stacked, arrays, shared = step_inputs([m.built for m in members], [m.cfg for m in members],
                                          states, mesh, slots)
    states.clear()
    unstack = jax.jit(lambda tree: [jax.tree_util.tree_map(lambda a: a[i], tree)
                                    for i in range(len(members))])
    # One object-centre function per centre setting: the group's scenes share their field.
    centers = {}
    progress = [Progress(m.cfg, m.run_dir, s, m.render, m.ckpt, m.timer, position=i)
                for i, (m, s) in enumerate(zip(members, steps))]
    print(f"[interfusion] compiling the training step of {len(members)} scenes on "
          f"{mesh.devices.size} device(s), {slots // mesh.devices.size} per device",
          file=sys.stderr)
    t0 = time.perf_counter()
    try:
        while True:
            active = [s < last and st is None for s, last, st in zip(steps, lasts, status)]
            if not any(active):
                return lambda i: scene_state(stacked, i), status, None
            for i, m in enumerate(members):
                if active[i] and center_due(m.cfg, steps[i]):
                    t = m.cfg.train
                    fn = centers.setdefault((t.object_center_resolution,
                                             t.object_center_density_scale),
                                            make_center_fn(m.built.model, m.cfg))
                    with m.timer("object centre"):
                        scene = scene_state(stacked, i)
                        stacked = _set_center(stacked, i, fn(scene.params["object"], scene.center))
            stacked, metrics = many_step(stacked, arrays, shared, active_slots(active, slots, mesh))
            if t0 is not None:
                first_step_done(t0, stacked.step, [m.timer for m in members])
                t0 = None
                for i, m in enumerate(members):
                    compile_eval_ahead(m.render, scene_state(stacked, i), m.cfg)
            metrics = unstack(metrics)
            for i in (i for i, a in enumerate(active) if a):
                status[i] = progress[i].after_step(steps[i], metrics[i],
                                                   lambda: scene_state(stacked, i), stop)
                steps[i] += 1
            if stop.signal and any(s < last and st is None
                                   for s, last, st in zip(steps, lasts, status)):
                for m in members:
                    m.ckpt.wait()
                return None, status, stop.exit_status
    finally:
        for p in progress:
            p.close()
        for m in members:
            m.render.wait()


def _train_batch(scenes, per_device, overwrite, unets, stop):
    """Build, train, test and export one batch of scenes of a group. Returns (per scene its exit
    status, 0 when it finished; the stop status or None)."""
    members, states = [], []
    with contextlib.ExitStack() as checkpointers:
        for scene in scenes:
            cfg, timer = scene.cfg, PhaseTimer()
            unet = None
            if cfg.guidance.kind == "if":
                key = (cfg.guidance.model_dir, cfg.guidance.dtype)
                if key not in unets:
                    with timer("build: unet"):
                        unets[key] = load_unet(cfg)
                unet = unets[key]
            built = build(cfg, jax.random.PRNGKey(cfg.seed), unet, timer)
            run_dir = scene.run_dir or runs.claim(cfg, overwrite)
            state, render = open_run(cfg, built, run_dir)
            states.append(state)
            ckpt = checkpointers.enter_context(
                Checkpointer(os.path.join(run_dir, runs.CHECKPOINTS), cfg.train.keep_checkpoints))
            members.append(Member(cfg, run_dir, built._replace(state=None), render, ckpt, timer))
        print(f"[interfusion] {members[0].built.guidance.description}", file=sys.stderr)
        state_of, status, stopped = _train_together(members, states, per_device, stop)
        for m in members:
            with m.timer("checkpoints"):
                m.ckpt.wait()
    if stopped is not None:
        return [s or 0 for s in status], stopped
    for i, (m, s) in enumerate(zip(members, status)):
        if s is None:
            finish(m.cfg, m.run_dir, m.built, state_of(i), m.render, m.timer)
    return [s or 0 for s in status], None


def load_scene(source, overrides):
    """A SCENE argument (config file or run folder) with the --set overrides -> Scene."""
    try:
        if os.path.isdir(source):
            return Scene(source, runs.run_config(source, overrides, "run folder"), source)
        if not os.path.isfile(source):
            raise UserError(f"{source}: no such config file or run folder")
        return Scene(source, load_config(source, overrides), None)
    except ConfigError as e:
        message = str(e)
        if message.startswith("--config."):
            raise ConfigError("--set " + message[len("--config."):]) from None
        raise ConfigError(f"{source}: {message.removeprefix('--config: ')}") from None


def check_scenes(scenes, overwrite):
    """Every scene's inputs, and run folders that are new, free (or --overwrite) and distinct."""
    seen = {}
    for scene in scenes:
        run_dir = scene.run_dir or os.path.join(scene.cfg.output_dir, scene.cfg.name)
        key = os.path.realpath(run_dir)
        if key in seen:
            raise UserError(f"{seen[key]} and {scene.source} both write {run_dir}: give them "
                            "different names (config.name) or output folders")
        seen[key] = scene.source
        try:
            check_inputs(scene.cfg)
        except UserError as e:
            raise UserError(f"{scene.source}: {e}") from None
        if scene.cfg.train.profile_at:
            raise UserError(f"{scene.source}: train.profile_at traces the steps of a single run; "
                            "profile it with python -m interfusion_jax.train")
        if scene.run_dir is None and not overwrite and os.path.isdir(run_dir) \
                and os.listdir(run_dir):
            raise UserError(f"{scene.source}: {run_dir} holds an earlier run: continue it by "
                            f"passing {run_dir} in place of {scene.source}, or start over with "
                            "--overwrite")


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="python -m interfusion_jax.train_many", allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="%(prog)s SCENE [SCENE ...] [--scenes_per_device N] [--set KEY=VALUE ...] "
              "[--overwrite]",
        description=__doc__.split("\n\n", 1)[1],
        epilog="examples:\n"
               "  %(prog)s configs/riding_a_bike.py configs/riding_a_horse.py "
               "--scenes_per_device 2 --set guidance.model_dir=weights/IF-I-XL-v1.0\n"
               "  %(prog)s outputs/riding_a_bike outputs/riding_a_horse "
               "--set train.max_steps=20000")
    p.add_argument("scenes", nargs="+", metavar="SCENE",
                   help="a config file (a new run) or a run folder (resumed)")
    p.add_argument("--scenes_per_device", type=int, default=1, metavar="N",
                   help="scenes stepped together on each device (default 1); more scenes than "
                        "devices x N train in batches, one after another")
    p.add_argument("--set", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                   help="a config override for every scene, e.g. train.max_steps=20000 "
                        "(see configs/base.py)")
    p.add_argument("--overwrite", action="store_true",
                   help="start new runs even where their folders hold earlier runs, which are "
                        "deleted (without it such a run is refused)")
    a = p.parse_args(argv)
    if a.scenes_per_device < 1:
        p.error(f"--scenes_per_device {a.scenes_per_device}: must be at least 1")
    return a


def _resume_command(scenes, started, sets):
    """The train_many command line that continues the scenes not yet finished."""
    args = [s.run_dir or os.path.join(s.cfg.output_dir, s.cfg.name) if s.source in started
            else s.source for s in scenes]
    fresh = [s for s in scenes if s.source not in started and s.run_dir is None]
    return " ".join(["python -m interfusion_jax.train_many"] + args +
                    (["--set"] + list(sets) if fresh and sets else []))


@command_line
def main(argv):
    a = parse_args(argv)
    scenes = [load_scene(source, a.set) for source in a.scenes]
    check_scenes(scenes, a.overwrite)
    for scene in scenes:
        use_compile_cache(scene.cfg)
    cache_prompt_embeddings([s.cfg for s in scenes])  # T5 comes and goes before any UNet loads
    groups, notes = group_scenes(scenes)
    for note in notes:
        print(f"[interfusion] {note}", file=sys.stderr)
    batch_size = len(jax.devices()) * a.scenes_per_device
    batches = [g[i:i + batch_size] for g in groups for i in range(0, len(g), batch_size)]
    statuses, unets = [], {}
    with StopRequest("stopping after this step to save every scene's checkpoint (press Ctrl-C "
                     "again to quit at once)") as stop:
        for n, batch in enumerate(batches):
            rest = [s for b in batches[n:] for s in b]
            if stop.signal:  # it came while the previous batch was tested and exported
                print(f"[interfusion] stopped; resume with: {_resume_command(rest, (), a.set)}",
                      file=sys.stderr)
                return stop.exit_status
            status, stopped = _train_batch(batch, a.scenes_per_device, a.overwrite, unets, stop)
            statuses += status
            if stopped is not None:
                started = {s.source for s in batch}
                print(f"[interfusion] stopped, checkpoints saved; resume with: "
                      f"{_resume_command(rest, started, a.set)}", file=sys.stderr)
                return stopped
    return max(statuses)


if __name__ == "__main__":
    main()
