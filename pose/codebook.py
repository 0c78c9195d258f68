"""Pose codebook: file format, clustering, multi-view renders -> CLIP features, retrieval scoring.

The codebook file is an `.npz` with `poses` [K, 63] (axis-angle body poses), `features` [K, D]
(CLIP image features, mean over views) and `meta` (a JSON string: body, CLIP model, views,
clustering, seed). The command-line steps (`pose.gen_codebook`, `pose.gen_pose`,
`pose.import_codebook`) are thin wrappers over this module.

Render frame (docs/method.md §1.3): the release poses SMPL-X with global_orient (pi/2, 0, 0) and the rest-pose
pelvis at the origin, then multiplies the vertices (rows) by [[1, 0, 0], [0, 0, -1], [0, 1, 0]],
which undoes that rotation: neural_renderer's world frame is the body's own y-up frame, the body
facing +z. Here that is global_orient 0 and the same translation. The release's eyes at azimuths
0/90/180/270 (neural_renderer: (d cos e sin a, d sin e, -d cos e cos a)) are the eyes of
`orbit_cameras` at 180/90/0/270, the same four; the features average over views, so order is moot.

Look (`body_render.NEURAL_RENDERER`): black background, 2x super-sampling, face normals, white
ambient 0.5 + directional 0.5 light from +y of the body frame (neural_renderer lights the faces in
its world frame, before its look-at transform); albedo from the SMPL-X UV texture's texel cubes when
given (`gen_codebook --texture`), else the flat `FLAT_ALBEDO`. neural_renderer's look_at images are
mirror images (its camera x axis is up x forward, the camera's left, drawn to the right), so
`pose_features` flips the renders left-right before CLIP when `Views.mirror` (default) is set;
`render_views` itself returns camera-true images, for display.
"""
import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from ifcommon import UserError, atomic_savez
from body.rotations import axis_angle_to_matrix, matrix_to_rot6d, rot6d_to_axis_angle

FORMAT = "interfusion-jax pose codebook v1"
AZIMUTHS = (0.0, 90.0, 180.0, 270.0)
DISTANCE = 2.7
ELEVATION_STD_DEG = 0.3
FOV_DEG = 60.0
TEXEL_SIZE = 8  # texels along each edge of a face's texel cube (the release's texture_size)
# The release textures its renders with a skin albedo map; without one, a flat light skin tone
# keeps them reading to CLIP as a person of about the same overall colour.
FLAT_ALBEDO = (0.8, 0.62, 0.52)


class PoseStageError(UserError):
    """A user error (bad file, flag or size): the command-line steps print it as one line."""


def save_codebook(path, poses, features, meta):
    poses, features = np.asarray(poses, np.float32), np.asarray(features, np.float32)
    if poses.ndim != 2 or poses.shape[1] != 63 or features.ndim != 2 or len(features) != len(poses):
        raise ValueError(f"codebook shapes: poses {poses.shape}, features {features.shape}")
    atomic_savez(path, poses=poses, features=features, meta=np.array(json.dumps({"format": FORMAT, **meta})))


