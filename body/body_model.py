"""Linear-blend-skinned body models (SMPL-X and the built-in body) behind one pytree type, in JAX.

The forward pass follows smplx 0.1.28 (`smplx.lbs.lbs`) for an SMPL-X model whose jaw, eyes, hands
and expression take no input: jaw and eyes at zero rotation, expression zero, and the hands either
flat (`flat_hand_mean=True`, zero rotations: the pose stage's renders, docs/method.md §1.3) or in SMPL-X's mean
hand pose (`flat_hand_mean=False`: what the release's `num_pca_comps=12` model gives for zero hand
input, the interaction stage's guide body, docs/method.md §2.1). Those joints' rotations are fixed, so their
pose-blend offset is a constant folded into the template at load time and only the 21 body joints'
rows of `posedirs` are kept.
"""
import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from body.rotations import axis_angle_to_matrix

NUM_BODY_JOINTS = 21
# SMPL-X's first 22 joints (pelvis + 21 body joints), shared by the built-in body.
BODY_JOINT_NAMES = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2", "left_ankle",
    "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar", "right_collar", "head",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
)
BODY_PARENTS = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19)
_SMPLX_SHAPE_SPACE_DIM = 300  # official files hold 300 shape + 100 expression components
_SMPLX_KEYS = ("v_template", "shapedirs", "posedirs", "J_regressor", "kintree_table", "weights", "f")
_SMPLX_HAND_MEAN_KEYS = ("hands_meanl", "hands_meanr")
_SMPLX_NUM_JOINTS = 55
_SMPLX_FIRST_HAND_JOINT = 25  # joints 25..39: left fingers, 40..54: right fingers


@dataclasses.dataclass(frozen=True, eq=False)
class _Static:
    """Non-array parts of a body model; hashed by identity so a model can be a jit argument."""

    name: str
    parents: tuple
    faces: np.ndarray
    vertex_colors: np.ndarray | None


@struct.dataclass
class BodyModel:
    """A skinned body: `forward(body_pose [63]) -> (vertices [V,3], joints [J,3])`.

    Leaves: v_template [V,3] (with the pose-blend offset of fixed_rots added), shapedirs [V,3,S],
    j_template [J,3] (rest joints), j_shapedirs [J,3,S] (joint regressor applied to shapedirs),
    posedirs [P,3V] (P = 189 or 0), weights [V,J], fixed_rots [J-22,3,3] (local rotations of the
    joints after the 22 body joints: jaw, eyes, fingers; no input poses them).
    Joint 0 is the pelvis and joint 15 the head, in SMPL-X order.
    """

    v_template: jax.Array
    shapedirs: jax.Array
    j_template: jax.Array
    j_shapedirs: jax.Array
    posedirs: jax.Array
    weights: jax.Array
    fixed_rots: jax.Array
    static: _Static = struct.field(pytree_node=False)

    @property
    def name(self):
        return self.static.name

    @property
    def faces(self):
        return self.static.faces

    @property
    def vertex_colors(self):
        return self.static.vertex_colors

    @property
    def parents(self):
        return self.static.parents

    @property
    def num_betas(self):
        return self.shapedirs.shape[-1]

    def forward(self, body_pose, global_orient=None, transl=None, betas=None):
        """body_pose [63] axis-angle; global_orient [3]; transl [3]; betas [B <= num_betas].

        Returns (vertices [V,3], joints [J,3]); unbatched, use `jax.vmap` for batches.
        """
        dtype = self.v_template.dtype
        body_pose = jnp.asarray(body_pose, dtype)
        if body_pose.size != 3 * NUM_BODY_JOINTS:
            raise ValueError(f"body_pose: expected {3 * NUM_BODY_JOINTS} axis-angle numbers, got shape "
                             f"{body_pose.shape} (use jax.vmap for batches)")
        body_pose = body_pose.reshape(NUM_BODY_JOINTS, 3)
        global_orient = jnp.zeros(3, dtype) if global_orient is None else jnp.asarray(global_orient, dtype)
        rots = axis_angle_to_matrix(jnp.concatenate([global_orient[None], body_pose], axis=0))

        v_shaped, j_rest = self.v_template, self.j_template
        if betas is not None:
            betas = jnp.asarray(betas, dtype)
            if betas.ndim != 1 or betas.shape[0] > self.num_betas:
                raise ValueError(
                    f"betas: expected shape [B] with B <= {self.num_betas} for the {self.name} body "
                    f"model, got {betas.shape}"
                )
            n = betas.shape[0]
            v_shaped = v_shaped + jnp.einsum("vcs,s->vc", self.shapedirs[..., :n], betas)
            j_rest = j_rest + jnp.einsum("jcs,s->jc", self.j_shapedirs[..., :n], betas)

        eye = jnp.eye(3, dtype=dtype)
        pose_feature = (rots[1:] - eye).reshape(-1)[: self.posedirs.shape[0]]
        v_posed = v_shaped + (pose_feature @ self.posedirs).reshape(-1, 3)

        rots = jnp.concatenate([rots, self.fixed_rots.astype(dtype)], axis=0)
        glob_rot, glob_trans = _kinematic_chain(rots, j_rest, self.parents)
        # Skinning transform of joint j: x -> G_j (x - j_rest_j) + t_j.
        offsets = glob_trans - jnp.einsum("jab,jb->ja", glob_rot, j_rest)
        vert_rot = jnp.einsum("vj,jab->vab", self.weights, glob_rot)
        vert_off = self.weights @ offsets
        vertices = jnp.einsum("vab,vb->va", vert_rot, v_posed) + vert_off
        joints = glob_trans
        if transl is not None:
            transl = jnp.asarray(transl, dtype)
            vertices, joints = vertices + transl, joints + transl
        return vertices, joints


