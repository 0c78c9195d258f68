"""VPoser V02_05 (human_body_prior) in Flax, inference only: BatchNorm with running statistics,
dropout off. Layer names mirror the PyTorch `nn.Sequential` indices of the published checkpoint
(`encoder_net.1` -> `encoder_net_1`) so the converter is a mechanical rename.

Weights: the published `V02_05/snapshots/V02_05_epoch=13_val_loss=0.03.ckpt` (a PyTorch Lightning
checkpoint) is converted once, where torch is importable, with `convert_vposer_checkpoint` to an
`.npz` holding its `vp_model.*` tensors (prefix stripped, PyTorch names); `load_vposer` reads that
`.npz` without torch (or the `.ckpt` directly when torch is there).
"""
import dataclasses
import functools
import glob
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ifcommon import UserError, atomic_savez, command_line
from body.rotations import matrix_to_axis_angle, rot6d_to_matrix

_BN = ("encoder_net.1", "encoder_net.4")
_LINEAR = ("encoder_net.2", "encoder_net.6", "encoder_net.7", "encoder_net.8.mu", "encoder_net.8.logvar",
           "decoder_net.0", "decoder_net.3", "decoder_net.5")
EXPECTED_KEYS = frozenset(
    [f"{m}.{p}" for m in _BN for p in ("weight", "bias", "running_mean", "running_var")]
    + [f"{m}.{p}" for m in _LINEAR for p in ("weight", "bias")])
_INSTALL_TORCH = ("reading a PyTorch checkpoint needs torch: `pip install torch --index-url "
                  "https://download.pytorch.org/whl/cpu` (and `pip install omegaconf` for the Lightning "
                  "hyper-parameters), or convert it on a machine that has them with "
                  "`python -m pose.vposer CKPT OUT.npz`")


class VPoser(nn.Module):
    """VPoser V02_05; sizes are read from the checkpoint (512 neurons, 32-d latent, 21 joints)."""

    num_neurons: int = 512
    latent_dim: int = 32
    num_joints: int = 21

    def setup(self):
        bn = functools.partial(nn.BatchNorm, use_running_average=True, epsilon=1e-5, momentum=0.9)
        self.encoder_net_1 = bn()
        self.encoder_net_2 = nn.Dense(self.num_neurons)
        self.encoder_net_4 = bn()
        self.encoder_net_6 = nn.Dense(self.num_neurons)
        self.encoder_net_7 = nn.Dense(self.num_neurons)
        self.encoder_net_8_mu = nn.Dense(self.latent_dim)
        self.encoder_net_8_logvar = nn.Dense(self.latent_dim)
        self.decoder_net_0 = nn.Dense(self.num_neurons)
        self.decoder_net_3 = nn.Dense(self.num_neurons)
        self.decoder_net_5 = nn.Dense(self.num_joints * 6)

    def encode(self, pose):
        """pose [N, 63] axis-angle -> (mean [N, L], scale [N, L]) of the posterior Normal."""
        h = self.encoder_net_2(self.encoder_net_1(pose))
        h = self.encoder_net_4(nn.leaky_relu(h, 0.01))
        h = self.encoder_net_7(self.encoder_net_6(h))
        return self.encoder_net_8_mu(h), nn.softplus(self.encoder_net_8_logvar(h))

    def decode_matrot(self, z):
        """z [N, L] -> rotation matrices [N, 21, 3, 3] (6D per joint -> Gram-Schmidt)."""
        h = nn.leaky_relu(self.decoder_net_0(z), 0.01)
        h = nn.leaky_relu(self.decoder_net_3(h), 0.01)
        return rot6d_to_matrix(self.decoder_net_5(h).reshape(z.shape[0], self.num_joints, 6))

    def decode(self, z):
        """z [N, L] -> pose [N, 63] axis-angle."""
        return matrix_to_axis_angle(self.decode_matrot(z)).reshape(z.shape[0], -1)

    def __call__(self, pose):
        return self.decode(self.encode(pose)[0])


@dataclasses.dataclass(frozen=True)
class VPoserModel:
    module: VPoser
    variables: dict
    path: str

    def encode_mean(self, poses) -> jax.Array:
        """[N, 63] -> posterior means [N, L]."""
        return _encode_mean(self.module, self.variables, jnp.asarray(poses, jnp.float32))

    def decode(self, z) -> jax.Array:
        """[N, L] -> [N, 63] axis-angle."""
        return _apply(self.module, self.variables, jnp.asarray(z, jnp.float32), VPoser.decode)

    def decode_matrot(self, z) -> jax.Array:
        """[N, L] -> [N, 21, 3, 3]."""
        return _apply(self.module, self.variables, jnp.asarray(z, jnp.float32), VPoser.decode_matrot)


@functools.partial(jax.jit, static_argnums=0)
def _encode_mean(module, variables, poses):
    return module.apply(variables, poses, method=VPoser.encode)[0]


@functools.partial(jax.jit, static_argnums=(0, 3))
def _apply(module, variables, x, method):
    return module.apply(variables, x, method=method)


