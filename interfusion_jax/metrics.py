"""Scene metrics of a trained run: `python -m interfusion_jax.metrics RUN_DIR [--clip DIR]`.

Prints one JSON object and writes it to RUN_DIR/metrics.json. Undefined values (a ratio over an
empty region, the PSNR of identical images) are written as null.

Geometry, on the nodes of linspace(-radius, radius, 128)^3 (the grid of the object centre,
`interfusion_jax.scene.object_center`, and of `nerf.mesh.extract_mesh`); a node stands for a cube
of side 2 radius / 127. A field's opaque region is where 1 - exp(-0.2 density) > 0.5, i.e.
density > ln 2 / 0.2 (the release's rule for the object centre); its boundary is the marching-cubes
surface at that density. A mesh's interior is the winding-number occupancy of `pose.BodyPrior`.
- penetration: the fraction of the object's opaque volume inside the guide body.
- contact_gap: the smallest distance from the guide body's surface to the object's opaque region
  (0 when they touch or overlap; scene units).
- contact_area: the fraction of the guide body's surface (area-uniform samples) within 2 cm of the
  object's opaque region.
- object_volume: the volume of the object's opaque region (scene units^3).
- iou_human_body: IoU of the human field's opaque region and the guide body's interior.
With a reference scene (config `guidance.kind == "reference"` or a `reference.object_mesh`):
- iou_object, iou_human: IoU against the reference object's interior / the guide body's interior
  (the reference scene's human is the guide body, so iou_human equals iou_human_body);
- chamfer_object, chamfer_human: the mean of the two directions' mean nearest-neighbour distances
  between area-uniform samples of the opaque region's surface and of the reference mesh;
- psnr_object, psnr_human, psnr_interaction: the test circle's renders (`--views` of them) vs the
  reference scene rendered from the same cameras with the same shading and a white background.
With `--clip` (CLIP ViT-B/32, transformers layout):
- clip_score: mean cosine similarity of the interaction views' image features to the interaction
  prompt's text feature (InterFusion reports 0.3308 over its 61 prompts);
- clip_r_precision: the fraction of interaction views whose best-matching prompt, among the run's
  interaction prompt and the interaction prompts of the 11 release scenes (configs/, docs/method.md §2.6),
  is the run's own (InterFusion reports 83.6%).
"""
import argparse
import functools
import importlib
import json
import math
import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.ndimage
import scipy.spatial
from tqdm import tqdm

from ifcommon import command_line, save_text
from interfusion_jax.evaluate import eval_circle, render_circle
from interfusion_jax.run_dir import load_run
from interfusion_jax.scene import EVAL_INDICES, EVAL_VIEWS, VIEW_TABLE, scene_views
from nerf import material
from nerf.cameras import generate_rays
from nerf.mesh import box_corners, grid_values, surface_mesh
from body import BodyPrior
from pose import load_clip
from interfusion_jax.mesh_raycast import render_reference
from interfusion_jax.reference_scene import reference_scene

GRID_RESOLUTION = 128
DENSITY_SCALE = 0.2
CONTACT_DISTANCE = 0.02  # 2 cm in scene units (SMPL-X metres)
# Area-uniform samples per surface: about 4 mm apart on a body, well below the 2 cm of contact.
SURFACE_SAMPLES = 200_000
# Fewer for Chamfer, whose unbounded queries from inside a closed surface visit most of the tree
# (minutes at 200 000 on an untrained blob); two samplings of one body are 3 mm apart at 50 000.
CHAMFER_SAMPLES = 50_000
RELEASE_SCENES = (
    "sitting_on_a_chair", "sitting_on_a_sofa", "carrying_a_backpack", "jumping_a_skateboard",
    "playing_the_guitar", "playing_the_saxophone", "pushing_a_shopping_cart", "reading_a_laptop",
    "riding_a_bike", "riding_a_horse", "riding_a_motorcycle",
)


def node_spacing(radius, resolution):
    """Distance between neighbouring nodes of the grid, the side of the cube a node stands for."""
    return 2.0 * radius / (resolution - 1)


def density_grid(density_fn, radius, resolution):
    """density_fn (points [M,3] -> [M]; a compiled function, see nerf.mesh.extract_mesh) at the
    grid's nodes, those of nerf.mesh.extract_mesh over the box -> [R, R, R] float32."""
    return grid_values(density_fn, *box_corners(radius), resolution, desc="metrics: density")


