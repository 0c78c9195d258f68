"""A body that needs no licensed file: SMPL-X's 22-joint body tree with a hand-made skeleton and surface.

Rest pose in SMPL-X's T-pose convention: y up, facing +z, the body's left side at +x, arms along +-x,
rest rotations identity; 1.75 m tall, floor at y = -1.34 so the pelvis sits near SMPL-X's.
The surface is the zero level set of a smooth union of per-bone volumes (round cones and ellipsoids),
meshed once by marching cubes: one closed manifold with triangles no larger than the grid step. Each
vertex is skinned to the bones whose volumes lie within a few millimetres of its nearest one, so
joints bend smoothly while distant parts stay rigid.
"""
import functools
import sys

import numpy as np
from skimage import measure

from body import body_model
from body.body_model import BODY_JOINT_NAMES, BODY_PARENTS, make_body_model
from ifcommon import cached_arrays, source_bytes

_FLOOR = -1.34
_GRID_STEP = 0.015  # metres; sets the vertex count (~10k)
_BLEND = 0.02  # smooth-union radius (metres) where a volume joins the body
_TRUNK_BLEND = 0.06  # wider on the trunk, whose stacked ellipsoids would otherwise show ridges
_TRUNK = ("pelvis", "spine1", "spine2", "spine3")
_SKIN_SIGMA = 0.012  # distance scale of the skinning weights (metres)
_SKIN_CUTOFF = 3.0  # weights further than this many sigmas from the nearest volume are zero


def _mirror(p):
    return (-p[0], p[1], p[2])


def _h(x, height, z):
    """A point from its height above the floor."""
    return (x, height + _FLOOR, z)


# Rest joints, left side; the right side mirrors x.
_LEFT_JOINTS = {
    "left_hip": _h(0.088, 0.92, -0.005),
    "left_knee": _h(0.095, 0.50, 0.005),
    "left_ankle": _h(0.100, 0.085, -0.03),
    "left_foot": _h(0.105, 0.025, 0.105),
    "left_collar": _h(0.07, 1.43, -0.03),
    "left_shoulder": _h(0.185, 1.41, -0.03),
    "left_elbow": _h(0.455, 1.41, -0.04),
    "left_wrist": _h(0.705, 1.41, -0.03),
}
_CENTRE_JOINTS = {
    "pelvis": _h(0.0, 0.99, 0.0),
    "spine1": _h(0.0, 1.10, -0.015),
    "spine2": _h(0.0, 1.23, -0.01),
    "spine3": _h(0.0, 1.29, -0.005),
    "neck": _h(0.0, 1.50, -0.025),
    "head": _h(0.0, 1.585, -0.005),
}


def _joint_table():
    table = dict(_CENTRE_JOINTS)
    for name, p in _LEFT_JOINTS.items():
        table[name] = p
        table["right" + name[4:]] = _mirror(p)
    return np.array([table[n] for n in BODY_JOINT_NAMES], np.float64)


