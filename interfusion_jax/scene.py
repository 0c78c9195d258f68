"""The four views of the interaction stage, one table that training, evaluation, guidance and
metrics read; the guide body of a run; the object centre.

From one sampled camera (position p, rotation R) the release renders four views that share R
(docs/method.md §2.4): object at 0.7 p + c, human at 0.7 p, interaction at 0.8 p + c/2, head at
0.2 p + head, where c is the object centre; lights move by the same offsets. At evaluation the
scales are 1. Each view has its prompt (prompts.<view>), shows one field or both (both: the
composite render, object first) and marches one occupancy grid.
"""
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from nerf.render import render_composite, render_field
from body import guide_body, load_body, load_pose


class View(NamedTuple):
    """One row of the view table."""

    name: str  # also its prompt's key and its camera scale's key (camera.<name>_scale)
    fields: tuple  # the fields it shows, and the parts of a reference scene it shows
    grid: str  # the occupancy grid it marches
    offset: tuple  # (a, b): its camera and light move by a * object centre + b * head
    evaluated: bool  # shown in validation sheets, test videos and metrics


VIEW_TABLE = (
    View("object", ("object",), "object", (1.0, 0.0), True),
    View("human", ("human",), "human", (0.0, 0.0), True),
    View("interaction", ("object", "human"), "interaction", (0.5, 0.0), True),
    View("head", ("human",), "human", (0.0, 1.0), False),
)
VIEWS = tuple(v.name for v in VIEW_TABLE)
EVAL_INDICES = tuple(v for v, view in enumerate(VIEW_TABLE) if view.evaluated)
EVAL_VIEWS = tuple(VIEW_TABLE[v].name for v in EVAL_INDICES)
VIEW_PARTS = tuple(v.fields for v in VIEW_TABLE)
FIELDS = ("object", "human")
GRIDS = FIELDS + ("interaction",)
# The material draws of a training step, one per (view, field) shown: every material call of the
# release draws its own shading. First each view's first field, then the composite's second.
SHADING_DRAWS = tuple((v, view.fields[0]) for v, view in enumerate(VIEW_TABLE)) + tuple(
    (v, field) for v, view in enumerate(VIEW_TABLE) for field in view.fields[1:])


class Views(NamedTuple):
    """What the training step tells its guidance about the four renders, in VIEWS order.

    c2w [4,4,4]; fovy [] radians; elevation, azimuth [] degrees of the sampled camera;
    background [4,N,3] the background each render used (N = H*W rays); object_shading,
    human_shading: nerf Shading pytrees with a leading axis of 4, the shading each field's
    material drew in that view (entries of views without that field are unused).
    """

    c2w: jax.Array
    fovy: jax.Array
    elevation: jax.Array
    azimuth: jax.Array
    background: jax.Array
    object_shading: Any
    human_shading: Any


def view_shading(views, part, v):
    """The Shading that field `part` ("object" or "human") drew in view v."""
    stacked = views.object_shading if part == "object" else views.human_shading
    return jax.tree_util.tree_map(lambda a: a[v], stacked)


def stacked_shadings(draws):
    """draws {(view index, field): Shading} -> (object_shading, human_shading) stacked over the
    four views; a view without the field repeats that field's first draw (unused)."""
    def stack(field):
        first = next(s for (_, f), s in draws.items() if f == field)
        per_view = [draws.get((v, field), first) for v in range(len(VIEW_TABLE))]
        return jax.tree_util.tree_map(lambda *a: jnp.stack(a), *per_view)

    return stack("object"), stack("human")


def map_single_views(fn, views, inputs):
    """{v: fn(inputs(v))} for the views among `views` (VIEW_TABLE indices) that show one field,
    as one lax.map over their stacked inputs: a compiled program then holds one copy of fn's
    code for all of them instead of one each (renders are most of a render program's compile
    time)."""
    singles = [v for v in views if len(VIEW_TABLE[v].fields) == 1]
    out = jax.lax.map(fn, jax.tree_util.tree_map(lambda *a: jnp.stack(a), *map(inputs, singles)))
    return {v: jax.tree_util.tree_map(lambda a, i=i: a[i], out) for i, v in enumerate(singles)}