def opaque_level(density_scale=DENSITY_SCALE):
    """The density where 1 - exp(-density_scale * density) crosses 0.5."""
    return math.log(2.0) / density_scale


def surface_points(vertices, faces, count, seed=0):
    """`count` area-uniform points [count, 3] on the triangles vertices[faces] ([V,3], [F,3]).
    Independent draws, so any prefix is itself an area-uniform sample; a fixed seed, so metrics
    repeat exactly."""
    tri = np.asarray(vertices, np.float64)[np.asarray(faces)]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=-1)
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(tri), size=count, p=area / area.sum())
    u, v = rng.random((2, count, 1))
    flip = u + v > 1.0  # fold the far half of the unit square back onto the triangle
    u, v = np.where(flip, 1.0 - u, u), np.where(flip, 1.0 - v, v)
    t = tri[pick]
    return t[:, 0] + u * (t[:, 1] - t[:, 0]) + v * (t[:, 2] - t[:, 0])


class Region(NamedTuple):
    """A field's opaque region on the metric grid: density [R,R,R] at the nodes, opaque [R,R,R]
    (density > level), surface [M,3]: area-uniform samples of its marching-cubes boundary (none
    when no node or every node is opaque)."""

    density: np.ndarray
    opaque: np.ndarray
    surface: np.ndarray
    level: float
    radius: float


def field_region(density_fn, radius, resolution=GRID_RESOLUTION, density_scale=DENSITY_SCALE):
    """density_fn: points [M,3] -> density [M] (compiled: see density_grid) -> its Region."""
    density = density_grid(density_fn, radius, resolution)
    if not np.all(np.isfinite(density)):
        raise ValueError(f"metrics: {np.sum(~np.isfinite(density))} non-finite densities on the "
                         "grid; the field is broken")
    level = opaque_level(density_scale)
    surface = np.zeros((0, 3))
    if density.min() < level < density.max():  # surface_mesh's condition for a surface
        mesh = surface_mesh(density, level, *box_corners(radius))
        surface = surface_points(mesh.vertices, mesh.faces, SURFACE_SAMPLES)
    return Region(density, density > level, surface, level, float(radius))


def mesh_interior(vertices, faces, radius, resolution=GRID_RESOLUTION):
    """Interior of a closed mesh (vertices [V,3], faces [F,3], scene frame) at the grid's nodes:
    bool [R,R,R]. BodyPrior's nodes are the grid's, so its occupancy is read without blending."""
    prior = BodyPrior.build(vertices, faces, bound=radius, resolution=resolution)
    return np.asarray(prior.occupancy) > 0.5


def region_volume(opaque, radius):
    """Volume of the nodes set in opaque [R,R,R], each a cube of the node spacing."""
    return float(opaque.sum()) * node_spacing(radius, opaque.shape[0]) ** 3


def iou(a, b):
    """Intersection over union of two bool grids of one shape; NaN when both are empty."""
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else math.nan


def penetration(object_opaque, body_inside):
    """Fraction of the object's opaque nodes inside the body (bool grids [R,R,R]); NaN for an
    empty object."""
    count = object_opaque.sum()
    return float(np.logical_and(object_opaque, body_inside).sum() / count) if count else math.nan


def region_distance(points, region, bound=math.inf):
    """Distance [N] from points [N,3] to the region: 0 where the trilinearly interpolated density
    exceeds its level (a point inside), else the distance to the nearest boundary sample where
    that is at most `bound`, and inf beyond it or when there is no boundary.

    A bound keeps the KD-tree queries short: a point far from every sample, above all one near the
    centre of a closed boundary, makes an unbounded query visit most of the tree.
    """
    points = np.asarray(points, np.float64)
    coords = (points.T + region.radius) / node_spacing(region.radius, region.density.shape[0])
    inside = scipy.ndimage.map_coordinates(region.density, coords, order=1) > region.level
    dist = np.where(inside, 0.0, math.inf)
    if len(region.surface) and not inside.all():
        dist[~inside], _ = scipy.spatial.cKDTree(region.surface).query(
            points[~inside], workers=-1, distance_upper_bound=bound)
    return dist


def contact_gap(body_distance, object_opaque, body_inside):
    """Smallest distance from the body's surface to the object: body_distance [N] from
    region_distance of the body's surface samples; 0 when the grids object_opaque and body_inside
    [R,R,R] overlap (an object entirely inside the body touches no surface point)."""
    if np.logical_and(object_opaque, body_inside).any():
        return 0.0
    return float(body_distance.min())


