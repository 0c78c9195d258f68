"""Where a run's time goes: wall time per phase (build, first step, steps, validation,
checkpoints, test videos, metrics, meshes), written to RUN_DIR/timings.json and summed up in the
run's last line; and on request a profiler trace of a few training steps (RUN_DIR/profile)."""
import contextlib
import json
import time

import jax

from ifcommon import save_text

PROFILE_STEPS = 5


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


class StepProfile:
    """A jax.profiler trace of the training steps [at, at + PROFILE_STEPS) in `folder`, with a
    Perfetto file (TensorBoard's profile plugin reads the folder too); at 0: none. The loop
    calls `before_step` before it dispatches each step and `close` when it ends."""

    def __init__(self, folder, at):
        self.folder, self.at, self.active = folder, at, False

    def before_step(self, step, state):
        if self.at and step == self.at:
            # Without Python's function calls: they are most of a step's events, and the
            # Perfetto file keeps the first million.
            options = jax.profiler.ProfileOptions()
            options.python_tracer_level = 0
            jax.profiler.start_trace(self.folder, create_perfetto_trace=True,
                                     profiler_options=options)
            self.active = True
        elif step == self.at + PROFILE_STEPS:
            self.close(state)

    def close(self, state):
        """Stop the trace, if on, once `state` (the last traced step's output) is computed."""
        if self.active:
            self.active = False
            try:
                jax.block_until_ready(state)
            finally:
                jax.profiler.stop_trace()
