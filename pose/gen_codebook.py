"""Step 3: poses -> k-means centres (VPoser latent space, or 6D per joint without VPoser) ->
4-view body renders -> CLIP image features averaged over views -> codebook `.npz`.

Renders follow the release (docs/method.md §1.3; see pose.codebook): with --texture, the SMPL-X body is
textured as the release does it, from the UVs of `smplx_uv.obj` and the albedo `f_02_alb.002.png`
sampled into 8x8x8 texels per face; without it, a flat skin-tone albedo.

Resumable: progress goes to `{out}.work.npz` after every chunk; a rerun with the same settings
continues from it, and a finished codebook with the same settings is left as it is.
"""
import argparse
import dataclasses
import json
import os

import numpy as np

from pose import codebook as cb
from ifcommon import command_line, atomic_savez

TEXTURE_FILES = ("smplx_uv.obj", "f_02_alb.002.png")  # as in the release's data/smplx_uv folder


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m pose.gen_codebook", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--poses", required=True, help="pose set from pose.import_poses (.npz with poses [N, 63])")
    p.add_argument("--out", required=True, help="codebook .npz to write")
    p.add_argument("--cluster_size", type=int, default=2048, help="number of k-means clusters (codebook size)")
    p.add_argument("--vposer", default=None, help="VPoser V02_05 folder, .ckpt or converted .npz; "
                   "without it, clustering runs in 6D-per-joint rotation space")
    p.add_argument("--clip", default="weights/clip-vit-base-patch32", help="CLIP folder (transformers layout)")
    p.add_argument("--body", default=None, help="body model file (SMPLX_NEUTRAL.npz); default: built-in body")
    p.add_argument("--texture", default=None,
                   help="SMPL-X UV texture folder (smplx_uv.obj + f_02_alb.002.png) for the "
                        "renders, as the release's; needs --body SMPL-X; default: a flat albedo")
    p.add_argument("--size", type=int, default=224, help="render size in pixels")
    p.add_argument("--chunk", type=int, default=64, help="poses per accelerator batch (x4 views)")
    p.add_argument("--seed", type=int, default=0, help="k-means random_state and camera elevation seed")
    return p.parse_args(argv)


def read_pose_set(path):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--poses {path!r} not found (make it with `python -m pose.import_poses`)")
    try:
        with np.load(path, allow_pickle=False) as f:
            poses = f["poses"] if "poses" in f.files else None
    except (ValueError, OSError) as e:
        raise cb.PoseStageError(f"--poses {path}: not a readable .npz ({e})") from e
    if poses is None or poses.ndim != 2 or poses.shape[1] != 63:
        got = "no 'poses' array" if poses is None else f"poses of shape {poses.shape}"
        raise cb.PoseStageError(f"--poses {path}: {got}; expected poses [N, 63] axis-angle body poses")
    if not np.isfinite(poses).all():
        raise cb.PoseStageError(f"--poses {path}: non-finite values")
    return poses.astype(np.float32)


def _obj_uv_faces(path):
    """Wavefront .obj -> (faces [F, 3] vertex indices, uv_faces [F, 3, 2]); polygons become fans,
    as neural_renderer's loader splits them."""
    uvs, faces, uv_index = [], [], []
    with open(path) as f:
        for line in f:
            parts = line.split()
            if not parts or parts[0] not in ("vt", "f"):
                continue
            try:
                if parts[0] == "vt":
                    uvs.append([float(x) for x in parts[1:3]])
                    continue
                refs = [p.split("/") for p in parts[1:]]
                for k in range(1, len(refs) - 1):
                    tri = (refs[0], refs[k], refs[k + 1])
                    faces.append([int(r[0]) - 1 for r in tri])
                    uv_index.append([int(r[1]) - 1 for r in tri])
            except (ValueError, IndexError):
                raise cb.PoseStageError(f"--texture {path}: cannot read {line.strip()!r} (expected "
                                        f"'vt u v' and faces 'f v/vt ...')") from None
    uv_index = np.asarray(uv_index, np.int64).reshape(-1, 3)
    if not len(uvs) or not len(faces) or uv_index.min() < 0 or uv_index.max() >= len(uvs):
        raise cb.PoseStageError(f"--texture {path}: expected 'vt' texture coordinates and faces "
                                f"'f v/vt ...' indexing them")
    return np.asarray(faces, np.int64), np.asarray(uvs, np.float32)[uv_index]