def contact_area(body_distance, within=CONTACT_DISTANCE):
    """Fraction of the body's area-uniform surface samples (distances [N]) within `within` of
    the object."""
    return float(np.mean(body_distance <= within))


def chamfer(points_a, points_b):
    """Symmetric Chamfer distance of point sets [A,3], [B,3]: the mean of the two directions' mean
    nearest-neighbour distances (so two concentric spheres give the radius difference); NaN when
    either is empty."""
    if len(points_a) == 0 or len(points_b) == 0:
        return math.nan
    ab, _ = scipy.spatial.cKDTree(points_b).query(points_a, workers=-1)
    ba, _ = scipy.spatial.cKDTree(points_a).query(points_b, workers=-1)
    return float(0.5 * (ab.mean() + ba.mean()))


def psnr(a, b):
    """PSNR in dB of images in [0, 1] of any one shape, over all their pixels; inf when equal."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return 10.0 * math.log10(1.0 / mse) if mse > 0 else math.inf


def clip_metrics(image_features, text_features, own=0):
    """CLIP score and R-precision of views: image_features [V,D], text_features [P,D] (the
    candidate prompts; row `own` is the views' prompt). Cosine similarities of unnormalised
    features."""
    img = image_features / np.linalg.norm(image_features, axis=-1, keepdims=True)
    txt = text_features / np.linalg.norm(text_features, axis=-1, keepdims=True)
    sim = img @ txt.T  # [V, P]
    return dict(clip_score=float(sim[:, own].mean()),
                clip_r_precision=float(np.mean(sim.argmax(-1) == own)))


def clip_prompts(prompt):
    """[prompt] + the release scenes' interaction prompts other than it (the R-precision set)."""
    others = [importlib.import_module(f"configs.{name}").get_config().prompts.interaction
              for name in RELEASE_SCENES]
    return [prompt] + [p for p in dict.fromkeys(others) if p != prompt]


def scene_metrics(object_density, human_density, body, radius, resolution=GRID_RESOLUTION,
                  density_scale=DENSITY_SCALE, reference_object=None):
    """Geometry metrics of one scene (module docstring).

    object_density, human_density: points [M,3] -> density [M] (compiled: see density_grid);
    body: (vertices [V,3], faces [F,3]) of the guide body and reference_object: those of the reference object or None,
    closed meshes in the scene frame.
    """
    obj = field_region(object_density, radius, resolution, density_scale)
    human = field_region(human_density, radius, resolution, density_scale)
    body_inside = mesh_interior(*body, radius, resolution)
    body_surface = surface_points(*body, SURFACE_SAMPLES)
    # Every distance up to the gap or the contact distance is needed; a subset of the surface
    # bounds the gap from above.
    bound = max(CONTACT_DISTANCE, region_distance(body_surface[::64], obj).min())
    body_distance = region_distance(body_surface, obj, bound)
    out = dict(
        penetration=penetration(obj.opaque, body_inside),
        contact_gap=contact_gap(body_distance, obj.opaque, body_inside),
        contact_area=contact_area(body_distance),
        object_volume=region_volume(obj.opaque, radius),
        iou_human_body=iou(human.opaque, body_inside),
    )
    if reference_object is not None:
        out.update(
            iou_object=iou(obj.opaque, mesh_interior(*reference_object, radius, resolution)),
            iou_human=out["iou_human_body"],
            chamfer_object=chamfer(obj.surface[:CHAMFER_SAMPLES],
                                   surface_points(*reference_object, CHAMFER_SAMPLES)),
            chamfer_human=chamfer(human.surface[:CHAMFER_SAMPLES],
                                  body_surface[:CHAMFER_SAMPLES]),
        )
    return out


def has_reference(cfg):
    """Whether the run's config names a reference scene."""
    reference = cfg.get("reference")
    return cfg.guidance.get("kind") == "reference" or bool(reference and reference.object_mesh)


@functools.partial(jax.jit, static_argnames=("v", "size"))
def _reference_rgb(scene, camera, center, head, step, ambient_only_steps, v, size):
    """View v (a VIEW_TABLE index) of the reference scene from one evaluation camera (c2w [4,4],
    fovy, light [3]), shaded as the evaluation renders shade it, on a white background -> rgb
    [size * size, 3]."""
    c2w, fovy, light = camera
    c2ws, lights = scene_views(c2w, light, center, head, (1.0,) * len(VIEW_TABLE))
    shade_fn = functools.partial(material.shade,
                                 material.eval_shading(lights[v], step, ambient_only_steps))
    origins, directions = generate_rays(c2ws[v], fovy, size, size)
    return render_reference(scene, origins, directions,
                            {part: shade_fn for part in VIEW_TABLE[v].fields},
                            jnp.ones_like(origins))["rgb"]


def reference_psnr(run, scene, frames):
    """PSNR per view kind of the test renders frames (uint8 [V, 3, S, S, 3], render_circle of the
    same `len(frames)` views) against the reference scene (a interfusion_jax.reference_scene.ReferenceScene)
    from the same cameras, with the same shading."""
    cfg, state = run.cfg, run.state
    n, size = frames.shape[0], frames.shape[2]
    cams = eval_circle(cfg, n)
    refs = np.zeros(frames.shape, np.float32)
    for i in tqdm(range(n), desc="metrics: reference views", leave=False):
        camera = (cams.c2w[i], cams.fovy[i], cams.light_position[i])
        for e, v in enumerate(EVAL_INDICES):
            rgb = _reference_rgb(scene, camera, state.center, run.model.head, state.step,
                                 cfg.material.ambient_only_steps, v, size)
            refs[i, e] = np.asarray(rgb).reshape(size, size, 3)
    return {f"psnr_{name}": psnr(frames[:, v] / 255.0, np.clip(refs[:, v], 0.0, 1.0))
            for v, name in enumerate(EVAL_VIEWS)}


def _json_value(v):
    return v if not isinstance(v, float) or math.isfinite(v) else None


def evaluate_run(run_dir, clip_dir=None, views=8, resolution=None,
                 grid_resolution=GRID_RESOLUTION):
    """All metrics of a run (module docstring) as a dict, also written to RUN_DIR/metrics.json.

    views, resolution: the test-circle renders for PSNR and CLIP (resolution None: the config's
    test resolution); grid_resolution: the geometry grid.
    """
    run = load_run(run_dir)
    clip = load_clip(clip_dir) if clip_dir else None  # fails before the long work
    metrics = run_metrics(run, clip, views, resolution, grid_resolution)
    save_text(os.path.join(run_dir, "metrics.json"), json.dumps(metrics, indent=2) + "\n")
    return metrics


def run_metrics(run, clip=None, views=8, resolution=None, grid_resolution=GRID_RESOLUTION):
    """The metrics of a Run in memory (see evaluate_run); clip: a loaded pose.Clip or None."""
    cfg, state, model = run.cfg, run.state, run.model
    reference, ref_object = None, None
    if has_reference(cfg):
        reference = reference_scene(run.guide, cfg.reference.object_mesh,
                                    body_colors=run.body.vertex_colors)
        ref_object = (reference.vertices, reference.faces[reference.face_part == 0])
    metrics = dict(step=int(state.step), grid_resolution=grid_resolution)
    metrics.update(scene_metrics(
        model.compiled_density(state.params["object"]),
        model.compiled_density(state.params["human"]),
        (run.guide.vertices, run.guide.faces), cfg.field.radius, grid_resolution,
        cfg.train.object_center_density_scale, ref_object))
    if clip is not None or reference is not None:
        size = resolution or cfg.test.resolution
        frames = render_circle(run.render, state, cfg, views, size, "metrics: test views")
        metrics.update(views=views, resolution=size)
        if reference is not None:
            metrics.update(reference_psnr(run, reference, frames))
        if clip is not None:
            prompts = clip_prompts(cfg.prompts.interaction)
            images = frames[:, EVAL_VIEWS.index("interaction")] / 255.0
            metrics.update(clip_metrics(np.asarray(clip.image_features(images)),
                                        np.asarray(clip.text_features(prompts))),
                           clip_prompts=len(prompts))
    return {k: _json_value(v) for k, v in metrics.items()}


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m interfusion_jax.metrics", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", help="output folder of interfusion_jax.train (config.py, ckpt/)")
    p.add_argument("--clip", default=None, help="CLIP ViT-B/32 folder (transformers layout)")
    p.add_argument("--views", type=int, default=8, help="test-circle views for PSNR and CLIP")
    p.add_argument("--resolution", type=int, default=None,
                   help="render size in pixels; default: the config's test.resolution")
    p.add_argument("--grid", type=int, default=GRID_RESOLUTION,
                   help="nodes per axis of the geometry grid")
    return p.parse_args(argv)


@command_line
def main(argv):
    a = parse_args(argv)
    print(json.dumps(evaluate_run(a.run_dir, a.clip, a.views, a.resolution, a.grid)))


if __name__ == "__main__":
    main()
