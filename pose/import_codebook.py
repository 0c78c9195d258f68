"""Convert the release's `codebook.pth` (a torch pickle of `codebook` [K, 63] and
`codebook_embedding` [K, 512]) to this project's codebook `.npz`. Needs torch, once."""
import argparse

import numpy as np

from ifcommon import command_line
from pose import codebook as cb


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m pose.import_codebook", description=__doc__)
    p.add_argument("--in", dest="src", required=True, help="the release's codebook.pth")
    p.add_argument("--out", required=True, help="codebook .npz to write")
    return p.parse_args(argv)


def read_release_codebook(path):
    try:
        import torch
    except ImportError as e:
        raise cb.PoseStageError(f"reading {path} needs torch: `pip install torch --index-url "
                                f"https://download.pytorch.org/whl/cpu`, then rerun") from e
    data = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(data, dict) or not {"codebook", "codebook_embedding"} <= set(data):
        raise cb.PoseStageError(f"--in {path}: expected a dict with 'codebook' [K, 63] and "
                                "'codebook_embedding' [K, 512]")
    return (np.asarray(data["codebook"].float().numpy()), np.asarray(data["codebook_embedding"].float().numpy()))


@command_line
def main(argv=None):
    a = parse_args(argv)
    poses, features = read_release_codebook(a.src)
    if poses.ndim != 2 or poses.shape[1] != 63 or features.shape[:1] != poses.shape[:1]:
        raise cb.PoseStageError(f"--in {a.src}: codebook {poses.shape}, codebook_embedding {features.shape}; "
                                f"expected [K, 63] and [K, D]")
    meta = dict(settings=dict(source=a.src), clustering="vposer (release)", body_name="SMPL-X (release)",
                clip_embed_dim=int(features.shape[1]),
                features="OpenAI CLIP ViT-B/32 encode_image, mean over 4 views (release)")
    cb.save_codebook(a.out, poses, features, meta)
    print(f"wrote {a.out}: poses {poses.shape}, features {features.shape}")


if __name__ == "__main__":
    main()
