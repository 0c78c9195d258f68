"""A reference scene: the guide body plus an object mesh, with colours, for renders whose right
answer is known (interfusion_jax.mesh_raycast.render_reference).

Scene frame (docs/method.md §2.1): z up; a guide body faces +x with its left side at +y. Builtin objects are
made here from boxes, cylinders and tori, and placed from the guide body's vertices (never from
fixed coordinates), so that they follow the pose and the body mode:

- builtin:chair (preset:sitting): the seat top lies just under the lowest point of the buttocks and
  thighs, found on the body's bottom profile along x under the torso; the seat runs forward until
  the legs drop below it; the backrest is a plank tangent to the back, slanted as the back is (so a
  reclined aug_rot body gets a reclined backrest); four legs reach the floor under the feet, or a
  standard seat height when the feet are raised off it.
- builtin:bike (preset:riding): a saddle under the crotch, a handlebar under the hands, pedals under
  the feet, and wheels, hubs and frame tubes in the body's mid-plane between the legs.
- builtin:box (preset:carrying): a box between the forearms, in front of the torso.

The parts that hold or carry the body (seat, backrest, saddle, handlebar, pedals, box) sit _GAP
below (or behind) or _SIDE_GAP beside every body vertex over their footprint grown by _MARGIN, which
covers the faces between vertices, so they touch the body without entering it; the other parts hang
under them or lie in the empty mid-plane between the legs. tests/test_reference_scene.py measures
the penetration and the gap of each builtin against its preset's guide bodies.
"""

import os
from typing import NamedTuple

import numpy as np
import trimesh

_GAP = 0.005  # clearance between a part and the body surface it supports
_SIDE_GAP = 0.012  # sideways; above _MARGIN, so a footprint query beside the body misses it
_MARGIN = 0.01  # footprints grow by this when looking for body vertices (faces span ~1.5 cm)
_BIN = 0.01  # profile bin (m)
_TORSO_REACH = 0.15  # columns that reach within this of the head joint's height hold the torso
_CONTACT_SEARCH = 0.15  # the body's contact point lies within this of the torso's lowest column
_GREY = (0.6, 0.6, 0.6)
_SKIN = (0.86, 0.70, 0.58)
_FILE_TYPES = (".obj", ".ply", ".glb")

_WOOD = (0.55, 0.36, 0.2)
_CUSHION = (0.62, 0.16, 0.14)
_CHAIR_HALF_WIDTH = 0.23
_CHAIR_BOARD = 0.04  # seat and backrest thickness
_CHAIR_LEG = 0.04
_CHAIR_BACK_HEIGHT = 0.5  # backrest height above the seat top
_CHAIR_MIN_DROP = 0.3  # feet less than this under the seat top are raised off the floor
_CHAIR_SEAT_HEIGHT = 0.42  # seat height over the floor when the feet are raised

_FRAME = (0.75, 0.12, 0.1)
_RUBBER = (0.08, 0.08, 0.08)
_METAL = (0.7, 0.7, 0.72)
_TUBE = 0.018
_TYRE = 0.025
_SADDLE = (0.26, 0.15, 0.05)  # length, width, thickness
_PEDAL = (0.1, 0.1, 0.02)
_PEDAL_CLEARANCE = 0.1  # ground under the lowest pedal
_HAND_DEPTH = 0.08  # the hands: vertices this close to the body's front

_CARDBOARD = (0.72, 0.55, 0.33)
_BOX_HEIGHT = 0.28
_BOX_OVERHANG = 0.03  # beyond the fingertips


class ReferenceScene(NamedTuple):
    """vertices [V, 3] float32 (scene frame), faces [F, 3] int32, face_colors [F, 3] float32
    albedo in [0, 1], face_part [F] int32 (0 object, 1 human)."""

    vertices: np.ndarray
    faces: np.ndarray
    face_colors: np.ndarray
    face_part: np.ndarray


def _part(mesh, color):
    """(vertices [V, 3], faces [F, 3], face colours [F, 3]) of a trimesh in one colour."""
    color = np.broadcast_to(np.asarray(color, np.float64), (len(mesh.faces), 3))
    return np.asarray(mesh.vertices), np.asarray(mesh.faces), color


