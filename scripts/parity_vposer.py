"""Build the tiny random VPoser fixture (tests/fixtures/vposer/) with a PyTorch re-statement of
human_body_prior's VPoser V02_05 (same nn.Sequential layout, so the same state-dict names).

Run with the reference environment: `.venv-ref/bin/python scripts/parity_vposer.py`.
Writes `tiny.ckpt` (a Lightning-like checkpoint: `state_dict` with `vp_model.` keys, an unrelated
buffer, hyper-parameters), `tiny.npz` (its VPoser tensors as `convert_vposer_checkpoint` writes them)
and `reference.npz` (poses, posterior mean and scale, latents, decoded rotation matrices; the test
turns those into axis-angle with SciPy, an independent conversion).
"""
import os

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "vposer")
NEURONS, LATENT, JOINTS = 48, 32, 21


class BatchFlatten(nn.Module):
    def forward(self, x):
        return x.view(x.shape[0], -1)


class ContinousRotReprDecoder(nn.Module):
    def forward(self, x):
        x = x.view(-1, 3, 2)
        b1 = F.normalize(x[:, :, 0], dim=1)
        b2 = F.normalize(x[:, :, 1] - torch.sum(b1 * x[:, :, 1], dim=1, keepdim=True) * b1, dim=-1)
        return torch.stack([b1, b2, torch.cross(b1, b2, dim=1)], dim=-1)


class NormalDistDecoder(nn.Module):
    def __init__(self, n_in, latent):
        super().__init__()
        self.mu = nn.Linear(n_in, latent)
        self.logvar = nn.Linear(n_in, latent)

    def forward(self, x):
        return self.mu(x), F.softplus(self.logvar(x))


class VPoser(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder_net = nn.Sequential(
            BatchFlatten(), nn.BatchNorm1d(JOINTS * 3), nn.Linear(JOINTS * 3, NEURONS), nn.LeakyReLU(),
            nn.BatchNorm1d(NEURONS), nn.Dropout(0.1), nn.Linear(NEURONS, NEURONS), nn.Linear(NEURONS, NEURONS),
            NormalDistDecoder(NEURONS, LATENT))
        self.decoder_net = nn.Sequential(
            nn.Linear(LATENT, NEURONS), nn.LeakyReLU(), nn.Dropout(0.1), nn.Linear(NEURONS, NEURONS),
            nn.LeakyReLU(), nn.Linear(NEURONS, JOINTS * 6), ContinousRotReprDecoder())


def main():
    torch.manual_seed(0)
    os.makedirs(OUT, exist_ok=True)
    model = VPoser()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    model.eval()
    sd = {"vp_model." + k: v for k, v in model.state_dict().items()}
    sd["bm_train.init_pose_body"] = torch.zeros(1, 63)  # a non-VPoser buffer the converter must drop
    torch.save({"epoch": 13, "state_dict": sd, "hyper_parameters": {"latentD": LATENT}},
               os.path.join(OUT, "tiny.ckpt"))
    np.savez(os.path.join(OUT, "tiny.npz"), **{k: v.numpy().astype(np.float32) for k, v in model.state_dict().items()
                                               if not k.endswith("num_batches_tracked")})

    rng = np.random.default_rng(0)
    poses = rng.normal(0, 0.4, size=(8, JOINTS * 3)).astype(np.float32)
    z = rng.normal(0, 1, size=(8, LATENT)).astype(np.float32)
    with torch.no_grad():
        mean, scale = model.encoder_net(torch.from_numpy(poses))
        matrot = model.decoder_net(torch.from_numpy(z)).view(8, JOINTS, 3, 3).numpy()
    np.savez(os.path.join(OUT, "reference.npz"), poses=poses, mean=mean.numpy(), scale=scale.numpy(), z=z,
             matrot=matrot)
    print("wrote", OUT)


if __name__ == "__main__":
    main()