def load_codebook(path):
    """-> (poses [K, 63], features [K, D], meta dict); checks keys, shapes and finiteness."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"codebook {path!r} not found")
    try:
        with np.load(path, allow_pickle=False) as f:
            data = {k: f[k] for k in f.files}
    except (ValueError, OSError) as e:
        raise PoseStageError(f"codebook {path}: not a readable .npz ({e})") from e
    missing = [k for k in ("poses", "features", "meta") if k not in data]
    if missing:
        raise PoseStageError(f"codebook {path}: missing {missing}; expected poses [K,63], features [K,D], meta "
                             f"(convert the release's codebook.pth with `python -m pose.import_codebook`)")
    poses, features = data["poses"].astype(np.float32), data["features"].astype(np.float32)
    if poses.ndim != 2 or poses.shape[1] != 63 or features.ndim != 2 or len(features) != len(poses):
        raise PoseStageError(f"codebook {path}: poses {poses.shape} and features {features.shape}; "
                             f"expected [K, 63] and [K, D]")
    if not (np.isfinite(poses).all() and np.isfinite(features).all()):
        raise PoseStageError(f"codebook {path}: non-finite values")
    return poses, features, json.loads(str(data["meta"]))


def check_feature_size(features, clip, source):
    if features.shape[1] != clip.embed_dim:
        raise PoseStageError(f"codebook {source}: features are {features.shape[1]}-d but the CLIP model at "
                             f"{clip.path} gives {clip.embed_dim}-d features; use the CLIP model it was built with")


def cluster_poses(poses, num_clusters, vposer=None, seed=0):
    """poses [N, 63] -> (centres [num_clusters, 63], space). k-means (scikit-learn, n_init='auto') in
    VPoser's latent space (posterior means, decoded back) or, without VPoser, in 6D per joint
    (centres mapped back to rotations by Gram-Schmidt)."""
    from sklearn.cluster import KMeans

    poses = np.asarray(poses, np.float32)
    if num_clusters > len(poses):
        raise PoseStageError(f"--cluster_size {num_clusters} is larger than the number of poses ({len(poses)})")
    if vposer is not None:
        x, space = np.asarray(vposer.encode_mean(poses)), "vposer"
    else:
        rot = axis_angle_to_matrix(jnp.asarray(poses).reshape(-1, 21, 3))
        x, space = np.asarray(matrix_to_rot6d(rot)).reshape(len(poses), -1), "rot6d"
    km = KMeans(n_clusters=num_clusters, random_state=seed, n_init="auto").fit(x.astype(np.float64))
    centres = km.cluster_centers_.astype(np.float32)
    if vposer is not None:
        return np.asarray(vposer.decode(centres)), space
    return np.asarray(rot6d_to_axis_angle(jnp.asarray(centres).reshape(-1, 21, 6))).reshape(-1, 63), space


@jax.jit  # one compilation per chunk shape instead of op-by-op dispatch of the skinning
def posed_vertices(body, poses):
    """poses [N, 63] -> vertices [N, V, 3], joints [N, J, 3]: global_orient 0, rest-pose pelvis at
    the origin (see the module docstring)."""
    _, rest_joints = body.forward(jnp.zeros(63))
    transl = -rest_joints[0]
    return jax.vmap(lambda p: body.forward(p, transl=transl))(jnp.asarray(poses, jnp.float32))


@dataclasses.dataclass(frozen=True)
class Views:
    """Camera set-up of the codebook renders (docs/method.md §1.3). mirror: CLIP sees the renders flipped
    left-right, as neural_renderer draws them (see the module docstring)."""

    azimuths: tuple = AZIMUTHS
    distance: float = DISTANCE
    elevation_std_deg: float = ELEVATION_STD_DEG
    fov_deg: float = FOV_DEG
    size: int = 224
    mirror: bool = True

    def cameras(self, pose_ids, seed):
        """Cameras for len(pose_ids) x len(azimuths) views (pose-major); elevations ~ N(0, std) drawn
        from a stream per (seed, pose id), so they do not depend on how the job is chunked."""
        from body.body_render import orbit_cameras

        az = np.tile(np.asarray(self.azimuths, np.float32), len(pose_ids))
        el = np.concatenate([np.random.default_rng([seed, int(i)]).normal(0.0, self.elevation_std_deg,
                                                                            len(self.azimuths))
                             for i in pose_ids]).astype(np.float32)
        return orbit_cameras(az, el, self.distance, fov_deg=self.fov_deg, size=self.size)


def render_views(body, poses, views, pose_ids, seed=0, texels=None):
    """poses [N, 63] -> images [N, len(views.azimuths), S, S, 3] in [0, 1] (camera-true, not
    mirrored), masks [N, views, S, S], joints [N, J, 3] and the cameras (pose-major), in the
    release's look. texels: [F, T, T, T, 3] albedo texel cubes of body.faces
    (`body_render.neural_renderer_texels`); None = FLAT_ALBEDO."""
    from body.body_render import NEURAL_RENDERER, render_mesh

    verts, joints = posed_vertices(body, poses)
    nv = len(views.azimuths)
    cams = views.cameras(pose_ids, seed)
    flat = None if texels is not None else np.broadcast_to(np.float32(FLAT_ALBEDO), verts.shape[1:])
    out = render_mesh(jnp.repeat(verts, nv, axis=0), body.faces, cams, vertex_colors=flat,
                      texels=texels, **NEURAL_RENDERER)
    shape = (len(poses), nv) + out["image"].shape[1:]
    return out["image"].reshape(shape), out["mask"].reshape(shape[:-1]), joints, cams


def pose_features(body, clip, poses, views, seed=0, chunk=64, done=None, on_chunk=None,
                  desc="codebook", texels=None):
    """poses [K, 63] -> CLIP features [K, D], the mean over views of the raw image features of the
    renders (`render_views`; flipped left-right when views.mirror). texels: see render_views.

    Runs in chunks of `chunk` poses (the last one padded, so every chunk shares one compilation).
    Resumable: `done` [R, D] holds the features of the first R poses; on_chunk(features_so_far)
    is called after every chunk to save progress.
    """
    poses = np.asarray(poses, np.float32)
    k = len(poses)
    feats = np.zeros((k, clip.embed_dim), np.float32)
    start = 0
    if done is not None:
        start = len(done)
        feats[:start] = done
    with tqdm(total=k, initial=start, desc=desc, unit="pose") as bar:
        for lo in range(start, k, chunk):
            hi = min(lo + chunk, k)
            ids = np.minimum(np.arange(lo, lo + chunk), k - 1)
            images = render_views(body, poses[ids], views, ids, seed, texels)[0]
            if views.mirror:
                images = images[:, :, :, ::-1]
            f = clip.image_features(images.reshape((-1,) + images.shape[2:]))
            feats[lo:hi] = np.asarray(f.reshape(chunk, -1, f.shape[-1]).mean(axis=1))[: hi - lo]
            bar.update(hi - lo)
            if on_chunk is not None:
                on_chunk(feats[:hi])
    return feats
