"""Interaction stage: `python -m interfusion_jax.train --config configs/<scene>.py [--config.a.b=v]`.

Writes under `<output_dir>/<name>/`: config.py (the resolved config; `--config` it to repeat the
run), metrics.jsonl, val/ images, ckpt/ (Orbax), test/ videos and mesh/ files. Resume with
`--config.train.resume=<run>/ckpt` (add `--config.train.weights_only=True` to restart the optimiser);
a resume whose checkpoint already reached `train.max_steps` only renders the test views and meshes.
"""
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from interfusion_jax.checkpoint import restore_checkpoint, save_checkpoint
from interfusion_jax.config import exit_on_config_error, parse_config, save_config
from interfusion_jax.evaluate import export_meshes, make_eval_renderer, save_test, save_validation
from interfusion_jax.guidance_setup import setup_guidance
from interfusion_jax.metrics import Run, run_metrics
from interfusion_jax.scene import object_center, run_body
from interfusion_jax.train_step import init_state, make_scene_model, make_train_step
from pose import BodyPrior
from pose.atomic_io import save_text


def build(cfg, key):
    """Config -> (scene model, initial state, guidance)."""
    body, gb = run_body(cfg)
    prior = BodyPrior.build(gb.vertices, gb.faces, bound=cfg.field.radius,
                            resolution=cfg.body.prior_resolution)
    k_state, k_guidance = jax.random.split(key)
    model = make_scene_model(cfg, gb.head, prior)
    guidance = setup_guidance(cfg, k_guidance, gb, body.vertex_colors)
    return model, init_state(model, cfg, k_state), guidance


def _resume(state, cfg):
    templates = {"params": state.params}
    if not cfg.train.weights_only:
        templates.update(opt_state=state.opt_state, scene=_scene_item(state))
    step, items, meta = restore_checkpoint(cfg.train.resume, templates)
    state = state.replace(params=items["params"])
    if not cfg.train.weights_only:
        state = state.replace(opt_state=items["opt_state"], **items["scene"],
                              step=jnp.asarray(step, jnp.int32),
                              key=jnp.asarray(np.asarray(meta["key"], np.uint32)))
    return state


def _scene_item(state):
    """Occupancy grids and object centre, one checkpoint item (Orbax stores no bare arrays)."""
    return {"grids": state.grids, "center": state.center}


def _save(state, out_dir):
    save_checkpoint(os.path.join(out_dir, "ckpt"), int(state.step),
                    {"params": state.params, "opt_state": state.opt_state,
                     "scene": _scene_item(state)},
                    meta={"key": np.asarray(state.key).tolist()})


def _log(f, step, metrics, window):
    """One metrics.jsonl row: the step's metrics, and over the steps since the last row (window:
    their per-render truncation figures) the worst truncation and the steps that cut open rays."""
    row = {"step": step}
    for k, v in jax.device_get(metrics).items():
        v = np.asarray(v)
        row[k] = v.item() if v.size == 1 else v.tolist()
    cut = {k: np.stack([np.asarray(w[k]) for w in jax.device_get(window)]) for k in window[0]}
    row.update(window_steps=len(window),
               truncated_rays_max=cut["truncated_rays"].max(0).tolist(),
               open_truncated_rays_max=cut["open_truncated_rays"].max(0).tolist(),
               open_truncated_steps=int(np.sum(np.any(cut["open_truncated_rays"] > 0, axis=1))))
    f.write(json.dumps(row) + "\n")
    f.flush()
    return row


def train(cfg):
    out_dir = os.path.join(cfg.output_dir, cfg.name)
    os.makedirs(out_dir, exist_ok=True)
    save_config(cfg, os.path.join(out_dir, "config.py"))
    model, state, guidance = build(cfg, jax.random.PRNGKey(cfg.seed))
    print(f"[interfusion] {guidance.description}", file=sys.stderr)
    if cfg.train.resume:
        state = _resume(state, cfg)
    step_fn = make_train_step(model, guidance, cfg)
    center_fn = jax.jit(lambda params, prev: object_center(
        model.density_fn(params), prev, cfg.field.radius, cfg.train.object_center_resolution,
        cfg.train.object_center_density_scale))

    val_render = make_eval_renderer(model, 2 * cfg.render.width, cfg.material.ambient_only_steps)

    first = int(state.step)
    with open(os.path.join(out_dir, "metrics.jsonl"), "a") as log, \
            tqdm(range(first, cfg.train.max_steps), initial=first, total=cfg.train.max_steps,
                 desc=cfg.name) as bar:
        window = []
        for step in bar:
            if step > 0 and step % cfg.train.object_center_every == 0:
                state = state.replace(center=center_fn(state.params["object"], state.center))
            state, metrics, _ = step_fn(state)
            window.append({k: metrics[k] for k in ("truncated_rays", "open_truncated_rays")})
            if step % 10 == 0 or step == cfg.train.max_steps - 1:
                row = _log(log, step, metrics, window)
                window = []
                bar.set_postfix(loss=f"{row['loss']:.4g}")
                if row["open_truncated_steps"]:
                    worst = max(row["open_truncated_rays_max"])
                    bar.write(f"step {step}: {row['open_truncated_steps']} of the last "
                              f"{row['window_steps']} steps cut rays short before they were "
                              f"opaque (up to {worst:.1%} of a render's rays); raise "
                              "render.max_samples")
            if (step + 1) % cfg.train.val_every == 0:
                save_validation(val_render, state, cfg, os.path.join(out_dir, "val"))
    if int(state.step) > first:
        _save(state, out_dir)
    test_render = make_eval_renderer(model, cfg.test.resolution, cfg.material.ambient_only_steps)
    videos = save_test(test_render, state, cfg, os.path.join(out_dir, "test"))
    meshes = export_meshes(state, model, cfg, os.path.join(out_dir, "mesh"))
    body, guide = run_body(cfg)
    scores = run_metrics(Run(cfg, model, state, guide, body), views=cfg.test.metrics_views,
                         grid_resolution=cfg.test.metrics_grid)
    save_text(os.path.join(out_dir, "metrics.json"), json.dumps(scores, indent=2) + "\n")
    print(f"[interfusion] metrics: {json.dumps(scores)}", file=sys.stderr)
    print(f"[interfusion] wrote {out_dir}: {', '.join(os.path.relpath(p, out_dir) for p in videos + meshes)}",
          file=sys.stderr)
    return out_dir


@exit_on_config_error
def main(argv):
    cfg, _ = parse_config(argv)
    train(cfg)


if __name__ == "__main__":
    main()
