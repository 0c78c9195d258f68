"""The pose stage: a pose codebook (images from text, imported pose estimates, VPoser latents,
k-means, multi-view body renders, CLIP features) and text-to-pose retrieval."""
from pose.clip_model import Clip, load_clip
from pose.codebook import PoseStageError, cluster_poses, load_codebook, pose_features, save_codebook
from pose.image_sheet import image_grid
from pose.retrieval import retrieve
from pose.vposer import VPoser, VPoserModel, convert_vposer_checkpoint, load_vposer