_HEAD_CENTRE = _h(0, 1.655, 0.005)
# Volumes: (joint the volume is skinned to, kind, parameters). "cone": round cone from a to b with
# radii ra, rb; "ell": ellipsoid at c with semi-axes r. Volumes off the midline ("L") are mirrored.
_VOLUMES = [
    ("pelvis", "ell", _h(0, 0.93, -0.005), (0.165, 0.115, 0.110)),
    ("pelvis", "ell", _h(0.065, 0.90, -0.055), (0.085, 0.095, 0.075)),  # L buttock
    ("spine1", "ell", _h(0, 1.09, 0.0), (0.150, 0.120, 0.100)),
    ("spine2", "ell", _h(0, 1.21, 0.005), (0.155, 0.110, 0.105)),
    ("spine3", "ell", _h(0, 1.32, 0.0), (0.170, 0.120, 0.115)),
    ("spine3", "ell", _h(0.075, 1.30, 0.06), (0.070, 0.060, 0.060)),  # L chest
    ("left_collar", "cone", _h(0.02, 1.43, -0.03), _h(0.17, 1.42, -0.03), (0.065, 0.060)),  # L
    ("neck", "cone", _h(0, 1.44, -0.025), _h(0, 1.58, -0.005), (0.055, 0.050)),
    ("head", "ell", _HEAD_CENTRE, (0.078, 0.098, 0.095)),
    ("head", "ell", _h(0, 1.595, 0.035), (0.055, 0.045, 0.060)),  # jaw
    ("head", "ell", _h(0, 1.64, 0.100), (0.013, 0.022, 0.016)),  # nose
    ("left_shoulder", "ell", _h(0.185, 1.415, -0.03), (0.065, 0.060, 0.060)),  # L deltoid
    ("left_shoulder", "cone", _h(0.185, 1.41, -0.03), _h(0.455, 1.41, -0.04), (0.052, 0.040)),  # L
    ("left_elbow", "cone", _h(0.455, 1.41, -0.04), _h(0.705, 1.41, -0.03), (0.040, 0.028)),  # L
    ("left_wrist", "ell", _h(0.785, 1.405, -0.025), (0.075, 0.020, 0.044)),  # L palm + fingers
    ("left_wrist", "cone", _h(0.725, 1.40, 0.005), _h(0.775, 1.395, 0.055), (0.014, 0.011)),  # L thumb
    ("left_hip", "cone", _h(0.088, 0.92, -0.005), _h(0.095, 0.50, 0.005), (0.085, 0.052)),  # L
    ("left_knee", "cone", _h(0.095, 0.50, 0.005), _h(0.100, 0.085, -0.03), (0.050, 0.034)),  # L
    ("left_knee", "ell", _h(0.097, 0.36, -0.02), (0.048, 0.110, 0.052)),  # L calf
    ("left_ankle", "cone", _h(0.100, 0.045, -0.045), _h(0.105, 0.035, 0.105), (0.038, 0.036)),  # L
    ("left_foot", "ell", _h(0.105, 0.028, 0.150), (0.045, 0.027, 0.055)),  # L toes
]


def _expanded_volumes():
    """The volume list with every volume off the midline also mirrored to the right side."""
    vols = []
    for joint, kind, *params in _VOLUMES:
        vols.append((joint, kind, params))
        if params[0][0] != 0.0 or joint.startswith("left_"):
            right = "right" + joint[4:] if joint.startswith("left_") else joint
            num_points = 2 if kind == "cone" else 1
            vols.append((right, kind, [_mirror(q) for q in params[:num_points]] + params[num_points:]))
    return vols


def _sdf_ellipsoid(p, c, r):
    """Approximate signed distance to an ellipsoid (Quilez's bound, exact on spheres)."""
    q = (p - np.asarray(c)) / np.asarray(r)
    k0 = np.linalg.norm(q, axis=-1)
    k1 = np.linalg.norm(q / np.asarray(r), axis=-1)
    return k0 * (k0 - 1.0) / np.maximum(k1, 1e-9)


def _sdf_round_cone(p, a, b, ra, rb):
    """Exact signed distance to the convex hull of spheres (a, ra) and (b, rb) (Quilez's formula)."""
    a, b = np.asarray(a), np.asarray(b)
    ba = b - a
    l2 = ba @ ba
    rr = ra - rb
    a2 = l2 - rr * rr
    pa = p - a
    y = pa @ ba
    z = y - l2
    x2 = np.sum((pa * l2 - y[:, None] * ba) ** 2, axis=-1)
    y2, z2 = y * y * l2, z * z * l2
    k = np.sign(rr) * rr * rr * x2
    body = (np.sqrt(x2 * a2 / l2) + y * rr) / l2 - ra
    cap_a = np.sqrt(x2 + y2) / l2 - ra
    cap_b = np.sqrt(x2 + z2) / l2 - rb
    return np.where(np.sign(z) * a2 * z2 > k, cap_b, np.where(np.sign(y) * a2 * y2 < k, cap_a, body))


def _volume_sdfs(points, volumes):
    """points [N,3] -> [N, num_volumes] signed distances."""
    out = []
    for _, kind, params in volumes:
        if kind == "ell":
            out.append(_sdf_ellipsoid(points, params[0], params[1]))
        else:
            out.append(_sdf_round_cone(points, params[0], params[1], *params[2]))
    return np.stack(out, axis=-1)


