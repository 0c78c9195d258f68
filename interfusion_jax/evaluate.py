"""Validation images, test videos and meshes of a scene (docs/method.md §2.6).

Evaluation cameras sit on a circle (elevation 10 degrees, distance 2, fov 70 in the release); the
object, human and interaction views use the training offsets with scale 1. Rays are rendered in
chunks under `lax.map`, with the complete renders of nerf.render: no ray of an evaluation image is
cut short. The two one-field views share one copy of the render's code (scene.map_single_views).

The test writes, as the release does, a video per view and PNG frames per view and camera, plus a
panel video of the interaction view's rgb | normal | opacity; the export writes the object and
human meshes, the guide body, and scene.glb with all three as separate nodes.
"""
import concurrent.futures
import contextlib
import dataclasses
import os
import sys
import threading
import warnings

import imageio.v2 as imageio
import jax
import jax.numpy as jnp
import numpy as np
import trimesh
from tqdm import tqdm

from interfusion_jax.scene import (EVAL_INDICES, EVAL_VIEWS, FIELDS, VIEW_TABLE, map_single_views,
                                   scene_views)
from nerf.cameras import circle_cameras, generate_rays
from nerf.material import eval_shading
from nerf.render import render_composite_complete, render_field_complete
from nerf.mesh import export_mesh, extract_mesh, mesh_file_name
from ifcommon import atomic_write, save_png

# The evaluation sampler's buffers per ray of a chunk: samples kept and candidates evaluated in
# one pass (a ray that needs more continues in the next pass; nothing is cut). The budgets are
# shared by the rays that need them, and most rays of a test image miss the scene, so small
# ones fit: 1 and 4 were the fastest on an H100 (scripts/bench_eval_render.py).
EVAL_SAMPLES_PER_RAY = 1
EVAL_CANDIDATES_PER_RAY = 4


# imageio-ffmpeg starts ffmpeg with fork+exec, which JAX's fork warning does not tell apart from
# a bare fork; the child runs no JAX code.
warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)

# Per-pixel outputs of an evaluation render, as nerf.render names them.
IMAGE_OUTPUTS = ("comp_rgb", "comp_normal", "opacity")


def _render_chunked(render_fn, origins, directions, chunk):
    """render_fn over rays [N,3] in chunks of `chunk` rays -> rgb [N,3], normal [N,3]
    (nerf.render's picture of normals), opacity [N]."""
    n = origins.shape[0]
    pad = (-n) % chunk
    o = jnp.pad(origins, ((0, pad), (0, 0))).reshape(-1, chunk, 3)
    d = jnp.pad(directions, ((0, pad), (0, 0)), constant_values=1.0).reshape(-1, chunk, 3)
    out = jax.lax.map(lambda od: {k: render_fn(*od)[k] for k in IMAGE_OUTPUTS}, (o, d))
    rgb, normal, opacity = (out[k].reshape(-1, *out[k].shape[2:])[:n] for k in IMAGE_OUTPUTS)
    return rgb, normal, opacity


def eval_chunk(size, ray_chunk):
    """Rays per chunk of a size x size image: `ray_chunk`, or the whole image when smaller."""
    return min(ray_chunk, 1 << (size * size - 1).bit_length())


def make_eval_renderer(model, cfg, samples_per_ray=EVAL_SAMPLES_PER_RAY,
                       candidates_per_ray=EVAL_CANDIDATES_PER_RAY):
    """A jitted (params, grids, center, c2w, fovy, light, step, size) -> dict of the object, human
    and interaction views of one evaluation camera: rgb [3,S,S,3], normal [3,S,S,3] (the
    release's picture of normals, (n + 1) / 2 times the opacity) and opacity [3,S,S], S = size
    (static: one compilation per image size). Rays go in chunks of up to `test.ray_chunk`, each
    with buffers of `samples_per_ray` samples and `candidates_per_ray` pruning candidates per ray
    (shared fairly among the rays that need them); the shading follows
    `material.ambient_only_steps`."""
    ray_chunk, ambient_only_steps = cfg.test.ray_chunk, cfg.material.ambient_only_steps

    def render(params, grids, center, c2w, fovy, light, step, size):
        chunk = eval_chunk(size, ray_chunk)
        march = dataclasses.replace(model.march, max_samples=chunk * samples_per_ray,
                                    max_candidates=chunk * candidates_per_ray)
        c2ws, lights = scene_views(c2w, light, center, model.head, (1.0,) * len(VIEW_TABLE))

        def view_images(render_view, view_c2w):
            return _render_chunked(render_view, *generate_rays(view_c2w, fovy, size, size), chunk)

        def single(xs):
            field_params, grid, view_c2w, view_light = xs
            fns = model.field_fns(field_params, eval_shading(view_light, step, ambient_only_steps))
            return view_images(lambda o, d: render_field_complete(o, d, grid, fns, march),
                               view_c2w)

        images = map_single_views(single, EVAL_INDICES, lambda v: (
            params[VIEW_TABLE[v].fields[0]], grids[VIEW_TABLE[v].grid], c2ws[v], lights[v]))
        for v in EVAL_INDICES:
            if v not in images:  # a composite
                shading = eval_shading(lights[v], step, ambient_only_steps)
                obj, human = (model.field_fns(params[f], shading) for f in VIEW_TABLE[v].fields)
                grid = grids[VIEW_TABLE[v].grid]
                images[v] = view_images(
                    lambda o, d: render_composite_complete(o, d, grid, obj, human, march), c2ws[v])
        rgb, normal, opacity = zip(*(images[v] for v in EVAL_INDICES))
        rgb, normal, opacity = jnp.stack(rgb), jnp.stack(normal), jnp.stack(opacity)
        shape = (3, size, size)
        return dict(rgb=rgb.reshape(*shape, 3), normal=normal.reshape(*shape, 3),
                    opacity=opacity.reshape(shape))

    return EvalRenderer(jax.jit(render, static_argnames="size"))


