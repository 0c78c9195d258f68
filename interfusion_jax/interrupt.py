"""Stopping a training loop cleanly on Ctrl-C (SIGINT) or SIGTERM.

The first signal asks the loop to stop after its current step (it then saves a checkpoint and
says how to resume); a second one quits at once. Signals are read by a watcher thread through
signal.set_wakeup_fd, so the second one acts even while the main thread is inside a long
compilation or device call, where Python-level handlers would wait for it to return.
"""
import os
import signal
import sys
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)
EXIT_STATUS = {signal.SIGINT: 130, signal.SIGTERM: 143}


class StopRequest:
    """Context manager; `.signal` is the first signal received (None until then)."""

    def __init__(self, message="stopping after this step to save a checkpoint "
                               "(press Ctrl-C again to quit at once)"):
        self.signal = None
        self._message = message

    def __enter__(self):
        self._read, write = os.pipe()
        os.set_blocking(write, False)
        self._previous_fd = signal.set_wakeup_fd(write)
        self._write = write
        self._previous = {s: signal.signal(s, lambda *_: None) for s in SIGNALS}
        self._watcher = threading.Thread(target=self._watch, daemon=True)
        self._watcher.start()
        return self

    def _watch(self):
        while True:
            data = os.read(self._read, 1)
            if not data:  # the pipe was closed by __exit__
                return
            number = data[0]
            if self.signal is None:
                self.signal = signal.Signals(number)
                print(f"\n[interfusion] {self.signal.name}: {self._message}", file=sys.stderr,
                      flush=True)
            else:
                print(f"\n[interfusion] {signal.Signals(number).name} again: quitting now",
                      file=sys.stderr, flush=True)
                os._exit(EXIT_STATUS.get(self.signal, 130))

    @property
    def exit_status(self):
        return EXIT_STATUS.get(self.signal, 1)

    def __exit__(self, *exc):
        signal.set_wakeup_fd(self._previous_fd)
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        os.close(self._write)
        self._watcher.join(timeout=1.0)
        os.close(self._read)
