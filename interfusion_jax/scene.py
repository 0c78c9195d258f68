"""Scene-level pieces of the interaction stage: the four views per step and the object centre.

From one sampled camera (position p, rotation R) the release renders four views that share R
(SPEC 2.4): object at 0.7 p + c, human at 0.7 p, interaction at 0.8 p + c/2, head at 0.2 p + head,
where c is the object centre; lights move by the same offsets. At evaluation the scales are 1.
"""
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from pose import guide_body, load_body, load_pose

VIEWS = ("object", "human", "interaction", "head")
# What each view shows: its field(s), and the parts of a reference scene.
VIEW_PARTS = (("object",), ("human",), ("object", "human"), ("human",))


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


def run_body(cfg):
    """The run's body model and its guide body (SPEC 2.1) from the `body` config block."""
    # The release's guide body (num_pca_comps=12) has SMPL-X's mean hand pose, not flat hands.
    body = load_body(cfg.body.body_model or None, flat_hand_mean=False)
    return body, guide_body(body, load_pose(cfg.body.pose), cfg.body.mode)


def view_offsets(center, head):
    """[4,3] offsets of the object, human, interaction and head views."""
    return jnp.stack([center, jnp.zeros_like(center), center / 2.0, head])


def scene_views(c2w, light, center, head, scales):
    """One camera -> the four views' camera-to-world matrices [4,4,4] and light positions [4,3].

    c2w [4,4] (camera position in column 3), light [3], center [3], head [3],
    scales: the four position scales (0.7, 0.7, 0.8, 0.2 in training; ones at evaluation).
    """
    offsets = view_offsets(center, head)
    positions = jnp.asarray(scales, c2w.dtype)[:, None] * c2w[None, :3, 3] + offsets
    c2ws = jnp.broadcast_to(c2w, (4, 4, 4)).at[:, :3, 3].set(positions)
    return c2ws, light[None, :] + offsets


def object_center(density_fn, previous, radius, resolution=128, density_scale=0.2, chunk=2**18):
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
