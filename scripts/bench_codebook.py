"""Benchmark of codebook building (pose.gen_codebook's accelerator part): 4-view body renders and
CLIP ViT-B/32 image features for K poses, plus k-means.

Full size (GPU): 2048 poses x 4 views x 224 px in the release's look (rendered at 2x and averaged
down), CLIP ViT-B/32 architecture with random weights (the transformers default CLIPConfig is
ViT-B/32; nothing is downloaded), the built-in body (its size is printed; SMPL-X has 10,475
vertices / 20,908 faces) or --body SMPLX_NEUTRAL.npz; flat albedo, or with --texels random texel
cubes in place of gen_codebook --texture's. Target: under 2 minutes on one H100.

  python scripts/bench_codebook.py            # GPU, full size
  python scripts/bench_codebook.py --small    # CPU check: 16 poses, 64 px, a tiny CLIP
"""
import argparse
import time

import jax
import numpy as np


def random_clip(small):
    from transformers import CLIPConfig, FlaxCLIPModel

    from pose.clip_model import Clip

    if small:
        config = CLIPConfig(text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                             num_attention_heads=2),
                            vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                               num_attention_heads=2, image_size=32, patch_size=8),
                            projection_dim=16)
    else:
        config = CLIPConfig()  # ViT-B/32: 224 px, patch 32, 12 x 768 vision layers, 512-d projection
    module = FlaxCLIPModel(config, _do_init=False)
    params = jax.jit(lambda k: module.init_weights(k, module.input_shape))(jax.random.key(0))
    n = sum(x.size for x in jax.tree.leaves(params))
    return Clip(module=module, params=params, tokenizer=None, path="random weights"), n


def timed(fn):
    t = time.perf_counter()
    out = jax.block_until_ready(fn())
    return out, time.perf_counter() - t


def main():
    from pose import codebook as cb
    from body import load_body

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--small", action="store_true", help="tiny CPU-sized run to check the script")
    p.add_argument("--poses", type=int, default=2048)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--chunk", type=int, default=64, help="poses per batch (x4 views)")
    p.add_argument("--body", default=None, help="SMPLX_NEUTRAL.npz; default: built-in body")
    p.add_argument("--texels", action="store_true", help="time the textured renders (random texels)")
    p.add_argument("--kmeans_poses", type=int, default=20000, help="source poses for the k-means timing (0: skip)")
    a = p.parse_args()
    if a.small:
        a.poses, a.size, a.chunk, a.kmeans_poses = 16, 64, 8, 400
    k = a.poses
    clusters = 16 if a.small else 2048

    body = load_body(a.body)
    clip, n_params = random_clip(a.small)
    views = cb.Views(size=a.size)
    rng = np.random.default_rng(0)
    poses = rng.normal(0, 0.3, (k, 63)).astype(np.float32)
    texels = None
    if a.texels:
        size = cb.TEXEL_SIZE
        texels = rng.uniform(0, 1, (len(body.faces), size, size, size, 3)).astype(np.float32)
    print(f"device: {jax.devices()[0].device_kind} | body {body.name}: {body.v_template.shape[0]} vertices, "
          f"{len(body.faces)} faces | CLIP {n_params / 1e6:.1f} M params, {clip.image_size} px | "
          f"{k} poses x {len(views.azimuths)} views x {a.size} px, chunk {a.chunk}, "
          f"{'random texels' if a.texels else 'flat albedo'}")

    ids = np.arange(a.chunk)
    images, t_first_render = timed(lambda: cb.render_views(body, poses[ids], views, ids,
                                                           texels=texels)[0])
    _, t_first_clip = timed(lambda: clip.image_features(images.reshape((-1,) + images.shape[2:])))

    t_render = t_clip = 0.0
    for lo in range(0, k, a.chunk):
        ids = np.minimum(np.arange(lo, lo + a.chunk), k - 1)
        images, dt = timed(lambda: cb.render_views(body, poses[ids], views, ids, texels=texels)[0])
        t_render += dt
        _, dt = timed(lambda: clip.image_features(images.reshape((-1,) + images.shape[2:])))
        t_clip += dt
    _, t_total = timed(lambda: cb.pose_features(body, clip, poses, views, chunk=a.chunk,
                                                texels=texels))

    rows = [("first chunk: render (compile + run)", t_first_render),
            ("first chunk: CLIP (compile + run)", t_first_clip),
            (f"render {k} x {len(views.azimuths)} views (warm)", t_render),
            (f"CLIP {k * len(views.azimuths)} images (warm)", t_clip),
            ("total, pose_features end to end (warm)", t_total)]
    if a.kmeans_poses:
        src = rng.normal(0, 0.3, (a.kmeans_poses, 63)).astype(np.float32)
        _, t_km = timed(lambda: cb.cluster_poses(src, clusters)[0])
        rows.append((f"k-means {a.kmeans_poses} poses -> {clusters} (6D, CPU)", t_km))
    print("\n| step | seconds |\n|---|---|")
    for name, t in rows:
        print(f"| {name} | {t:.2f} |")


if __name__ == "__main__":
    main()
