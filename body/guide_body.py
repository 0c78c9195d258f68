"""The guide body of the interaction stage in the scene frame (docs/method.md §2.1).

Scene frame: z up (threestudio). Body frame: SMPL-X, y up. Points go body -> scene by
(x, y, z)_scene = (z, x, y)_body (the inverse map, scene -> body, is (x, y, z)_body = (y, z, x)_scene).
"""

from typing import NamedTuple

import jax
import numpy as np

from body.body_model import BODY_JOINT_NAMES, BodyModel

MODES = ("default", "aug_rot", "aug_trans")
HEAD_JOINT = BODY_JOINT_NAMES.index("head")  # 15 in SMPL-X's joint order
_AUG_ROT_ORIENT = (-np.pi / 6, 0.0, 0.0)


def body_to_scene(points):
    """[..., 3] body frame -> scene frame."""
    return points[..., [2, 0, 1]]


class GuideBody(NamedTuple):
    vertices: np.ndarray  # [V, 3] scene frame
    faces: np.ndarray  # [F, 3]
    head: np.ndarray  # [3] scene frame (joint 15 of the posed body)


@jax.jit
def _forward(body, body_pose, global_orient, transl):
    # One compiled call: run op by op, the body model's forward compiles ~100 small kernels
    # (7 s on a CPU, more on a GPU).
    return body.forward(body_pose, global_orient=global_orient, transl=transl)


def guide_body(body, body_pose, mode="default"):
    """Pose `body` (BodyModel interface: forward(body_pose, global_orient, transl) -> (vertices,
    joints), faces) with the 63-d axis-angle `body_pose` and place it in the scene frame:

    default: global_orient 0, translation -(mean vertex of the posed body);
    aug_rot: global_orient (-pi/6, 0, 0), translation -(mean vertex of that posed body);
    aug_trans: global_orient 0, translation -(pelvis joint of the rest pose).
    """
    if mode not in MODES:
        raise ValueError(f"guide_body: unknown mode {mode!r}; expected one of {', '.join(MODES)}")
    body_pose = np.asarray(body_pose, np.float32).reshape(-1)
    if body_pose.shape != (63,):
        raise ValueError(f"guide_body: body_pose must hold 63 numbers, got {body_pose.shape[0]}")
    forward = _forward if isinstance(body, BodyModel) else (
        lambda b, pose, orient, transl: b.forward(pose, global_orient=orient, transl=transl))
    orient = np.asarray(_AUG_ROT_ORIENT if mode == "aug_rot" else (0.0, 0.0, 0.0), np.float32)
    zero = np.zeros(3, np.float32)
    if mode == "aug_trans":
        _, rest_joints = forward(body, np.zeros(63, np.float32), zero, zero)
        transl = -np.asarray(rest_joints, np.float32)[0]
    else:
        vertices, _ = forward(body, body_pose, orient, zero)
        transl = -np.asarray(vertices, np.float64).mean(axis=0).astype(np.float32)
    vertices, joints = forward(body, body_pose, orient, transl)
    return GuideBody(
        vertices=body_to_scene(np.asarray(vertices, np.float32)),
        faces=np.asarray(body.faces, np.int64),
        head=body_to_scene(np.asarray(joints, np.float32)[HEAD_JOINT]),
    )
