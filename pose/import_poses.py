"""Step 2: collect body poses from pose-estimator outputs into one `.npz` (`poses` [N, 63]
axis-angle, `names` [N]).

Reads PIXIE/ICON `.npy` dicts (6D pose), plain `.npy` of (63,), (1, 63) or (72,), and `.npz` pose
collections (`poses`), from files or folders (searched recursively); reports how many files were
read and which were skipped and why.
"""
import argparse
import os

import numpy as np
from tqdm import tqdm

from pose import codebook as cb
from ifcommon import command_line, atomic_savez


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m pose.import_poses", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--in", dest="inputs", nargs="+", required=True, help="pose files and/or folders")
    p.add_argument("--out", required=True, help="output .npz")
    return p.parse_args(argv)


def list_pose_files(inputs):
    """Files and folders -> sorted pose files (.npy/.npz), folders searched recursively."""
    files = []
    for src in inputs:
        if os.path.isdir(src):
            for root, _, names in os.walk(src):
                files += [os.path.join(root, n) for n in names if n.endswith((".npy", ".npz"))]
        elif os.path.isfile(src):
            files.append(src)
        else:
            raise FileNotFoundError(f"--in {src!r}: no such file or folder")
    return sorted(dict.fromkeys(files))


def import_poses(inputs):
    """-> (poses [N, 63] float32, names [N], skipped [(file, reason)])."""
    from body.pose_files import read_poses

    poses, names, skipped = [], [], []
    for path in tqdm(list_pose_files(inputs), desc="import poses", unit="file"):
        try:
            p = np.asarray(read_poses(path), np.float32).reshape(-1, 63)
        except Exception as e:  # one bad estimator output must not stop the import; it is reported
            skipped.append((path, str(e).splitlines()[0] if str(e) else type(e).__name__))
            continue
        if not np.isfinite(p).all():
            skipped.append((path, "non-finite values"))
            continue
        stem = os.path.splitext(os.path.basename(path))[0]
        names += [stem] if len(p) == 1 else [f"{stem}:{i}" for i in range(len(p))]
        poses.append(p)
    return (np.concatenate(poses) if poses else np.zeros((0, 63), np.float32)), names, skipped


@command_line
def main(argv=None):
    a = parse_args(argv)
    poses, names, skipped = import_poses(a.inputs)
    for path, reason in skipped:
        print(f"skipped {reason}" if reason.startswith(path) else f"skipped {path}: {reason}")
    if not len(poses):
        raise cb.PoseStageError(f"--in {' '.join(a.inputs)}: no readable pose file ({len(skipped)} skipped)")
    atomic_savez(a.out, poses=poses, names=np.array(names))
    n_files = len(list_pose_files(a.inputs)) - len(skipped)
    print(f"read {n_files} files ({len(poses)} poses), skipped {len(skipped)}; wrote {a.out}")


if __name__ == "__main__":
    main()
