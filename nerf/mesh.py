"""Meshes from a density field: marching cubes on a grid, albedo vertex colours.

Threshold rules (`extract_mesh`'s threshold):
- "release": the release's (threestudio `isosurface` with `isosurface_threshold: auto`, coarse to
  fine, outliers removed; docs/method.md §2.6). The level is the mean of the grid's densities above 1e-5; a
  first mesh on the whole box gives a tight box, grown by 10% of its size on each side (within the
  box), and a second pass on a grid of the same resolution there, with the level taken anew from
  that grid, gives the mesh. Each pass drops the connected components with fewer faces than 1% of
  the largest one's. The release's marching tetrahedra are marching cubes here.
- "auto": this project's rule, one pass over the box: mean + 5 · std of the densities. This picks
  out the dense object over a thin low-density haze; it suits objects filling a small part of the
  box (up to a few percent of its volume). For a large object that level can exceed the largest
  density; then the level is ln 2 / step, where one grid step of the mesh grid is half opaque.
- a number: that density level, one pass over the box.
"""
import os

import jax.numpy as jnp
import numpy as np
import skimage.measure
import tqdm
import trimesh

from ifcommon import atomic_write

MESH_FORMATS = (".obj", ".ply", ".glb")
THRESHOLD_RULES = ("release", "auto")
RELEASE_EPS = 1e-5  # threestudio's floor of the densities its "auto" level averages
RELEASE_BOX_MARGIN = 0.1
RELEASE_MIN_COMPONENT = 0.01


def _evaluate(fn, points, chunk, desc):
    """fn(points [chunk,3]) -> [chunk,...] over all points, on fixed-size chunks."""
    n = points.shape[0]
    padded = np.concatenate([points, np.zeros(((-n) % chunk, 3), points.dtype)])
    outs = [np.asarray(fn(jnp.asarray(padded[i:i + chunk])))
            for i in tqdm.trange(0, padded.shape[0], chunk, desc=desc, leave=False)]
    return np.concatenate(outs)[:n]


def auto_threshold(density, step):
    """The "auto" level (module docstring); `step` is the grid spacing."""
    level = float(np.mean(density) + 5.0 * np.std(density))
    return level if level < float(np.max(density)) else float(np.log(2.0) / step)


def release_threshold(density):
    """The "release" level: the mean of the densities above 1e-5 (the max when none is)."""
    above = density[density > RELEASE_EPS]
    return float(above.mean()) if above.size else float(density.max())


def parse_threshold(threshold):
    """"release", "auto", or a number (also as text, e.g. from a config) -> that rule or a float."""
    if isinstance(threshold, str) and threshold in THRESHOLD_RULES:
        return threshold
    try:
        return float(threshold)
    except (TypeError, ValueError):
        raise ValueError(f"nerf.mesh: threshold {threshold!r} is neither one of "
                         f"{', '.join(THRESHOLD_RULES)} nor a number") from None


def remove_small_components(mesh, fraction=RELEASE_MIN_COMPONENT):
    """`mesh` without its connected components of fewer faces than `fraction` of the largest's."""
    parts = mesh.split(only_watertight=False)
    if len(parts) < 2:
        return mesh
    keep = int(max(len(p.faces) for p in parts) * fraction)
    return trimesh.util.concatenate([p for p in parts if len(p.faces) >= keep])