def check_state_dict(state_dict, source) -> dict:
    """Keep VPoser's tensors (Lightning's `vp_model.` prefix stripped, `num_batches_tracked` dropped)
    and fail naming `source` if the layer names are not VPoser V02_05's."""
    prefixed = any(k.startswith("vp_model.") for k in state_dict)
    sd = {(k[len("vp_model."):] if prefixed else k): np.asarray(v, np.float32) for k, v in state_dict.items()
          if (k.startswith("vp_model.") or not prefixed) and not k.endswith("num_batches_tracked")}
    missing, unexpected = sorted(EXPECTED_KEYS - sd.keys()), sorted(sd.keys() - EXPECTED_KEYS)
    if missing or unexpected:
        raise ValueError(f"{source}: not a VPoser V02_05 state dict; missing {missing[:6]}, unexpected "
                         f"{unexpected[:6]} (expected human_body_prior's encoder_net.1/2/4/6/7/8.mu/8.logvar, "
                         f"decoder_net.0/3/5)")
    return sd


def variables_from_state_dict(sd):
    """PyTorch-named VPoser tensors -> (VPoser module, Flax variables)."""
    module = VPoser(num_neurons=sd["encoder_net.2.weight"].shape[0], latent_dim=sd["encoder_net.8.mu.weight"].shape[0],
                    num_joints=sd["decoder_net.5.weight"].shape[0] // 6)
    params, stats = {}, {}
    for name in _LINEAR:
        params[name.replace(".", "_")] = {"kernel": sd[f"{name}.weight"].T, "bias": sd[f"{name}.bias"]}
    for name in _BN:
        params[name.replace(".", "_")] = {"scale": sd[f"{name}.weight"], "bias": sd[f"{name}.bias"]}
        stats[name.replace(".", "_")] = {"mean": sd[f"{name}.running_mean"], "var": sd[f"{name}.running_var"]}
    variables = {"params": params, "batch_stats": stats}
    want = jax.eval_shape(lambda: module.init(jax.random.key(0), jnp.zeros((1, 63))))
    got_shapes = jax.tree.map(np.shape, variables)
    want_shapes = jax.tree.map(lambda s: s.shape, want)
    if got_shapes != want_shapes:
        raise ValueError(f"VPoser tensor shapes are inconsistent with one another: {got_shapes}")
    return module, jax.tree.map(jnp.asarray, variables)


def _torch_state_dict(ckpt):
    try:
        import torch
    except ImportError as e:
        raise ImportError(f"{ckpt}: {_INSTALL_TORCH}") from e
    try:
        obj = torch.load(ckpt, map_location="cpu", weights_only=True)
    except Exception:  # Lightning pickles its hyper-parameters (OmegaConf); the file is a trusted download
        obj = torch.load(ckpt, map_location="cpu", weights_only=False)
    sd = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if sd is None:
        raise ValueError(f"{ckpt}: expected a PyTorch Lightning checkpoint dict with a 'state_dict'")
    return {k: v.detach().cpu().float().numpy() for k, v in sd.items() if hasattr(v, "numpy")}


def convert_vposer_checkpoint(ckpt, out):
    """The published Lightning `.ckpt` -> `.npz` of VPoser tensors (PyTorch names). Needs torch."""
    sd = check_state_dict(_torch_state_dict(ckpt), ckpt)
    atomic_savez(out, **sd)
    return out


def _resolve(path):
    """A converted `.npz`, a `.ckpt`, or a V02_05 folder (its `.npz`, else its newest snapshot)."""
    if os.path.isdir(path):
        found = sorted(glob.glob(os.path.join(path, "*.npz"))) or sorted(
            glob.glob(os.path.join(path, "snapshots", "*.ckpt")), key=os.path.getmtime)[-1:]
        if not found:
            raise FileNotFoundError(f"VPoser folder {path!r} holds neither a converted .npz nor "
                                    f"snapshots/*.ckpt (the V02_05 download from https://smpl-x.is.tue.mpg.de)")
        return found[0]
    if not os.path.isfile(path):
        raise FileNotFoundError(f"VPoser weights {path!r} not found (expected the V02_05 folder from "
                                f"https://smpl-x.is.tue.mpg.de, its snapshots/*.ckpt, or a converted .npz)")
    return path


def load_vposer(path) -> VPoserModel:
    path = _resolve(path)
    if path.endswith(".npz"):
        with np.load(path) as f:
            sd = check_state_dict(dict(f), path)
    else:
        sd = check_state_dict(_torch_state_dict(path), path)
    module, variables = variables_from_state_dict(sd)
    return VPoserModel(module=module, variables=variables, path=os.path.abspath(path))


@command_line
def main(argv=None):
    import argparse

    p = argparse.ArgumentParser(prog="python -m pose.vposer",
                                description="Convert the published VPoser V02_05 .ckpt to a torch-free .npz.")
    p.add_argument("ckpt", help="V02_05/snapshots/V02_05_epoch=13_val_loss=0.03.ckpt")
    p.add_argument("out", help="output .npz (put it in the V02_05 folder to pass the folder as --vposer)")
    a = p.parse_args(argv)
    try:
        print("wrote", convert_vposer_checkpoint(a.ckpt, a.out))
    except ValueError as e:  # a file that is not a VPoser checkpoint
        raise UserError(str(e)) from None


if __name__ == "__main__":
    main()