class EvalRenderer:
    """make_eval_renderer's render, called as (params, grids, center, c2w, fovy, light, step,
    size), with compilations started ahead of its first calls (`compile_ahead`): a call waits
    for its size's compilation rather than starting another."""

    def __init__(self, jitted):
        self._jitted, self._compiled, self._threads = jitted, {}, []

    def __call__(self, params, grids, center, c2w, fovy, light, step, size):
        if size in self._compiled:
            self._compiled[size].wait()
        return self._jitted(params, grids, center, c2w, fovy, light, step, size)

    def compile_ahead(self, state, cfg, sizes):
        """Compile for size x size images, for each of `sizes` in turn, in a thread, so that the
        compilations overlap training instead of holding up the validation sheets and the test.
        The thread renders one camera of a zeroed copy of `state` (same shapes, dtypes and
        devices as the states rendered later; its empty occupancy grids make the render do
        nothing), which leaves the compiled renderer in the jitted function's cache. Call
        `wait` before the process exits, which aborts during an XLA compilation."""
        used = (state.params, state.grids, state.center, state.step)
        # Placed as the originals (committed to their devices): the cache tells the two apart.
        params, grids, center, step = jax.jit(
            lambda s: jax.tree.map(jnp.zeros_like, s),
            out_shardings=jax.tree.map(lambda a: a.sharding, used))(used)
        cams = eval_circle(cfg, 1)
        sizes = [size for size in dict.fromkeys(sizes) if size not in self._compiled]
        compiled = {size: threading.Event() for size in sizes}
        self._compiled.update(compiled)

        def compile_all():
            for size in sizes:
                try:
                    jax.block_until_ready(self._jitted(
                        params, grids, center, cams.c2w[0], cams.fovy[0], cams.light_position[0],
                        step, size))
                except Exception:  # the waiting call compiles again and reports the error
                    pass
                finally:
                    compiled[size].set()

        self._threads.append(threading.Thread(target=compile_all,
                                              name="compile evaluation renders"))
        self._threads[-1].start()

    def wait(self):
        """Wait for the compilations started ahead."""
        for thread in self._threads:
            thread.join()


def _uint8(scaled):
    """[0, 255.5) device values -> uint8 NumPy."""
    return np.asarray(scaled.astype(jnp.uint8))


def eval_circle(cfg, n_views):
    """The config's evaluation circle of n_views cameras (nerf.cameras.Camera)."""
    return circle_cameras(n_views, elevation=cfg.camera.eval_elevation,
                          distance=cfg.camera.eval_distance, fovy=cfg.camera.eval_fovy)


def circle_frames(render, state, cfg, n_views, size, desc):
    """Per camera of the evaluation circle, its uint8 images: rgb, normal [3,S,S,3] and opacity
    [3,S,S,3] (grey) of the object, human and interaction views, S = size; `render` from
    make_eval_renderer."""
    cams = eval_circle(cfg, n_views)

    def dispatch(i):  # returns at once: the device renders while the host handles the last one
        out = render(state.params, state.grids, state.center, cams.c2w[i], cams.fovy[i],
                     cams.light_position[i], state.step, size)
        return {k: jnp.clip(v, 0.0, 1.0) * 255.0 + 0.5 for k, v in out.items()}

    pending = dispatch(0)
    for i in tqdm(range(n_views), desc=desc, leave=False):
        out, pending = pending, dispatch(i + 1) if i + 1 < n_views else None
        yield dict(rgb=_uint8(out["rgb"]), normal=_uint8(out["normal"]),
                   opacity=_uint8(jnp.repeat(out["opacity"][..., None], 3, axis=-1)))


def render_circle(render, state, cfg, n_views, size, desc):
    """uint8 rgb images [n_views, 3, size, size, 3] on the evaluation circle."""
    return np.stack([f["rgb"] for f in circle_frames(render, state, cfg, n_views, size, desc)])


