"""The body: the SMPL-X body model and the built-in body, pose presets and pose files, the body
renderer, the body prior (occupancy and distance) and the guide body in the scene frame. Both
stages use it: the pose stage renders bodies, the interaction stage is shaped by the guide body."""
from body.body_model import BodyModel, load_smplx
from body.body_prior import BodyPrior
from body.body_render import Cameras, look_at_cameras, orbit_cameras, rasterize, render_mesh
from body.builtin_body import builtin_body
from body.guide_body import GuideBody, body_to_scene, guide_body
from body.loading import load_body
from body.pose_files import PoseFileError, load_pose, read_poses
from body.presets import PRESETS, get_preset