def _block(origin, ex, ey, ez, color):
    """Parallelepiped at `origin` spanned by the edge vectors ex, ey, ez [3]."""
    unit = trimesh.creation.box(bounds=[[0, 0, 0], [1, 1, 1]])
    corners = np.asarray(unit.vertices)
    vertices = np.asarray(origin) + corners @ np.stack([ex, ey, ez])
    return _part(trimesh.Trimesh(vertices, unit.faces, process=False), color)


def _box(lo, hi, color):
    """Axis-aligned box between the corners lo, hi [3]."""
    size = np.asarray(hi, np.float64) - np.asarray(lo, np.float64)
    return _block(lo, (size[0], 0, 0), (0, size[1], 0), (0, 0, size[2]), color)


def _tube(p0, p1, radius, color):
    mesh = trimesh.creation.cylinder(radius=radius, segment=[p0, p1], sections=12)
    return _part(mesh, color)


def _wheel(centre, radius, color):
    """A tyre (torus) of outer radius `radius` in the x-z plane."""
    mesh = trimesh.creation.torus(
        major_radius=radius - _TYRE, minor_radius=_TYRE, major_sections=48, minor_sections=10
    )
    mesh.apply_transform(trimesh.transformations.rotation_matrix(np.pi / 2, (1, 0, 0)))
    return _part(mesh.apply_translation(centre), color)


def _merge(parts):
    """Concatenate parts -> (vertices [V, 3] float32, faces [F, 3] int32, colours [F, 3])."""
    offsets = np.cumsum([0] + [len(v) for v, _, _ in parts[:-1]])
    vertices = np.concatenate([v for v, _, _ in parts]).astype(np.float32)
    faces = np.concatenate([f + o for (_, f, _), o in zip(parts, offsets)]).astype(np.int32)
    colors = np.concatenate([c for _, _, c in parts]).astype(np.float32)
    return vertices, faces, colors


def _in(v, lo, hi):
    """Vertices v [V, 3] inside the box [lo, hi] grown by _MARGIN (None = unbounded) -> [V]."""
    lo = np.array([-np.inf if a is None else a - _MARGIN for a in lo])
    hi = np.array([np.inf if a is None else a + _MARGIN for a in hi])
    return np.all((v >= lo) & (v <= hi), axis=1)


def _lowest(v, lo, hi):
    """Lowest z of the vertices in a box (see _in); +inf when none."""
    inside = _in(v, lo, hi)
    return v[inside, 2].min() if inside.any() else np.inf


def _profile(v, y0, y1):
    """Bottom and top profiles along x of the vertices with y in [y0, y1] (grown by _MARGIN):
    (bin left edges [B], lowest z [B], highest z [B]; +inf / -inf in empty bins)."""
    strip = v[_in(v, (None, y0, None), (None, y1, None))]
    edges = np.arange(v[:, 0].min() - 0.1, v[:, 0].max() + 0.1, _BIN)
    idx = np.clip(((strip[:, 0] - edges[0]) / _BIN).astype(int), 0, len(edges) - 1)
    low, high = np.full(len(edges), np.inf), np.full(len(edges), -np.inf)
    np.minimum.at(low, idx, strip[:, 2])
    np.maximum.at(high, idx, strip[:, 2])
    # A face spans neighbouring bins: each bin takes the extremes of its neighbours too.
    low = np.minimum(low, np.minimum(np.roll(low, 1), np.roll(low, -1)))
    high = np.maximum(high, np.maximum(np.roll(high, 1), np.roll(high, -1)))
    return edges, low, high


def _contact(low, high, head_z):
    """Where the body rests on a support below it: the lowest bin within _CONTACT_SEARCH of the
    lowest torso column (a column that reaches within _TORSO_REACH of the head joint's height),
    and the run of bins around it whose bottom stays within one bin of that height.
    Returns (contact bin, first bin of the run, last bin of the run)."""
    torso = np.flatnonzero(high >= head_z - _TORSO_REACH)
    seed = torso[np.argmin(low[torso])]
    reach = int(round(_CONTACT_SEARCH / _BIN))
    window = np.arange(max(seed - reach, 0), min(seed + reach + 1, len(low)))
    contact = window[np.argmin(low[window])]
    above = low >= low[contact] - _BIN
    first, last = contact, contact
    while first > 0 and above[first - 1]:
        first -= 1
    while last < len(low) - 1 and above[last + 1]:
        last += 1
    return contact, first, last


