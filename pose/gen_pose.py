"""Step 4: text -> the codebook poses whose renders best match it under CLIP.

Writes, under --out: `top_{i}.npy` (63,) axis-angle body poses in rank order (a scene config's
`pose:` takes one), `top_{i}.png` (a front render labelled with rank, codebook row and score),
`strip.png` (all of them side by side in rank order) and `scores.json`.

--dedup turns on the release's optional near-duplicate filter (off in the release, as here by
default): among the --pre_topk best-scoring poses, a pose is dropped when its mean absolute
difference to a better-ranked kept pose is at most --dedup_threshold; the first --topk survivors
are written (fewer when fewer survive).
"""
import argparse
import json
import os

import numpy as np

from pose import codebook as cb
from pose import retrieval
from ifcommon import command_line, save_npy, save_png, save_text


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m pose.gen_pose", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--codebook", required=True, help="codebook .npz (pose.gen_codebook or pose.import_codebook)")
    p.add_argument("--text", required=True, help='interaction text, e.g. "riding a bike"')
    p.add_argument("--topk", type=int, default=7, help="poses to keep")
    p.add_argument("--dedup", action="store_true",
                   help="drop near-duplicate poses (the release's optional filter; off by default)")
    p.add_argument("--pre_topk", type=int, default=None,
                   help=f"with --dedup: best-scoring poses the filter looks through (default {retrieval.PRE_TOPK})")
    p.add_argument("--dedup_threshold", type=float, default=None,
                   help=f"with --dedup: largest mean absolute difference (radians, over the 63 numbers) "
                        f"of a near-duplicate (default {retrieval.DEDUP_THRESHOLD})")
    p.add_argument("--out", default="results/interfusion_poses", help="output folder")
    p.add_argument("--clip", default="weights/clip-vit-base-patch32", help="CLIP folder (transformers layout)")
    p.add_argument("--body", default=None, help="body model file for the renders; default: built-in body")
    p.add_argument("--size", type=int, default=224, help="render size in pixels")
    return p.parse_args(argv)


@command_line
def main(argv=None):
    from body import load_body
    from pose.clip_model import load_clip
    from pose.image_sheet import image_grid

    a = parse_args(argv)
    if a.topk < 1:
        raise cb.PoseStageError(f"--topk {a.topk}: must be at least 1")
    for flag, value in (("--pre_topk", a.pre_topk), ("--dedup_threshold", a.dedup_threshold)):
        if value is not None and not a.dedup:
            raise cb.PoseStageError(f"{flag} {value}: only used by the near-duplicate filter; add --dedup")
    pre_topk = retrieval.PRE_TOPK if a.pre_topk is None else a.pre_topk
    threshold = retrieval.DEDUP_THRESHOLD if a.dedup_threshold is None else a.dedup_threshold
    if a.dedup and threshold < 0:
        raise cb.PoseStageError(f"--dedup_threshold {threshold}: must be at least 0")
    if a.dedup and pre_topk < a.topk:
        raise cb.PoseStageError(f"--pre_topk {pre_topk} is smaller than --topk {a.topk}")
    poses, features, _ = cb.load_codebook(a.codebook)
    if a.topk > len(poses):
        raise cb.PoseStageError(f"--topk {a.topk} is larger than the codebook {a.codebook} ({len(poses)} poses)")
    clip = load_clip(a.clip)
    cb.check_feature_size(features, clip, a.codebook)
    query = retrieval.QUERY_TEMPLATE.format(a.text)
    idx, scores = retrieval.retrieve(features, np.asarray(clip.text_features([query]))[0], a.topk, poses=poses,
                              dedup_threshold=threshold if a.dedup else None, pre_topk=pre_topk)

    body = load_body(a.body)
    front = cb.Views(azimuths=(0.0,), elevation_std_deg=0.0, size=a.size)
    images = np.asarray(cb.render_views(body, poses[idx], front, idx)[0][:, 0])
    labels = [f"#{i} row {j} | {s:.3f}" for i, (j, s) in enumerate(zip(idx, scores))]
    for i, j in enumerate(idx):
        save_npy(os.path.join(a.out, f"top_{i}.npy"), poses[j])
        save_png(os.path.join(a.out, f"top_{i}.png"), image_grid(images[i:i + 1], labels[i:i + 1], pad=0))
    save_png(os.path.join(a.out, "strip.png"), image_grid(images, labels, cols=len(images)))
    dedup = dict(pre_topk=pre_topk, threshold=threshold) if a.dedup else None
    report = dict(text=a.text, query=query, codebook=os.path.abspath(a.codebook), clip=clip.path, dedup=dedup,
                  results=[dict(rank=i, file=f"top_{i}.npy", codebook_index=int(j), score=float(s))
                           for i, (j, s) in enumerate(zip(idx, scores))])
    save_text(os.path.join(a.out, "scores.json"), json.dumps(report, indent=2))
    stale = len(idx)
    while os.path.exists(os.path.join(a.out, f"top_{stale}.npy")):  # from an earlier run with a larger topk
        for ext in ("npy", "png"):
            if os.path.exists(os.path.join(a.out, f"top_{stale}.{ext}")):
                os.remove(os.path.join(a.out, f"top_{stale}.{ext}"))
        stale += 1
    for line in labels:
        print(line)
    if len(idx) < a.topk:
        print(f"only {len(idx)} distinct poses among the {min(pre_topk, len(poses))} best; raise --pre_topk "
              f"or lower --dedup_threshold for more")
    print(f"wrote {len(idx)} poses, renders, strip.png and scores.json to {a.out}")


if __name__ == "__main__":
    main()
