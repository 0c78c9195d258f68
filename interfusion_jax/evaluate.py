"""Validation images, test videos and meshes of a scene (SPEC 2.6).

Evaluation cameras sit on a circle (elevation 10 degrees, distance 2, fov 70 in the release); the
object, human and interaction views use the training offsets with scale 1. Rays are rendered in
chunks under `lax.map`, so one compiled function serves any image size, with the complete renders
of nerf.render: no ray of an evaluation image is cut short.
"""
import os
import sys

import imageio.v2 as imageio
import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from interfusion_jax.scene import scene_views
from interfusion_jax.train_step import FIELDS
from nerf.cameras import circle_cameras, generate_rays
from nerf.material import eval_shading
from nerf.mesh import export_mesh, extract_mesh
from nerf.render import render_composite_complete, render_field_complete
from pose.atomic_io import atomic_write

EVAL_VIEWS = ("object", "human", "interaction")
RAY_CHUNK = 1024


def _render_chunked(render_fn, origins, directions):
    n = origins.shape[0]
    pad = (-n) % RAY_CHUNK
    o = jnp.pad(origins, ((0, pad), (0, 0))).reshape(-1, RAY_CHUNK, 3)
    d = jnp.pad(directions, ((0, pad), (0, 0)), constant_values=1.0).reshape(-1, RAY_CHUNK, 3)
    rgb = jax.lax.map(lambda od: render_fn(*od)["comp_rgb"], (o, d))
    return rgb.reshape(-1, 3)[:n]


def make_eval_renderer(model, size, ambient_only_steps):
    """A jitted (params, grids, center, c2w, fovy, light, step) -> object, human and interaction
    images [3, size, size, 3] of one evaluation camera."""

    def render(params, grids, center, c2w, fovy, light, step):
        c2ws, lights = scene_views(c2w, light, center, model.head, (1.0, 1.0, 1.0, 1.0))
        fns = lambda name, v: model.field_fns(  # noqa: E731
            params[name], eval_shading(lights[v], step, ambient_only_steps))
        renderers = [
            lambda o, d: render_field_complete(o, d, grids["object"], fns("object", 0),
                                               model.march),
            lambda o, d: render_field_complete(o, d, grids["human"], fns("human", 1), model.march),
            lambda o, d: render_composite_complete(o, d, grids["interaction"], fns("object", 2),
                                                   fns("human", 2), model.march),
        ]
        images = [_render_chunked(fn, *generate_rays(c2ws[v], fovy, size, size))
                  for v, fn in enumerate(renderers)]
        return jnp.stack(images).reshape(3, size, size, 3)

    return jax.jit(render)


def render_circle(render, state, cfg, n_views, desc):
    """uint8 images [n_views, 3, size, size, 3] on the evaluation circle; `render` from
    make_eval_renderer."""
    cams = circle_cameras(n_views, elevation=cfg.camera.eval_elevation,
                          distance=cfg.camera.eval_distance, fovy=cfg.camera.eval_fovy)
    frames = []
    for i in tqdm(range(n_views), desc=desc, leave=False):
        img = render(state.params, state.grids, state.center, cams.c2w[i], cams.fovy[i],
                     cams.light_position[i], state.step)
        frames.append(np.asarray(jnp.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8))
    return np.stack(frames)


def save_validation(render, state, cfg, out_dir):
    """One PNG per step: rows are views, columns object | human | interaction."""
    frames = render_circle(render, state, cfg, cfg.train.val_views, "validate")
    sheet = np.concatenate([np.concatenate(list(f), axis=1) for f in frames], axis=0)
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"it{int(state.step):06d}.png")
    atomic_write(path, lambda p: imageio.imwrite(p, sheet), ".png")
    return path


def save_test(render, state, cfg, out_dir):
    """One mp4 per view (object, human, interaction) of the test circle."""
    frames = render_circle(render, state, cfg, cfg.test.views, "test views")
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for v, name in enumerate(EVAL_VIEWS):
        path = os.path.join(out_dir, f"{name}.mp4")
        atomic_write(path, lambda p: imageio.mimwrite(p, list(frames[:, v]), fps=cfg.test.fps,
                                                      macro_block_size=1), ".mp4")
        paths.append(path)
    return paths


def export_meshes(state, model, cfg, out_dir):
    """Marching-cubes meshes of the object and human fields, coloured by albedo, at the level rule
    `test.mesh_threshold` (nerf.mesh); each field's level is logged to stderr. The release exports
    the human only."""
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for name in FIELDS:
        field_params = state.params[name]["field"]
        density = jax.jit(model.density_fn(state.params[name]))
        albedo = jax.jit(lambda x, p=field_params: model.field.apply(p, x)["albedo"])
        mesh = extract_mesh(density, albedo, cfg.field.radius, resolution=cfg.test.mesh_resolution,
                            threshold=cfg.test.mesh_threshold)
        print(f"[interfusion] mesh {name}: density threshold {mesh.metadata['threshold']:.4g} "
              f"({cfg.test.mesh_threshold}), {len(mesh.faces)} faces", file=sys.stderr)
        path = os.path.join(out_dir, f"{name}.{cfg.test.mesh_format}")
        export_mesh(mesh, path)
        paths.append(path)
    return paths