def _chair(guide):
    """Seat, slanted backrest and four legs under a sitting guide body -> parts."""
    v = np.asarray(guide.vertices, np.float64)
    yc = np.median(v[:, 1])
    y0, y1 = yc - _CHAIR_HALF_WIDTH, yc + _CHAIR_HALF_WIDTH
    edges, low, high = _profile(v, y0, y1)
    _, first, last = _contact(low, high, guide.head[2])
    seat = low[first : last + 1].min() - _GAP
    front = edges[last] + _BIN - _MARGIN

    # Backrest: a plank whose front face x = a - k (z - seat) follows the back: k from a line
    # fitted to the rearmost vertex of each 2 cm height band, `a` moved back until every vertex
    # clears it. k is kept between a slight forward lean and a 45 degree recline.
    band = _in(v, (None, y0, seat), (None, y1, seat + _CHAIR_BACK_HEIGHT))
    heights = np.arange(seat, seat + _CHAIR_BACK_HEIGHT, 0.02)
    rear = np.array(
        [v[band & (np.abs(v[:, 2] - z) <= 0.01), 0].min(initial=np.inf) for z in heights]
    )
    ok = np.isfinite(rear)
    k = np.clip(-np.polyfit(heights[ok] - seat, rear[ok], 1)[0], -0.2, 1.0)
    a = np.min(v[band, 0] + k * (v[band, 2] - seat)) - _GAP

    back, bottom = a - _CHAIR_BOARD, seat - _CHAIR_BOARD
    rise = _CHAIR_BACK_HEIGHT + _CHAIR_BOARD
    backrest_origin = (back + k * _CHAIR_BOARD, y0, bottom)
    parts = [
        _box((back, y0, bottom), (front, y1, seat), _CUSHION),
        _block(backrest_origin, (_CHAIR_BOARD, 0, 0), (0, y1 - y0, 0), (-k * rise, 0, rise), _WOOD),
    ]
    lowest = v[:, 2].min()
    floor = lowest if seat - lowest >= _CHAIR_MIN_DROP else seat - _CHAIR_SEAT_HEIGHT
    for x in (back, front - _CHAIR_LEG):
        for y in (y0, y1 - _CHAIR_LEG):
            parts.append(_box((x, y, floor), (x + _CHAIR_LEG, y + _CHAIR_LEG, bottom), _WOOD))
    return parts