def validation_size(cfg):
    """A validation image's side: twice the training render's width."""
    return 2 * cfg.render.width


def validation_sheet(render, state, cfg):
    """uint8 [V*S, 3*S, 3]: rows are views, columns object | human | interaction; S is
    validation_size."""
    frames = render_circle(render, state, cfg, cfg.train.val_views, validation_size(cfg),
                           "validate")
    return np.concatenate([np.concatenate(list(f), axis=1) for f in frames], axis=0)


def save_validation(sheet, step, out_dir):
    """The sheet as `out_dir/it<step>.png`."""
    path = os.path.join(out_dir, f"it{int(step):06d}.png")
    save_png(path, sheet)
    return path


@contextlib.contextmanager
def _videos(paths, fps):
    """mp4 writers for `paths`, writing under temporary names that replace the final ones only
    when all frames are in."""
    tmps = [os.path.join(os.path.dirname(p), f".{os.path.basename(p)}.{os.getpid()}.tmp.mp4")
            for p in paths]
    writers = [imageio.get_writer(t, fps=fps, macro_block_size=1) for t in tmps]
    try:
        yield writers
        for w in writers:
            w.close()
        for t, p in zip(tmps, paths):
            os.replace(t, p)
    finally:
        for w, t in zip(writers, tmps):
            w.close()
            if os.path.exists(t):
                os.remove(t)


def save_test(render, state, cfg, out_dir):
    """The test circle: test/<view>.mp4 per view (object, human, interaction), the PNG frames
    test/frames/<view>/<camera>.png, and test/panel.mp4 (interaction rgb | normal | opacity).
    Returns the video paths."""
    paths = [os.path.join(out_dir, f"{name}.mp4") for name in EVAL_VIEWS + ("panel",)]
    os.makedirs(out_dir, exist_ok=True)
    inter = EVAL_VIEWS.index("interaction")
    # PNG encoding and the ffmpeg pipes release the GIL: frames are written while the device
    # renders the next camera.
    with _videos(paths, cfg.test.fps) as writers, \
            concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        pngs = []
        for i, f in enumerate(circle_frames(render, state, cfg, cfg.test.views,
                                            cfg.test.resolution, "test views")):
            for v, name in enumerate(EVAL_VIEWS):
                writers[v].append_data(f["rgb"][v])
                pngs.append(pool.submit(save_png, os.path.join(out_dir, "frames", name,
                                                               f"{i:04d}.png"), f["rgb"][v]))
            writers[-1].append_data(np.concatenate(
                [f["rgb"][inter], f["normal"][inter], f["opacity"][inter]], axis=1))
        for png in pngs:
            png.result()
    return paths


def _field_mesh(state, model, cfg, name):
    params = state.params[name]
    mesh = extract_mesh(model.compiled_density(params), model.compiled_albedo(params),
                        cfg.field.radius, resolution=cfg.test.mesh_resolution,
                        threshold=cfg.test.mesh_threshold)
    print(f"[interfusion] mesh {name}: density threshold {mesh.metadata['threshold']:.4g} "
          f"({cfg.test.mesh_threshold}), {len(mesh.faces)} faces", file=sys.stderr)
    return mesh


def guide_mesh(guide, vertex_colors=None):
    """The guide body (pose.GuideBody, scene frame) as a trimesh with [0, 1] vertex colours."""
    mesh = trimesh.Trimesh(np.asarray(guide.vertices), np.asarray(guide.faces), process=False)
    if vertex_colors is not None:
        rgb = np.clip(np.round(np.asarray(vertex_colors) * 255), 0, 255)
        mesh.visual.vertex_colors = np.concatenate(
            [rgb, np.full((len(rgb), 1), 255)], -1).astype(np.uint8)
    return mesh


def export_meshes(state, model, cfg, guide, body_colors, out_dir):
    """Marching-cubes meshes of the object and human fields, coloured by albedo, at the level rule
    `test.mesh_threshold` (nerf.mesh; each field's level is logged), and the guide body, each in
    `test.mesh_format`; and scene.glb with the three as nodes object, human and body_guide.
    Returns the paths. The release exports the human only."""
    meshes = {name: _field_mesh(state, model, cfg, name) for name in FIELDS}
    meshes["body_guide"] = guide_mesh(guide, body_colors)
    paths = [export_mesh(mesh, os.path.join(out_dir, mesh_file_name(name, cfg.test.mesh_format)))
             for name, mesh in meshes.items()]
    scene = trimesh.Scene()
    for name, mesh in meshes.items():
        scene.add_geometry(mesh, node_name=name, geom_name=name)
    scene_path = os.path.join(out_dir, "scene.glb")
    atomic_write(scene_path, lambda p: scene.export(p, file_type="glb"), ".glb")
    return paths + [scene_path]