def render_training_views(keys, rays, grids, params, shadings, field_fns, march):
    """The training renders of the four views, in VIEW_TABLE order: each view's field and grid,
    or for two fields the composite of both.

    keys [4,2]: one PRNG key per view; rays: per view (origins, directions) [N,3]; grids: GRIDS
    name -> OccupancyGrid; params: field name -> its params; shadings: {(view index, field):
    Shading}; field_fns(params, shading) -> nerf FieldFns.
    The views of one field run as one map_single_views.
    """
    def single(v):
        view = VIEW_TABLE[v]
        return (keys[v], rays[v], params[view.fields[0]], grids[view.grid],
                shadings[(v, view.fields[0])])

    def render_one(xs):
        key, (origins, directions), field_params, grid, shading = xs
        return render_field(key, origins, directions, grid, field_fns(field_params, shading),
                            march)

    renders = map_single_views(render_one, range(len(VIEW_TABLE)), single)
    for v, view in enumerate(VIEW_TABLE):
        if v not in renders:
            renders[v] = render_composite(keys[v], *rays[v], grids[view.grid],
                                          *(field_fns(params[f], shadings[(v, f)])
                                            for f in view.fields), march)
    return [renders[v] for v in range(len(VIEW_TABLE))]


def run_body(cfg):
    """The run's body model and its guide body (docs/method.md §2.1) from the `body` config
    block."""
    # The release's guide body (num_pca_comps=12) has SMPL-X's mean hand pose, not flat hands.
    body = load_body(cfg.body.body_model or None, flat_hand_mean=False)
    return body, guide_body(body, load_pose(cfg.body.pose), cfg.body.mode)


def view_offsets(center, head):
    """[4,3] offsets of the four views (VIEW_TABLE's offset column)."""
    return jnp.stack([a * center + b * head for a, b in (v.offset for v in VIEW_TABLE)])


def scene_views(c2w, light, center, head, scales):
    """One camera -> the four views' camera-to-world matrices [4,4,4] and light positions [4,3].

    c2w [4,4] (camera position in column 3), light [3], center [3], head [3],
    scales: the four position scales (camera.<view>_scale in training; ones at evaluation).
    """
    offsets = view_offsets(center, head)
    positions = jnp.asarray(scales, c2w.dtype)[:, None] * c2w[None, :3, 3] + offsets
    c2ws = jnp.broadcast_to(c2w, (4, 4, 4)).at[:, :3, 3].set(positions)
    return c2ws, light[None, :] + offsets


def object_center(density_fn, previous, radius, resolution, density_scale, chunk=2**18):
    """Mean of the grid points where the object is opaque: 1 - exp(-0.2 density) > 0.5.

    density_fn: points [N,3] -> density [N]. The grid spans [-radius, radius]^3 at `resolution`^3
    points, evaluated in chunks of `chunk` points. Returns `previous` when no point is opaque.
    """
    axis = jnp.linspace(-radius, radius, resolution)
    grid = jnp.stack(jnp.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    n = grid.shape[0]
    pad = (-n) % chunk
    chunks = jnp.pad(grid, ((0, pad), (0, 0))).reshape(-1, chunk, 3)

    valid_tail = jnp.arange(chunks.shape[0] * chunk).reshape(chunks.shape[:2]) < n

    def body(carry, xs):
        pts, ok = xs
        total, count = carry
        opaque = (1.0 - jnp.exp(-density_scale * density_fn(pts)) > 0.5) & ok
        return (total + jnp.sum(jnp.where(opaque[:, None], pts, 0.0), 0),
                count + jnp.sum(opaque)), None

    (total, count), _ = jax.lax.scan(body, (jnp.zeros(3), jnp.zeros((), jnp.int32)),
                                     (chunks, valid_tail))
    return jnp.where(count > 0, total / jnp.maximum(count, 1), previous)
