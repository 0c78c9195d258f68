"""pose."""
from pose.body_model import BodyModel, load_body, load_smplx
from pose.body_prior import BodyPrior
from pose.body_render import Cameras, look_at_cameras, orbit_cameras, rasterize, render_mesh
from pose.builtin_body import builtin_body
from pose.clip_model import Clip, load_clip
from pose.codebook import PoseStageError, cluster_poses, load_codebook, pose_features, retrieve, save_codebook
from pose.guide_body import GuideBody, body_to_scene, guide_body
from pose.image_sheet import image_grid
from pose.mesh_raycast import raycast, render_reference
from pose.pose_files import PoseFileError, load_pose, read_poses
from pose.presets import PRESETS, get_preset
from pose.reference_scene import ReferenceScene, object_mesh, reference_scene
from pose.vposer import VPoser, VPoserModel, convert_vposer_checkpoint, load_vposer