def _smooth_union(d, radii):
    """Polynomial smooth minimum over the last axis, left to right; volume i joins with radii[i]."""
    acc = d[..., 0]
    for i in range(1, d.shape[-1]):
        b, k = d[..., i], radii[i]
        h = np.clip(0.5 + 0.5 * (b - acc) / k, 0.0, 1.0)
        acc = b * (1 - h) + acc * h - k * h * (1 - h)
    return acc


_SKIN = np.array([0.86, 0.70, 0.58])
_SHIRT = np.array([0.33, 0.45, 0.62])
_TROUSERS = np.array([0.28, 0.29, 0.34])
_SHOES = np.array([0.16, 0.14, 0.13])
_HAIR = np.array([0.22, 0.15, 0.10])
_JOINT_COLOURS = {
    "pelvis": _TROUSERS, "spine1": _SHIRT, "spine2": _SHIRT, "spine3": _SHIRT, "left_collar": _SHIRT,
    "left_shoulder": _SHIRT, "left_elbow": _SKIN, "left_wrist": _SKIN, "neck": _SKIN, "head": _SKIN,
    "left_hip": _TROUSERS, "left_knee": _TROUSERS, "left_ankle": _SHOES, "left_foot": _SHOES,
}


def _vertex_colours(vertices, nearest_joint, joint_names):
    """Clothes by bone; on the head, hair over the top and back so the face shows which way is front."""
    colours = np.empty_like(vertices)
    for i, name in enumerate(joint_names):
        colours[nearest_joint == i] = _JOINT_COLOURS[name.replace("right_", "left_")]
    rel = vertices - np.array(_HEAD_CENTRE)
    on_head = (nearest_joint == joint_names.index("head")) & (rel[:, 1] > -0.06)
    colours[on_head & ((rel[:, 1] > 0.035) | (rel[:, 2] < 0.25 * rel[:, 1] - 0.015))] = _HAIR
    return colours


def _build():
    joints, joint_names = _joint_table(), list(BODY_JOINT_NAMES)
    volumes = _expanded_volumes()
    lo = np.array([-0.93, _FLOOR - 0.02, -0.17])
    hi = np.array([0.93, _FLOOR + 1.78, 0.24])
    axes = [np.arange(l, h + _GRID_STEP, _GRID_STEP) for l, h in zip(lo, hi)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)
    radii = [_TRUNK_BLEND if joint in _TRUNK else _BLEND for joint, _, _ in volumes]
    field = _smooth_union(_volume_sdfs(grid.reshape(-1, 3), volumes), radii).reshape(grid.shape[:3])
    verts, faces, _, _ = measure.marching_cubes(field, level=0.0, spacing=(_GRID_STEP,) * 3)
    # Left as marching cubes returns it: closed and outward-facing; merging its near-coincident
    # vertices would pinch edges into non-manifold ones.
    verts = verts + lo

    joint_index = {n: i for i, n in enumerate(joint_names)}
    vol_joint = np.array([joint_index[j] for j, _, _ in volumes])
    d = _volume_sdfs(verts, volumes)
    per_joint = np.stack([d[:, vol_joint == j].min(axis=1) for j in range(len(joint_names))], axis=1)
    gap = (per_joint - per_joint.min(axis=1, keepdims=True)) / _SKIN_SIGMA
    weights = np.where(gap < _SKIN_CUTOFF, np.exp(-gap), 0.0)
    weights /= weights.sum(axis=1, keepdims=True)
    colours = _vertex_colours(verts, per_joint.argmin(axis=1), joint_names)
    return verts, faces, weights, joints, colours


def _build_arrays():
    return dict(zip(("verts", "faces", "weights", "joints", "colours"), _build()))


@functools.lru_cache(maxsize=1)
def builtin_body():
    """The built-in body as a BodyModel (22 joints, ~10k vertices, vertex colours), built once and
    kept in the user's cache."""
    key = source_bytes(sys.modules[__name__]) + source_bytes(body_model)
    a = cached_arrays("builtin_body", key, _build_arrays)
    verts, faces, weights, joints, colours = (a[k] for k in ("verts", "faces", "weights",
                                                             "joints", "colours"))
    return make_body_model("builtin", verts, faces, weights, joints, BODY_PARENTS, vertex_colors=colours)
