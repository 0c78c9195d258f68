"""Meshes from a density field: marching cubes on a grid over the box, albedo vertex colours.

Threshold rule (threshold=None): threestudio's `isosurface_threshold: "auto"` as the release runs
it (no coarse-to-fine pass): the level is mean + 5 · std of the density over the grid vertices.
This picks out the dense object over a thin low-density haze; it suits objects filling a small part
of the box (up to a few percent of its volume). For a large object that level can exceed the
largest density; then the level is ln 2 / step, where one grid step of the mesh grid is half opaque.
"""
import os
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import skimage.measure
import tqdm
import trimesh

MESH_FORMATS = (".obj", ".ply", ".glb")


def _evaluate(fn, points, chunk, desc):
    """fn(points [chunk,3]) -> [chunk,...] over all points, jitted once on fixed-size chunks."""
    fn = jax.jit(fn)
    n = points.shape[0]
    padded = np.concatenate([points, np.zeros(((-n) % chunk, 3), points.dtype)])
    outs = [np.asarray(fn(jnp.asarray(padded[i:i + chunk])))
            for i in tqdm.trange(0, padded.shape[0], chunk, desc=desc, leave=False)]
    return np.concatenate(outs)[:n]


def auto_threshold(density, step):
    """The level used when `extract_mesh` gets threshold=None (module docstring); `step` is the
    grid spacing."""
    level = float(np.mean(density) + 5.0 * np.std(density))
    return level if level < float(np.max(density)) else float(np.log(2.0) / step)


def extract_mesh(density_fn, albedo_fn, bound, resolution=128, threshold=None, chunk=2**18):
    """Marching cubes of `density_fn` on resolution³ vertices spanning [−bound, bound]³.

    density_fn: points [M,3] -> density [M]; albedo_fn: points [M,3] -> rgb [M,3] in [0,1] (or None
    for no colours). Both are jittable and called on chunks of `chunk` points. threshold: the
    density level of the surface, or None for the rule in the module docstring.
    Returns a trimesh.Trimesh in scene coordinates with outward faces and RGBA vertex colours.
    """
    axis = np.linspace(-bound, bound, resolution, dtype=np.float32)
    grid = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    density = _evaluate(density_fn, grid, chunk, "mesh density").reshape((resolution,) * 3)
    if not np.all(np.isfinite(density)):
        raise ValueError(f"nerf.mesh: density grid has {np.sum(~np.isfinite(density))} non-finite "
                         "values; cannot extract a mesh")
    step = 2.0 * bound / (resolution - 1)
    level = auto_threshold(density, step) if threshold is None else float(threshold)
    lo, hi = float(density.min()), float(density.max())
    if not lo < level < hi:
        rule = "automatic threshold" if threshold is None else "threshold"
        state = "empty" if level >= hi else "full"
        raise ValueError(f"nerf.mesh: the density grid is {state} at the {rule} {level:.4g}: "
                         f"densities span [{lo:.4g}, {hi:.4g}]; pass a threshold inside that range")
    verts, faces, _, _ = skimage.measure.marching_cubes(density, level=level, spacing=(step,) * 3)
    verts = (verts - bound).astype(np.float32)
    colors = None
    if albedo_fn is not None:
        rgb = _evaluate(albedo_fn, verts, chunk, "mesh colours")
        colors = np.concatenate([np.clip(np.round(rgb * 255), 0, 255),
                                 np.full((len(verts), 1), 255)], -1).astype(np.uint8)
    # skimage orders faces so that normals point down the gradient (out of the dense object);
    # trimesh takes counter-clockwise faces as outward, which is the reverse winding.
    return trimesh.Trimesh(vertices=verts, faces=faces[:, ::-1], vertex_colors=colors, process=False)


def export_mesh(mesh, path):
    """Write `mesh` to `path` (.obj, .ply or .glb by suffix) atomically; returns the path."""
    path = os.fspath(path)
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in MESH_FORMATS:
        raise ValueError(f"nerf.mesh: cannot write {path!r}: suffix {suffix!r} is not one of "
                         f"{', '.join(MESH_FORMATS)}")
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=suffix, dir=folder, prefix=".tmp_mesh_")
    try:
        with os.fdopen(fd, "wb") as f:
            mesh.export(f, file_type=suffix[1:])
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path
