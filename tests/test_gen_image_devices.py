"""pose.gen_image across devices and processes, on CPU with the tiny IF cascade (random UNets of
tests/fixtures/if_unet, T5 of tests/fixtures/t5): one process on 4 devices, then a resume by two processes
of one device each, launched as a two-task SLURM step on this host, must write the same PNG bytes; the
process with nothing left to draw is process 0, whose coordination service the other needs to the end.

Equal to the bit because every device runs one image per batch in both runs (--batch_size 1); the
global batch (4, padded, against 1) and the device count differ. Other per-device batch sizes agree
only up to float rounding, which the random UNets amplify over the steps, so they are not compared.

The command line runs as `python -m pose.gen_image` does, but for the cascade's step counts: IF's
100 + 50 steps are cut to STEPS (the sampling loop and its per-step noise are the same code for any
count; the device, batch and process logic under test does not depend on it)."""

import os
import shutil
import socket
import subprocess
import sys

from test_sampling import FIXTURES, _unet_for_t5

from pose.gen_image import image_name

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PHRASES = ["riding a bike", "playing a drum", "lifting a box", "reading a book"]
N = 3
STEPS = (STAGE1_STEPS, STAGE2_STEPS) = (20, 10)
# `python -m pose.gen_image ARGS` with sampling.iter_images's step counts set to STEPS.
LAUNCH = f"""
import functools, runpy
from guidance import sampling
sampling.iter_images = functools.partial(sampling.iter_images, stage1_steps={STAGE1_STEPS},
                                         stage2_steps={STAGE2_STEPS})
runpy.run_module("pose.gen_image", run_name="__main__", alter_sys=True)
"""


def _tiny_cascade(root):
    stage1, stage2 = root / "IF-I", root / "IF-II"
    _unet_for_t5(os.path.join(FIXTURES, "if_unet", "stage1", "unet"), str(stage1 / "unet"))
    _unet_for_t5(os.path.join(FIXTURES, "if_unet", "stage2", "unet"), str(stage2 / "unet"))
    for sub in ("text_encoder", "tokenizer"):
        shutil.copytree(os.path.join(FIXTURES, "t5", sub), stage1 / sub)
    return stage1, stage2


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_same_images_on_4_devices_and_on_2_processes_resuming(tmp_path):
    stage1, stage2 = _tiny_cascade(tmp_path)
    prompts = tmp_path / "phrases.txt"
    prompts.write_text("\n".join(PHRASES) + "\n")
    out = tmp_path / "images"
    argv = [sys.executable, "-c", LAUNCH, "--prompts", str(prompts), "--out", str(out), "--if_stage1",
            str(stage1), "--if_stage2", str(stage2), "--num_images_per_text", str(N), "--batch_size", "1"]
    # The prompt-embedding cache goes under tmp_path; no launcher variables from a job running the tests.
    # XLA:CPU splits loops over max(PJRT_NPROC or the core count, devices) threads, and the split moves
    # the last bits: pinning it leaves the device count the only difference between the runs.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "OMPI_", "JAX_COORDINATOR"))}
    env.update(JAX_PLATFORMS="cpu", PJRT_NPROC="4", HOME=str(tmp_path), XDG_CACHE_HOME=str(tmp_path / "cache"))

    r = subprocess.run(argv, env={**env, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}, cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    names = [image_name(p, i) for p in PHRASES for i in range(N)]
    first = {name: (out / name).read_bytes() for name in names}
    assert len(set(first.values())) == len(names)  # no two images alike: the comparison below means something

    # Process 0 owns phrases 0 and 2, both complete; process 1 owns phrases 1, all of whose images are
    # gone, and 3, of which one is.
    for name in names[N:2 * N] + [names[3 * N + 1]]:
        os.remove(out / name)
    kept = {name: os.stat(out / name).st_mtime_ns for name in names if (out / name).exists()}
    slurm = dict(SLURM_JOB_ID="1", SLURM_STEP_NODELIST="localhost", SLURM_NTASKS="2",
                 JAX_COORDINATOR_PORT=str(_free_port()), XLA_FLAGS="--xla_force_host_platform_device_count=1")
    procs = [subprocess.Popen(argv, env={**env, **slurm, "SLURM_PROCID": str(k), "SLURM_LOCALID": str(k)}, cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for k in range(2)]
    results = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, results):
        assert p.returncode == 0, err
    assert f"process 0 of 2: 2 phrases, 0 images written, {2 * N} already there" in results[0][0]
    assert f"process 1 of 2: 2 phrases, {N + 1} images written, {N - 1} already there" in results[1][0]
    for name in names:
        assert (out / name).read_bytes() == first[name], name
    assert {name: os.stat(out / name).st_mtime_ns for name in kept} == kept
