"""Pose presets: hand-authored SMPL-X body poses (63-d axis-angle, 21 body joints, SMPL-X order).

Frame: SMPL-X's rest pose, y up, the body facing +z, its left side at +x. Signs used: a hip
rotation of -a about x swings the thigh forward, a knee rotation of +a about x bends the shin back,
+a about x on the spine bends the trunk forward, -a about z lowers the left arm (+a the right), and
elbow flexion is -a about y on the left (+a on the right). Unlisted joints are at rest.

Presets are body poses only; placement is the caller's. 'lying' is a relaxed body meant to be laid
down by the scene: with `global_orient = (-pi/2, 0, 0)` it lies on its back, face up (+y); with a
zero global orientation it stands.
"""
import numpy as np

from body.body_model import BODY_JOINT_NAMES

LYING_GLOBAL_ORIENT = (-np.pi / 2, 0.0, 0.0)

_JOINT_ROTATIONS = {
    "standing": {  # Upright, arms hanging slightly away from the body, elbows a little bent.
        "left_shoulder": (0.395, -0.334, -1.294),
        "right_shoulder": (0.395, 0.334, 1.294),
        "left_elbow": (0.000, -0.144, 0.000),
        "right_elbow": (0.000, 0.144, 0.000),
    },
    "sitting": {  # On a chair: thighs horizontal, shins vertical, hands resting on the thighs.
        "left_hip": (-1.568, 0.002, 0.092),
        "right_hip": (-1.568, -0.002, -0.092),
        "spine1": (0.087, 0.000, 0.000),
        "left_knee": (1.517, 0.000, 0.000),
        "right_knee": (1.517, 0.000, 0.000),
        "left_shoulder": (-0.227, -0.342, -1.391),
        "right_shoulder": (-0.227, 0.342, 1.391),
        "left_elbow": (0.000, -0.950, 0.000),
        "right_elbow": (0.000, 0.950, 0.000),
    },
    # On a bike or horse: torso leaning forward, thighs forward and apart, knees bent, arms
    # reaching forward.
    "riding": {
        "left_hip": (-1.163, 0.039, 0.359),
        "right_hip": (-1.163, -0.039, -0.359),
        "spine1": (0.262, 0.000, 0.000),
        "left_knee": (1.245, 0.000, 0.000),
        "right_knee": (1.245, 0.000, 0.000),
        "spine2": (0.175, 0.000, 0.000),
        "spine3": (0.087, 0.000, 0.000),
        "neck": (-0.175, 0.000, 0.000),
        "head": (-0.175, 0.000, 0.000),
        "left_shoulder": (-0.813, -1.410, -0.604),
        "right_shoulder": (-0.813, 1.410, 0.604),
        "left_elbow": (0.000, -0.226, 0.000),
        "right_elbow": (0.000, 0.226, 0.000),
    },
    "carrying": {  # Upright, upper arms down, forearms forward at waist height, holding something in front.
        "spine1": (-0.070, 0.000, 0.000),
        "left_shoulder": (-0.021, -0.302, -1.425),
        "right_shoulder": (-0.021, 0.302, 1.425),
        "left_elbow": (0.000, -1.253, 0.000),
        "right_elbow": (0.000, 1.253, 0.000),
    },
    # Playing an instrument: upper arms raised forward, forearms bent up and inward, hands in front
    # of the chest.
    "playing": {
        "left_shoulder": (-0.359, -1.069, -0.699),
        "right_shoulder": (-0.359, 1.069, 0.699),
        "left_elbow": (0.000, -1.261, 0.000),
        "right_elbow": (0.000, 1.261, 0.000),
    },
    # Relaxed supine body: arms a little out, legs straight and slightly apart, head tipped forward
    # as on a pillow.
    "lying": {
        "left_hip": (0.000, 0.000, 0.119),
        "right_hip": (0.000, 0.000, -0.119),
        "left_knee": (0.020, 0.000, 0.000),
        "right_knee": (0.020, 0.000, 0.000),
        "neck": (0.175, 0.000, 0.000),
        "left_shoulder": (0.000, 0.000, -1.107),
        "right_shoulder": (0.000, 0.000, 1.107),
        "left_elbow": (0.000, -0.071, 0.000),
        "right_elbow": (0.000, 0.071, 0.000),
    },
}


def _body_pose(rotations):
    pose = np.zeros((len(BODY_JOINT_NAMES) - 1, 3), np.float32)
    for name, rotvec in rotations.items():
        pose[BODY_JOINT_NAMES.index(name) - 1] = rotvec
    return pose.reshape(-1)


PRESETS = {name: _body_pose(rot) for name, rot in _JOINT_ROTATIONS.items()}


def get_preset(name):
    """The preset body pose `name` as a (63,) float32 array (a copy)."""
    if name not in PRESETS:
        raise KeyError(f"unknown pose preset {name!r}; known presets: {', '.join(PRESETS)}")
    return PRESETS[name].copy()
