"""Writes the SMPL-X parity fixture: a small synthetic model file in the official layout and smplx outputs.

Run with the reference environment: `.venv-ref/bin/python scripts/parity_smplx.py`.

The model file has the keys and per-vertex shapes of the official `SMPLX_NEUTRAL.npz` (the real
55-joint kinematic tree, 400 shape/expression components, 486 pose-blend features) on a small random
mesh of 400 vertices. Values are random, sparse where the real model is sparse (skinning weights,
joint regressor) and quantised to multiples of 2^-12 so the file compresses under 1 MB.

smplx appends vertex/landmark joints picked by fixed vertex ids of the real 10475-vertex mesh; they
are mapped into this mesh's range here and are not part of the comparison: the reference keeps the
first 55 joints, the model's skeleton.
"""
import os

import numpy as np
import smplx
import smplx.body_models
import torch

from ifcommon import atomic_write

OUT_DIR = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "smplx")
NUM_VERTS = 400
NUM_JOINTS = 55
NUM_POSES = 8
NUM_BETAS = 16
SMPLX_PARENTS = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 15, 15, 15,
                 20, 25, 26, 20, 28, 29, 20, 31, 32, 20, 34, 35, 20, 37, 38,
                 21, 40, 41, 21, 43, 44, 21, 46, 47, 21, 49, 50, 21, 52, 53]


def _quantised(rng, shape, scale, density=1.0):
    values = np.round(rng.normal(size=shape) * scale * 4096.0) / 4096.0
    if density < 1.0:
        values *= rng.random(shape) < density
    return values.astype(np.float32)


def atomic_write_npz(path, **arrays):
    atomic_write(path, lambda tmp: np.savez_compressed(tmp, **arrays), ".npz")


def synthetic_model(rng):
    v_template = _quantised(rng, (NUM_VERTS, 3), 0.4)
    faces = rng.integers(0, NUM_VERTS, size=(2 * NUM_VERTS, 3)).astype(np.uint32)
    weights = rng.random((NUM_VERTS, NUM_JOINTS)) * (rng.random((NUM_VERTS, NUM_JOINTS)) < 0.08)
    weights[np.arange(NUM_VERTS), rng.integers(0, NUM_JOINTS, NUM_VERTS)] += 1.0
    weights = (weights / weights.sum(1, keepdims=True)).astype(np.float32)
    j_regressor = rng.random((NUM_JOINTS, NUM_VERTS)) * (rng.random((NUM_JOINTS, NUM_VERTS)) < 0.03)
    j_regressor[np.arange(NUM_JOINTS), rng.integers(0, NUM_VERTS, NUM_JOINTS)] += 1.0
    j_regressor = (j_regressor / j_regressor.sum(1, keepdims=True)).astype(np.float32)
    shapedirs = np.zeros((NUM_VERTS, 3, 400), np.float32)
    shapedirs[..., :NUM_BETAS] = _quantised(rng, (NUM_VERTS, 3, NUM_BETAS), 0.01)
    shapedirs[..., 300:310] = _quantised(rng, (NUM_VERTS, 3, 10), 0.01)
    posedirs = _quantised(rng, (NUM_VERTS, 3, 9 * (NUM_JOINTS - 1)), 0.01, density=0.05)
    kintree = np.stack([np.array(SMPLX_PARENTS), np.arange(NUM_JOINTS)]).astype(np.int64)
    kintree[0, 0] = 4294967295  # as in the official files (uint32 -1)
    return dict(
        v_template=v_template, f=faces, weights=weights, J_regressor=j_regressor,
        shapedirs=shapedirs, posedirs=posedirs, kintree_table=kintree,
        hands_meanl=_quantised(rng, (45,), 0.2), hands_meanr=_quantised(rng, (45,), 0.2),
        hands_componentsl=_quantised(rng, (45, 45), 0.2), hands_componentsr=_quantised(rng, (45, 45), 0.2),
        hands_coeffsl=np.zeros((1, 45), np.float32), hands_coeffsr=np.zeros((1, 45), np.float32),
        lmk_faces_idx=rng.integers(0, 2 * NUM_VERTS, 51).astype(np.int64),
        lmk_bary_coords=np.full((51, 3), 1.0 / 3.0, np.float32),
        dynamic_lmk_faces_idx=rng.integers(0, 2 * NUM_VERTS, (79, 17)).astype(np.int64),
        dynamic_lmk_bary_coords=np.full((79, 17, 3), 1.0 / 3.0, np.float32),
    )


def main():
    os.makedirs(OUT_DIR, exist_ok=True)
    rng = np.random.default_rng(0)
    model_path = os.path.join(OUT_DIR, "SMPLX_NEUTRAL.npz")
    atomic_write_npz(model_path, **synthetic_model(rng))
    # Real vertex ids (up to 9929) are out of range of the small mesh; keep them valid.
    smplx.body_models.VERTEX_IDS["smplx"] = {
        k: v % NUM_VERTS for k, v in smplx.body_models.VERTEX_IDS["smplx"].items()
    }
    model = smplx.create(model_path, model_type="smplx", gender="neutral", use_pca=False,
                         flat_hand_mean=True, ext="npz", num_betas=NUM_BETAS, batch_size=NUM_POSES)
    body_pose = (rng.normal(size=(NUM_POSES, 63)) * 0.5).astype(np.float32)
    global_orient = (rng.normal(size=(NUM_POSES, 3)) * 0.8).astype(np.float32)
    transl = rng.normal(size=(NUM_POSES, 3)).astype(np.float32)
    betas = (rng.normal(size=(NUM_POSES, NUM_BETAS)) * 1.5).astype(np.float32)
    body_pose[0] = 0.0  # the rest pose is among the cases
    with torch.no_grad():
        out = model(body_pose=torch.from_numpy(body_pose), global_orient=torch.from_numpy(global_orient),
                    transl=torch.from_numpy(transl), betas=torch.from_numpy(betas))
    atomic_write_npz(
        os.path.join(OUT_DIR, "reference.npz"),
        body_pose=body_pose, global_orient=global_orient, transl=transl, betas=betas,
        vertices=out.vertices.numpy().astype(np.float32),
        joints=out.joints[:, :NUM_JOINTS].numpy().astype(np.float32),
    )
    sizes = {f: os.path.getsize(os.path.join(OUT_DIR, f)) for f in os.listdir(OUT_DIR)}
    print("wrote", sizes, "total", sum(sizes.values()), "bytes")


if __name__ == "__main__":
    main()
