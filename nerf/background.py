"""Per-field background: an MLP on the view direction (docs/method.md §2.2, threestudio's
`neural-environment-map-background`).

Encoding: tiny-cuda-nn's `SphericalHarmonics`, whose `degree` d gives d² real SH coefficients
(bands l < d); the release config says degree 3, i.e. 9 coefficients. threestudio feeds tcnn
(d + 1) / 2 and tcnn maps it back with 2·v − 1, so the basis is evaluated on the direction itself,
which is what `sh_encoding` does. MLP: 16 → ReLU → 16 → ReLU → 3 → sigmoid, without biases
(threestudio's VanillaMLP and tcnn's fused MLPs have none), torch's default weight init.
"""
import flax.linen as nn
import jax.numpy as jnp

from nerf.field import MLP

MAX_SH_DEGREE = 4


def sh_encoding(dirs, degree=3):
    """Real spherical harmonics of tcnn's sign and order convention: dirs [R,3] -> [R, degree²]."""
    if not 1 <= degree <= MAX_SH_DEGREE:
        raise ValueError(f"nerf.background: sh degree {degree}; expected 1..{MAX_SH_DEGREE}")
    x, y, z = dirs[..., 0], dirs[..., 1], dirs[..., 2]
    x2, y2, z2 = x * x, y * y, z * z
    bands = [
        [0.28209479177387814 * jnp.ones_like(x)],
        [-0.48860251190291987 * y, 0.48860251190291987 * z, -0.48860251190291987 * x],
        [1.0925484305920792 * x * y, -1.0925484305920792 * y * z,
         0.94617469575755997 * z2 - 0.31539156525251999, -1.0925484305920792 * x * z,
         0.54627421529603959 * (x2 - y2)],
        [0.59004358992664352 * y * (-3.0 * x2 + y2), 2.8906114426405538 * x * y * z,
         0.45704579946446572 * y * (1.0 - 5.0 * z2), 0.3731763325901154 * z * (5.0 * z2 - 3.0),
         0.45704579946446572 * x * (1.0 - 5.0 * z2), 1.4453057213202769 * z * (x2 - y2),
         0.59004358992664352 * x * (-x2 + 3.0 * y2)],
    ]
    return jnp.stack([c for band in bands[:degree] for c in band], axis=-1)


class Background(nn.Module):
    sh_degree: int = 3
    hidden: int = 16
    n_hidden_layers: int = 2

    @nn.compact
    def __call__(self, dirs):
        """dirs [R,3] unit view directions -> rgb [R,3] in (0,1)."""
        h = MLP(self.hidden, 3, self.n_hidden_layers)(sh_encoding(dirs, self.sh_degree))
        return nn.sigmoid(h)