def _bike(guide):
    """Saddle, handlebar, pedals, wheels and frame under a riding guide body -> parts."""
    v = np.asarray(guide.vertices, np.float64)
    yc = np.median(v[:, 1])
    half = _SADDLE[1] / 2
    edges, low, high = _profile(v, yc - half, yc + half)
    contact, _, _ = _contact(low, high, guide.head[2])
    sx = edges[contact] + _BIN / 2
    s0, s1 = sx - _SADDLE[0] / 2, sx + _SADDLE[0] / 2
    saddle = _lowest(v, (s0, yc - half, None), (s1, yc + half, None)) - _GAP
    parts = [_box((s0, yc - half, saddle - _SADDLE[2]), (s1, yc + half, saddle), _RUBBER)]

    hands = v[(v[:, 0] >= v[:, 0].max() - _HAND_DEPTH) & (v[:, 2] > saddle)]
    bx = np.median(hands[:, 0])
    reach = np.abs(hands[:, 1] - yc).max() + 0.04
    bar_lo, bar_hi = (bx - _TUBE, yc - reach, None), (bx + _TUBE, yc + reach, None)
    bz = _lowest(v, bar_lo, bar_hi) - _GAP - _TUBE
    parts.append(_tube((bx, yc - reach, bz), (bx, yc + reach, bz), _TUBE, _METAL))

    # Pedals under the feet (the vertices within 5 cm of the lowest point, split left / right).
    lowest = v[:, 2].min()
    feet = v[v[:, 2] <= lowest + 0.05]
    ground = lowest - _PEDAL_CLEARANCE
    # Wheels as large as fit 10 cm under the saddle, within a child's to an adult's bike.
    radius = np.clip((saddle - _SADDLE[2] - ground - 0.1) / 2, 0.2, 0.35)
    hub_z = ground + radius
    bb = np.array([np.median(feet[:, 0]), yc, hub_z + 0.03])
    for side in (feet[feet[:, 1] > yc], feet[feet[:, 1] <= yc]):
        px, py = np.median(side[:, 0]), np.median(side[:, 1])
        p_lo = (px - _PEDAL[0] / 2, py - _PEDAL[1] / 2, None)
        p_hi = (px + _PEDAL[0] / 2, py + _PEDAL[1] / 2, None)
        top = _lowest(v, p_lo, p_hi) - _GAP
        parts.append(_box(p_lo[:2] + (top - _PEDAL[2],), p_hi[:2] + (top,), _RUBBER))
        parts.append(_tube(bb, (px, py, top - _PEDAL[2]), _TUBE * 0.7, _METAL))

    # The rear wheel clears the saddle; the fork rakes forward from under the handlebar.
    rear = np.array([s0 - radius, yc, hub_z])
    front = np.array([bx + 0.15, yc, hub_z])
    steer = np.array([bx - 0.06, yc, bz - 0.12])  # top of the head tube
    post = np.array([sx, yc, saddle - _SADDLE[2]])
    seat_joint = bb + 0.8 * (post - bb)
    parts += [
        _wheel(rear, radius, _RUBBER),
        _wheel(front, radius, _RUBBER),
        _tube(rear - (0, 0.05, 0), rear + (0, 0.05, 0), 0.03, _METAL),
        _tube(front - (0, 0.05, 0), front + (0, 0.05, 0), 0.03, _METAL),
        _tube((bx, yc, bz), steer, _TUBE, _METAL),  # stem
        _tube(steer, front, _TUBE, _FRAME),  # head tube and fork
        _tube(bb, post, _TUBE, _FRAME),  # seat tube
        _tube(seat_joint, steer + 0.2 * (front - steer), _TUBE, _FRAME),  # top tube
        _tube(bb, steer + 0.45 * (front - steer), _TUBE, _FRAME),  # down tube
        _tube(bb, rear, _TUBE, _FRAME),  # chain stay
        _tube(seat_joint, rear, _TUBE, _FRAME),  # seat stay
    ]
    return parts


def _carried_box(guide):
    """A box between the forearms, in front of the torso of a carrying guide body -> parts."""
    v = np.asarray(guide.vertices, np.float64)
    front = v[:, 0].max()
    hz = np.median(v[v[:, 0] >= front - 0.05, 2])  # the hands' height
    z0, z1 = hz - _BOX_HEIGHT / 2, hz + _BOX_HEIGHT / 2
    yc = np.median(v[:, 1])
    # The torso's front at the box's heights (its mid-plane); the arms reach beyond it.
    band = v[_in(v, (None, None, z0), (None, None, z1))]
    chest = band[np.abs(band[:, 1] - yc) <= 0.05, 0].max()
    arms = band[band[:, 0] > chest + _GAP]
    y0 = arms[arms[:, 1] <= yc, 1].max() + _SIDE_GAP
    y1 = arms[arms[:, 1] > yc, 1].min() - _SIDE_GAP
    x0 = v[_in(v, (None, y0, z0), (None, y1, z1)), 0].max() + _GAP
    x1 = arms[:, 0].max() + _BOX_OVERHANG
    return [_box((x0, y0, z0), (x1, y1, z1), _CARDBOARD)]


_BUILTINS = {"builtin:chair": _chair, "builtin:bike": _bike, "builtin:box": _carried_box}
BUILTIN_OBJECTS = tuple(_BUILTINS)


