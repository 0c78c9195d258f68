"""A run's training log: metrics.jsonl rows and TensorBoard event files, side by side.

Every `train.log_every` steps one row: the step's metrics, and over the steps since the last row
the worst sampler truncation per render, the steps that cut rays before they were opaque and the
skipped (non-finite) steps. The same figures go to TensorBoard (tensorboardX, no TensorFlow) as
scalars, per render and per view where they have one, with steps per second; validation sheets go
there as images. A resumed run drops the rows (and TensorBoard events) of the steps it will redo.
"""
import json
import os

import jax
import numpy as np
from tensorboardX import SummaryWriter

# Figures with one value per render, in the training step's view order.
PER_VIEW = ("object", "human", "interaction", "head")


def _rows_before(path, step):
    """Keep only the rows of metrics.jsonl (`path`) before `step`; a torn last line is dropped."""
    if not os.path.isfile(path):
        return
    kept = []
    with open(path) as f:
        for line in f:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                break
            if row.get("step", step) >= step:
                break
            kept.append(line)
    with open(path, "w") as f:
        f.writelines(kept)


def window_summary(window):
    """Figures over the steps since the last row; window: one dict per step with the step's
    truncated_rays, open_truncated_rays [4] and skipped []."""
    cut = {k: np.stack([np.asarray(w[k]) for w in jax.device_get(window)]) for k in window[0]}
    return dict(window_steps=len(window),
                truncated_rays_max=cut["truncated_rays"].max(0).tolist(),
                open_truncated_rays_max=cut["open_truncated_rays"].max(0).tolist(),
                open_truncated_steps=int(np.sum(np.any(cut["open_truncated_rays"] > 0, axis=1))),
                skipped_steps=int(np.sum(cut["skipped"])))


class RunLog:
    """metrics.jsonl and TensorBoard events under `run_dir`, continuing from `first_step`."""

    def __init__(self, run_dir, first_step):
        path = os.path.join(run_dir, "metrics.jsonl")
        _rows_before(path, first_step)
        self._rows = open(path, "a")
        self._board = SummaryWriter(os.path.join(run_dir, "tensorboard"), purge_step=first_step)

    def row(self, step, metrics, window, steps_per_second=None):
        """Write one row (metrics: the step's, as device arrays; window: see window_summary);
        returns it as a dict of plain numbers and lists."""
        row = {"step": step}
        for k, v in jax.device_get(metrics).items():
            v = np.asarray(v)
            row[k] = v.item() if v.size == 1 else v.tolist()
        row.update(window_summary(window))
        if steps_per_second is not None:
            row["steps_per_second"] = steps_per_second
        self._rows.write(json.dumps(row) + "\n")
        self._rows.flush()
        for k, v in row.items():
            if k == "step":
                continue
            if isinstance(v, list) and len(v) == len(PER_VIEW):
                for name, x in zip(PER_VIEW, v):
                    self._board.add_scalar(f"{k}/{name}", x, step)
            elif isinstance(v, (int, float)):
                self._board.add_scalar(k, v, step)
        return row

    def image(self, tag, step, image):
        """A uint8 [H, W, 3] image."""
        self._board.add_image(tag, np.asarray(image), step, dataformats="HWC")

    def close(self):
        self._rows.close()
        self._board.close()
