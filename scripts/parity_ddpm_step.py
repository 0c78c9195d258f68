"""Reference steps of diffusers' PyTorch DDPMScheduler for guidance/sampling.py's ddpm_step.

Run with `.venv-ref/bin/python scripts/parity_ddpm_step.py`; writes tests/fixtures/ddpm_step/reference.npz:
for IF's scheduler settings (learned_range variance, dynamic thresholding) and a plain one (fixed_small,
clipping), the timesteps of a 10-step run and one step from each of them with random model outputs, plus
the variance noise the scheduler drew (re-drawn here from the same generator seed); and the scheduler's
alphas_cumprod (squaredcos_cap_v2, 1000 steps) for guidance.sds.ddpm_alphas_cumprod.
"""

import json
import os

import numpy as np
import torch
from diffusers import DDPMScheduler

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "ddpm_step")
CONFIGS = {
    "if": dict(beta_schedule="squaredcos_cap_v2", variance_type="learned_range", thresholding=True,
               dynamic_thresholding_ratio=0.95, sample_max_value=1.5, clip_sample=True),
    "plain": dict(beta_schedule="squaredcos_cap_v2", variance_type="fixed_small", thresholding=False,
                  clip_sample=True),
}
STEPS = 10


def main():
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = {}
    for name, config in CONFIGS.items():
        scheduler = DDPMScheduler(num_train_timesteps=1000, **config)
        scheduler.set_timesteps(STEPS)
        arrays[f"{name}_timesteps"] = scheduler.timesteps.numpy()
        channels = 6 if config["variance_type"] == "learned_range" else 3
        samples, outputs, noises, results = [], [], [], []
        for i, t in enumerate(scheduler.timesteps):
            sample = torch.from_numpy(rng.normal(size=(2, 3, 8, 8)).astype(np.float32) * 1.5)
            output = torch.from_numpy(rng.normal(size=(2, channels, 8, 8)).astype(np.float32))
            if channels == 6:
                output[:, 3:] = torch.tanh(output[:, 3:])  # the variance interpolant lies in [-1, 1]
            result = scheduler.step(output, t, sample, generator=torch.Generator().manual_seed(i)).prev_sample
            noise = torch.randn(sample.shape, generator=torch.Generator().manual_seed(i))
            for store, value in ((samples, sample), (outputs, output), (noises, noise), (results, result)):
                store.append(value.numpy().transpose(0, 2, 3, 1))  # NCHW -> NHWC
        for key, values in (("sample", samples), ("output", outputs), ("noise", noises), ("result", results)):
            arrays[f"{name}_{key}"] = np.stack(values)
    arrays["alphas_cumprod"] = scheduler.alphas_cumprod.numpy()
    arrays["configs"] = np.array(json.dumps(CONFIGS))
    np.savez_compressed(os.path.join(OUT, "reference.npz"), **arrays)
    print(f"wrote {OUT}/reference.npz ({os.path.getsize(os.path.join(OUT, 'reference.npz')) / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