def _depth_levels(parents):
    """Groups joint indices by depth in the tree so each level is one batched matrix product."""
    depth = [0] * len(parents)
    for i, p in enumerate(parents[1:], start=1):
        depth[i] = depth[p] + 1
    return [np.array([i for i, d in enumerate(depth) if d == lvl]) for lvl in range(1, max(depth) + 1)]


def _kinematic_chain(rots, j_rest, parents):
    """rots [J,3,3] local rotations, j_rest [J,3] -> global rotations [J,3,3], posed joints [J,3]."""
    parents_np = np.asarray(parents)
    rel = j_rest - j_rest[np.maximum(parents_np, 0)] * (parents_np >= 0)[:, None]
    glob_rot, glob_trans = rots, rel
    for idx in _depth_levels(parents):
        par = parents_np[idx]
        glob_trans = glob_trans.at[idx].set(jnp.einsum("jab,jb->ja", glob_rot[par], rel[idx]) + glob_trans[par])
        glob_rot = glob_rot.at[idx].set(glob_rot[par] @ rots[idx])
    return glob_rot, glob_trans


def make_body_model(name, v_template, faces, weights, joints, parents, shapedirs=None,
                    j_shapedirs=None, posedirs=None, vertex_colors=None, fixed_rots=None):
    """Builds a BodyModel from NumPy arrays (float32 on device; faces int32 on host).

    parents must list each joint after its parent (parents[0] = -1). fixed_rots [J-22,3,3]: the
    rotations of the joints after the 22 body joints (default identity); v_template must already
    hold their pose-blend offset.
    """
    v_template = np.asarray(v_template, np.float32)
    num_verts, num_joints = v_template.shape[0], len(parents)
    if shapedirs is None:
        shapedirs = np.zeros((num_verts, 3, 0), np.float32)
        j_shapedirs = np.zeros((num_joints, 3, 0), np.float32)
    if posedirs is None:
        posedirs = np.zeros((0, 3 * num_verts), np.float32)
    if fixed_rots is None:
        fixed_rots = np.broadcast_to(np.eye(3), (num_joints - 1 - NUM_BODY_JOINTS, 3, 3))
    static = _Static(
        name=name,
        parents=tuple(int(p) for p in parents),
        faces=np.ascontiguousarray(faces, dtype=np.int32),
        vertex_colors=None if vertex_colors is None else np.asarray(vertex_colors, np.float32),
    )
    return BodyModel(
        v_template=jnp.asarray(v_template),
        shapedirs=jnp.asarray(shapedirs, jnp.float32),
        j_template=jnp.asarray(joints, jnp.float32),
        j_shapedirs=jnp.asarray(j_shapedirs, jnp.float32),
        posedirs=jnp.asarray(posedirs, jnp.float32),
        weights=jnp.asarray(weights, jnp.float32),
        fixed_rots=jnp.asarray(fixed_rots, jnp.float32),
        static=static,
    )