def read_texture(folder, faces):
    """The release's SMPL-X texture folder -> texel cubes [F, T, T, T, 3] for the body's faces
    [F, 3] (`body_render.neural_renderer_texels`, T = codebook.TEXEL_SIZE). The .obj's faces must
    be the body's, in order: the release pairs them by index."""
    from PIL import Image

    from body.body_render import neural_renderer_texels

    if not os.path.isdir(folder):
        raise FileNotFoundError(f"--texture {folder!r}: not a folder (expected one with "
                                f"{' and '.join(TEXTURE_FILES)})")
    obj, png = (os.path.join(folder, name) for name in TEXTURE_FILES)
    for path in (obj, png):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"--texture {folder}: no {os.path.basename(path)} (expected "
                                    f"{' and '.join(TEXTURE_FILES)}, as in the release's "
                                    f"smplx_uv folder)")
    obj_faces, uv_faces = _obj_uv_faces(obj)
    faces = np.asarray(faces)
    if obj_faces.shape != faces.shape:
        raise cb.PoseStageError(f"--texture {obj}: {len(obj_faces)} faces but the body has "
                                f"{len(faces)}; the texture fits SMPL-X (--body SMPLX_NEUTRAL.npz)")
    if not np.array_equal(obj_faces, faces):
        raise cb.PoseStageError(f"--texture {obj}: its faces are not the body's, in the same order")
    try:
        with Image.open(png) as im:
            image = np.asarray(im.convert("RGB"), np.float32) / 255.0
    except OSError as e:
        raise cb.PoseStageError(f"--texture {png}: not a readable image ({e})") from e
    return neural_renderer_texels(uv_faces, image, size=cb.TEXEL_SIZE)


@command_line
def main(argv=None):
    from body import load_body
    from pose.clip_model import load_clip

    a = parse_args(argv)
    poses = read_pose_set(a.poses)
    if a.cluster_size < 1 or a.cluster_size > len(poses):
        raise cb.PoseStageError(f"--cluster_size {a.cluster_size}: must be between 1 and the number of "
                                f"poses in {a.poses} ({len(poses)})")
    views = cb.Views(size=a.size)
    settings = dict(poses_file=os.path.abspath(a.poses), num_source_poses=len(poses), cluster_size=a.cluster_size,
                    vposer=os.path.abspath(a.vposer) if a.vposer else None, clip=os.path.abspath(a.clip),
                    body=os.path.abspath(a.body) if a.body else "built-in", views=dataclasses.asdict(views),
                    texture=os.path.abspath(a.texture) if a.texture else None, seed=a.seed)
    settings = json.loads(json.dumps(settings))  # as read back from a file (tuples become lists)
    if os.path.isfile(a.out) and cb.load_codebook(a.out)[2].get("settings") == settings:
        print(f"{a.out} is already built with these settings; nothing to do")
        return
    work = a.out + ".work.npz"
    body = load_body(a.body)
    texels = read_texture(a.texture, body.faces) if a.texture else None
    clip = load_clip(a.clip)
    centres, done, space = None, None, None
    if os.path.isfile(work):
        with np.load(work, allow_pickle=False) as f:
            if json.loads(str(f["settings"])) == settings:
                centres, done, space = f["poses"], f["features"], str(f["space"])
                print(f"resuming from {work}: {len(done)}/{len(centres)} poses have features")
            else:
                print(f"{work} was made with other settings: starting over")
    if centres is None:
        vposer = None
        if a.vposer:
            from pose.vposer import load_vposer
            vposer = load_vposer(a.vposer)
        else:
            print("no --vposer given: clustering in 6D-per-joint rotation space instead of VPoser's latent "
                  "space (recorded in the codebook's metadata)")
        print(f"k-means: {len(poses)} poses -> {a.cluster_size} clusters")
        centres, space = cb.cluster_poses(poses, a.cluster_size, vposer, seed=a.seed)
        done = np.zeros((0, clip.embed_dim), np.float32)

    def save_progress(feats):
        atomic_savez(work, poses=centres, features=feats, space=np.array(space),
                        settings=np.array(json.dumps(settings)))

    feats = cb.pose_features(body, clip, centres, views, seed=a.seed, chunk=min(a.chunk, len(centres)),
                             done=done, on_chunk=save_progress, texels=texels)
    meta = dict(settings=settings, clustering=space, body_name=getattr(body, "name", "unknown"),
                clip_embed_dim=clip.embed_dim, features="CLIP image features (projected, unnormalised), "
                "mean over views")
    cb.save_codebook(a.out, centres, feats, meta)
    os.remove(work)
    print(f"wrote {a.out}: poses {centres.shape}, features {feats.shape}, clustering in {space} space")


if __name__ == "__main__":
    main()