def _face_colors(mesh):
    """[F, 3] albedo of a trimesh: its face colours, else its vertex colours averaged per face,
    else grey."""
    visual = mesh.visual
    if visual.kind == "texture":
        visual = visual.to_color()
    if visual.kind == "face":
        return np.asarray(visual.face_colors, np.float64)[:, :3] / 255.0
    if visual.kind == "vertex":
        return np.asarray(visual.vertex_colors, np.float64)[mesh.faces, :3].mean(axis=1) / 255.0
    return np.broadcast_to(np.asarray(_GREY), (len(mesh.faces), 3))


def _read_mesh(path):
    """The triangle meshes of a file as parts (a scene's meshes moved by their transforms)."""
    loaded = trimesh.load(path, process=False)
    if isinstance(loaded, trimesh.Scene):
        meshes = []
        for node in loaded.graph.nodes_geometry:
            transform, name = loaded.graph[node]
            geometry = loaded.geometry[name]
            if isinstance(geometry, trimesh.Trimesh):
                meshes.append(geometry.copy().apply_transform(transform))
    else:
        meshes = [loaded] if isinstance(loaded, trimesh.Trimesh) else []
    parts = [(m.vertices, m.faces, _face_colors(m)) for m in meshes if len(m.faces)]
    if not parts:
        raise ValueError("no triangles")
    return parts


def object_mesh(spec, guide):
    """The reference object for `spec` around the guide body `guide` (GuideBody, scene frame).

    spec: builtin:chair, builtin:bike, builtin:box (placed from the guide body; each fits its
    preset: sitting, riding, carrying), or a path to an .obj, .ply or .glb mesh already in scene
    coordinates (z up), coloured by its face colours, else its vertex colours, else grey.
    Returns (vertices [V, 3] float32, faces [F, 3] int32, face_colors [F, 3] float32 in [0, 1]).
    """
    if spec.startswith("builtin:"):
        if spec not in _BUILTINS:
            raise ValueError(
                f"reference.object_mesh: unknown builtin {spec!r}; known: {', '.join(_BUILTINS)}"
            )
        vertices, faces, colors = _merge(_BUILTINS[spec](guide))
    else:
        if not os.path.isfile(spec):
            raise ValueError(f"reference.object_mesh: no file {spec!r}")
        if os.path.splitext(spec)[1].lower() not in _FILE_TYPES:
            raise ValueError(
                f"reference.object_mesh: {spec!r} is not one of {', '.join(_FILE_TYPES)}"
            )
        try:
            parts = _read_mesh(spec)
        except Exception as error:  # trimesh raises many kinds; the message is what matters
            message = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise ValueError(
                f"reference.object_mesh: cannot read a mesh from {spec!r}: {message}") from None
        vertices, faces, colors = _merge(parts)
    return vertices, faces, np.clip(colors, 0.0, 1.0)


def reference_scene(guide, object_spec, body_colors=None):
    """The guide body (GuideBody) and the object of `object_spec` (see object_mesh) as one
    ReferenceScene. body_colors: [V, 3] vertex colours in [0, 1] of the body (e.g.
    BodyModel.vertex_colors), averaged per face; None = a plain skin tone."""
    obj_vertices, obj_faces, obj_colors = object_mesh(object_spec, guide)
    body_faces = np.asarray(guide.faces, np.int64)
    if body_colors is None:
        body_face_colors = np.broadcast_to(np.asarray(_SKIN), (len(body_faces), 3))
    else:
        body_colors = np.asarray(body_colors, np.float64)
        if body_colors.shape != np.shape(guide.vertices):
            raise ValueError(
                f"reference_scene: body_colors must be [V, 3] = {np.shape(guide.vertices)}, "
                f"got {body_colors.shape}"
            )
        body_face_colors = body_colors[body_faces].mean(axis=1)
    return ReferenceScene(
        vertices=np.concatenate([obj_vertices, guide.vertices]).astype(np.float32),
        faces=np.concatenate([obj_faces, body_faces + len(obj_vertices)]).astype(np.int32),
        face_colors=np.concatenate([obj_colors, body_face_colors]).astype(np.float32),
        face_part=np.repeat(np.int32([0, 1]), [len(obj_faces), len(body_faces)]),
    )