def load_smplx(path, flat_hand_mean=True):
    """Loads an official SMPL-X model file (`SMPLX_NEUTRAL.npz`) into a BodyModel (55 joints).

    flat_hand_mean: True, the fingers at zero rotation (smplx's `flat_hand_mean=True`); False, the
    fingers in the file's mean hand pose (`hands_meanl`, `hands_meanr`, 45 axis-angle numbers each),
    as smplx poses them for zero hand input with `flat_hand_mean=False`.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"SMPL-X model file not found: {path} (expected SMPLX_NEUTRAL.npz)")
    try:
        data = np.load(path, allow_pickle=True)
    except Exception as e:  # np.load raises several types for non-npz input
        raise ValueError(f"{path}: not a readable SMPL-X .npz file ({e})") from e
    keys = _SMPLX_KEYS + (() if flat_hand_mean else _SMPLX_HAND_MEAN_KEYS)
    missing = [k for k in keys if k not in data]
    if missing:
        raise KeyError(f"{path}: SMPL-X model file lacks key(s) {missing}; expected {list(keys)}")
    arrays = {k: data[k] for k in keys}
    j_regressor = arrays["J_regressor"]
    if hasattr(j_regressor, "toarray"):  # sparse in the .pkl release
        j_regressor = j_regressor.toarray()
    j_regressor = np.asarray(j_regressor, np.float64)
    v_template = np.asarray(arrays["v_template"], np.float64)
    num_verts = v_template.shape[0]
    num_joints = j_regressor.shape[0]
    shapedirs = np.asarray(arrays["shapedirs"], np.float64)
    posedirs = np.asarray(arrays["posedirs"], np.float64)
    weights = np.asarray(arrays["weights"], np.float64)
    parents = np.asarray(arrays["kintree_table"])[0].astype(np.int64)
    parents[0] = -1
    expect = {
        "v_template": (v_template.shape, (num_verts, 3)),
        "J_regressor": (j_regressor.shape, (num_joints, num_verts)),
        "weights": (weights.shape, (num_verts, num_joints)),
        "kintree_table": (np.asarray(arrays["kintree_table"]).shape, (2, num_joints)),
        "posedirs": (posedirs.shape, (num_verts, 3, 9 * (num_joints - 1))),
    }
    for key, (got, want) in expect.items():
        if got != want:
            raise ValueError(f"{path}: key '{key}' has shape {got}, expected {want}")
    if shapedirs.ndim != 3 or shapedirs.shape[:2] != (num_verts, 3):
        raise ValueError(f"{path}: key 'shapedirs' has shape {shapedirs.shape}, expected ({num_verts}, 3, S)")
    if num_joints <= NUM_BODY_JOINTS or any(not 0 <= p < i for i, p in enumerate(parents[1:], 1)):
        raise ValueError(f"{path}: key 'kintree_table' is not a tree listing parents before children")
    # smplx: 300 shape + 100 expression components, or 10 + 10 in reduced files.
    num_shape = _SMPLX_SHAPE_SPACE_DIM if shapedirs.shape[-1] >= 400 else min(10, shapedirs.shape[-1])
    shapedirs = shapedirs[..., :num_shape]
    posedirs = posedirs.reshape(-1, posedirs.shape[-1]).T  # [9 (J-1), 3V]
    # Joints come from the template without pose-blend offsets, as in smplx.
    joints = j_regressor @ v_template
    fixed_rots = None  # identity: flat hands
    if not flat_hand_mean:
        fixed_rots, v_template = _mean_hands(path, arrays, num_joints, posedirs, v_template)
    return make_body_model(
        "smplx",
        v_template=v_template,
        faces=np.asarray(arrays["f"]).astype(np.int64),
        weights=weights,
        joints=joints,
        parents=parents,
        shapedirs=shapedirs,
        j_shapedirs=np.einsum("jv,vcs->jcs", j_regressor, shapedirs),
        # The body joints' rows only: the other joints' offset is in v_template (module docstring).
        posedirs=posedirs[: 9 * NUM_BODY_JOINTS],
        fixed_rots=fixed_rots,
    )


def _mean_hands(path, arrays, num_joints, posedirs, v_template):
    """SMPL-X's mean hand pose: (fixed_rots [J-22,3,3], v_template [V,3] plus the pose-blend offset
    of the posed fingers). posedirs [9 (J-1), 3V], all joints' rows."""
    if num_joints != _SMPLX_NUM_JOINTS:
        raise ValueError(f"{path}: {num_joints} joints; the mean hand pose needs SMPL-X's "
                         f"{_SMPLX_NUM_JOINTS}")
    hands = []
    for key in _SMPLX_HAND_MEAN_KEYS:
        mean = np.asarray(arrays[key], np.float64)
        if mean.size != 45:
            raise ValueError(f"{path}: key '{key}' has shape {mean.shape}, expected (45,)")
        hands.append(mean.reshape(15, 3))
    hand_rots = np.asarray(axis_angle_to_matrix(jnp.asarray(np.concatenate(hands), jnp.float32)),
                           np.float64)
    fixed_rots = np.broadcast_to(np.eye(3), (num_joints - 1 - NUM_BODY_JOINTS, 3, 3)).copy()
    first = _SMPLX_FIRST_HAND_JOINT - 1 - NUM_BODY_JOINTS
    fixed_rots[first:] = hand_rots
    # Pose-blend features of joints 1..J-1 are (R_j - I), row-major; the body joints' part varies
    # with the input, the rest is this constant.
    features = (fixed_rots - np.eye(3)).reshape(-1)
    offset = features @ posedirs[9 * NUM_BODY_JOINTS:]
    return fixed_rots, v_template + offset.reshape(-1, 3)

