"""Text-to-pose retrieval from a codebook (docs/method.md §1.4): CLIP text features of
"a rendered 3d man is <text>" against the codebook's pose features, best cosine score first,
with the release's optional near-duplicate filter."""
import numpy as np

from pose.codebook import PoseStageError

QUERY_TEMPLATE = "a rendered 3d man is {}"
# Retrieval's optional near-duplicate filter (off unless asked for, as in the release): it looks
# through the PRE_TOPK best-scoring poses and drops each one whose mean absolute difference (over
# the 63 axis-angle numbers) to a better-ranked kept pose is at most DEDUP_THRESHOLD.
PRE_TOPK = 40
DEDUP_THRESHOLD = 0.07


def cosine_scores(features, query):
    """features [K, D], query [D] -> [K] cosine similarities."""
    f = features / np.maximum(np.linalg.norm(features, axis=-1, keepdims=True), 1e-12)
    q = query / max(float(np.linalg.norm(query)), 1e-12)
    return f @ q


def suppress_near_duplicates(poses, threshold=DEDUP_THRESHOLD):
    """poses [N, 63] in rank order -> indices of the poses kept, in that order. Greedy, as the
    release's `suppress_duplicated_poses`: a pose is kept when its mean absolute difference to
    every pose kept before it exceeds `threshold`; the first pose is always kept."""
    poses = np.asarray(poses, np.float64).reshape(len(poses), -1)
    kept = []
    for i, pose in enumerate(poses):
        if not kept or np.abs(poses[kept] - pose).mean(axis=1).min() > threshold:
            kept.append(i)
    return np.asarray(kept, np.int64)


def retrieve(features, query, topk, poses=None, dedup_threshold=None, pre_topk=PRE_TOPK):
    """-> (indices, scores) of the codebook poses best matching `query`, in descending cosine score.

    Without `dedup_threshold`: the topk best. With it (needs the codebook `poses` [K, 63]): the
    release's optional near-duplicate filter (`suppress_near_duplicates`) runs over the pre_topk
    best (at most K) and the first topk survivors are returned; fewer when fewer survive.
    """
    k = len(features)
    if topk > k:
        raise PoseStageError(f"--topk {topk} is larger than the codebook ({k} poses)")
    scores = cosine_scores(np.asarray(features, np.float64), np.asarray(query, np.float64))
    order = np.argsort(-scores, kind="stable")
    if dedup_threshold is None:
        order = order[:topk]
    else:
        if poses is None or len(poses) != k:
            raise ValueError(f"retrieve: the near-duplicate filter needs the codebook's {k} poses")
        if pre_topk < topk:
            raise PoseStageError(f"--pre_topk {pre_topk} is smaller than --topk {topk}")
        order = order[:min(pre_topk, k)]
        order = order[suppress_near_duplicates(np.asarray(poses)[order], dedup_threshold)][:topk]
    return order, scores[order]
