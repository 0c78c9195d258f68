"""Ctrl-C handling of the training loop: the first signal asks to stop, a second quits at once,
even while the main thread is blocked inside a long call."""
import signal
import subprocess
import sys
import time

import pytest

BLOCKED = """
import sys, time
from interfusion_jax.interrupt import StopRequest
with StopRequest() as stop:
    print("ready", flush=True)
    t0 = time.time()
    while time.time() - t0 < 30 and stop.signal is None:
        time.sleep(0.01)
    print("stop requested:", stop.signal.name, stop.exit_status, flush=True)
    time.sleep(30)  # a long call: only a second signal ends it early
print("not reached", flush=True)
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_first_signal_requests_a_stop_second_quits_at_once(sig):
    proc = subprocess.Popen([sys.executable, "-c", BLOCKED], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(sig)
    status = {signal.SIGINT: 130, signal.SIGTERM: 143}[sig]
    assert proc.stdout.readline().strip() == f"stop requested: {sig.name} {status}"
    time.sleep(0.3)
    assert proc.poll() is None  # still running after the first signal
    t0 = time.time()
    proc.send_signal(sig)
    assert proc.wait(timeout=10) == status
    assert time.time() - t0 < 5
    out, err = proc.communicate()
    assert "not reached" not in out and "quitting now" in err and "Traceback" not in err