def grid_values(fn, lo, hi, resolution, chunk=2**18, desc="mesh density"):
    """fn (points [M,3] -> [M], called as it is on chunks of `chunk` points) on the resolution³
    nodes spanning the box [lo, hi] (lo, hi [3]; float32 nodes, x-major) -> [R,R,R]."""
    axes = [np.linspace(a, b, resolution, dtype=np.float32) for a, b in zip(lo, hi)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    return _evaluate(fn, grid, chunk, desc).reshape((resolution,) * 3)


def _density_grid(density_fn, lo, hi, resolution, chunk):
    """Densities [R,R,R] on resolution³ vertices spanning the box [lo, hi] (lo, hi [3])."""
    density = grid_values(density_fn, lo, hi, resolution, chunk)
    if not np.all(np.isfinite(density)):
        raise ValueError(f"nerf.mesh: density grid has {np.sum(~np.isfinite(density))} non-finite "
                         "values; cannot extract a mesh")
    return density


def surface_mesh(density, level, lo, hi, rule="threshold"):
    """Marching cubes of a density grid [R,R,R] whose nodes span the box [lo, hi] (lo, hi [3]) at
    `level` -> trimesh, outward faces; ValueError (naming `rule`, the level's origin) when the grid
    has no surface at that level."""
    dmin, dmax = float(density.min()), float(density.max())
    if not dmin < level < dmax:
        state = "empty" if level >= dmax else "full"
        raise ValueError(f"nerf.mesh: the density grid is {state} at the {rule} {level:.4g}: "
                         f"densities span [{dmin:.4g}, {dmax:.4g}]; pass a threshold inside that "
                         "range")
    spacing = (np.asarray(hi, np.float64) - lo) / (density.shape[0] - 1)
    verts, faces, _, _ = skimage.measure.marching_cubes(density, level=level,
                                                        spacing=tuple(spacing))
    # skimage orders faces so that normals point down the gradient (out of the dense object);
    # trimesh takes counter-clockwise faces as outward, which is the reverse winding.
    return trimesh.Trimesh(vertices=(verts + lo).astype(np.float32), faces=faces[:, ::-1],
                           process=False)


def _release_pass(density_fn, lo, hi, resolution, chunk):
    density = _density_grid(density_fn, lo, hi, resolution, chunk)
    level = release_threshold(density)
    mesh = surface_mesh(density, level, lo, hi, "release threshold")
    return remove_small_components(mesh), level


def box_corners(bound):
    """The box [-bound, bound]^3 as its corners (lo [3], hi [3]), float64."""
    return np.full(3, -bound, np.float64), np.full(3, bound, np.float64)


def extract_mesh(density_fn, albedo_fn, bound, resolution=128, threshold="release", chunk=2**18):
    """A surface of `density_fn` in the box [−bound, bound]³ by marching cubes on resolution³
    vertices.

    density_fn: points [M,3] -> density [M]; albedo_fn: points [M,3] -> rgb [M,3] in [0,1] (or None
    for no colours). Both are called on chunks of `chunk` points, as they are: pass compiled
    functions (a field's: nerf.field.field_density / field_albedo with its parameters bound).
    threshold: "release", "auto" or a density level (module docstring).
    Returns a trimesh.Trimesh in scene coordinates with outward faces and RGBA vertex colours; its
    `metadata["threshold"]` is the level used (the second pass's, for "release").
    """
    threshold = parse_threshold(threshold)
    box_lo, box_hi = box_corners(bound)
    if threshold == "release":
        coarse, _ = _release_pass(density_fn, box_lo, box_hi, resolution, chunk)
        vmin, vmax = coarse.vertices.min(0), coarse.vertices.max(0)
        margin = RELEASE_BOX_MARGIN * (vmax - vmin)
        lo, hi = np.maximum(vmin - margin, box_lo), np.minimum(vmax + margin, box_hi)
        mesh, level = _release_pass(density_fn, lo, hi, resolution, chunk)
    else:
        density = _density_grid(density_fn, box_lo, box_hi, resolution, chunk)
        rule = "automatic threshold" if threshold == "auto" else "threshold"
        level = (auto_threshold(density, 2.0 * bound / (resolution - 1)) if threshold == "auto"
                 else threshold)
        mesh = surface_mesh(density, level, box_lo, box_hi, rule)
    if albedo_fn is not None:
        rgb = _evaluate(albedo_fn, np.asarray(mesh.vertices, np.float32), chunk, "mesh colours")
        alpha = np.full((len(rgb), 1), 255)
        mesh.visual.vertex_colors = np.concatenate(
            [np.clip(np.round(rgb * 255), 0, 255), alpha], -1).astype(np.uint8)
    mesh.metadata["threshold"] = level
    return mesh


def mesh_file_name(name, mesh_format):
    """`name.mesh_format` for a format of MESH_FORMATS ("glb", "obj" or "ply"); ValueError else."""
    if f".{mesh_format}" not in MESH_FORMATS:
        raise ValueError(f"mesh format {mesh_format!r} is not one of "
                         f"{', '.join(f[1:] for f in MESH_FORMATS)}")
    return f"{name}.{mesh_format}"


def export_mesh(mesh, path):
    """Write `mesh` to `path` (.obj, .ply or .glb by suffix) atomically; returns the path."""
    path = os.fspath(path)
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in MESH_FORMATS:
        raise ValueError(f"nerf.mesh: cannot write {path!r}: suffix {suffix!r} is not one of "
                         f"{', '.join(MESH_FORMATS)}")
    atomic_write(path, lambda tmp: mesh.export(tmp, file_type=suffix[1:]), suffix)
    return path
