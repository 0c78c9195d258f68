"""Wall time per phase of a run (build, first step, steps, validation, checkpoints, test videos,
metrics, meshes), written to RUN_DIR/timings.json and summed up in the run's last line."""
import contextlib
import json
import time

from ifcommon import save_text


class PhaseTimer:
    """Seconds per phase, and for "steps" how many steps they cover."""

    def __init__(self):
        self.seconds, self.counts = {}, {}

    @contextlib.contextmanager
    def __call__(self, phase):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add(phase, time.perf_counter() - t0)

    def add(self, phase, seconds, count=1):
        self.seconds[phase] = self.seconds.get(phase, 0.0) + seconds
        self.counts[phase] = self.counts.get(phase, 0) + count

    def total(self):
        return sum(self.seconds.values())

    def summary(self):
        return ", ".join(f"{phase} {s:.1f} s" for phase, s in self.seconds.items())

    def save(self, path):
        """{"seconds": {phase: s}, "counts": {phase: n}} as JSON."""
        save_text(path, json.dumps({"seconds": self.seconds, "counts": self.counts}, indent=2))
