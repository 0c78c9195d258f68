"""The implicit volume of one field (docs/method.md §2.2, threestudio's `implicit-volume`).

Points x in scene coordinates inside the box [−r, r]^3 are mapped to [0,1]^3 by (x + r) / (2r),
encoded by the hash grid, and read by two MLPs (encoding → 64 → ReLU → 1 for density,
→ 3 for albedo features). The MLPs have no biases: threestudio's VanillaMLP and tcnn's
FullyFusedMLP, which the release uses, have none; weights use torch's default init
U(±1/sqrt(fan_in)). Density = softplus(raw + b(x)) with the "blob_magic3d" bias
b(x) = blob_density · (1 − ‖x‖ / blob_radius) on the scene-space point. Albedo = sigmoid(features).
Normals are −∇ of the pre-activation density, normalised: softplus is increasing, so the direction
equals that of −∇density, and the raw gradient does not vanish where softplus saturates (threestudio
does the same).

Renderers use the pure callables from `make_density_fn` / `make_radiance_fn`; evaluation on
grids and mesh vertices uses the compiled `field_density` / `field_albedo`.
"""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from nerf.hash_grid import HashGridEncoding
from nerf.material import shade

# torch.nn.Linear's default (kaiming_uniform with a = sqrt(5)) is U(±1/sqrt(fan_in)).
TORCH_LINEAR_INIT = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


class MLP(nn.Module):
    """`n_hidden_layers` × (Dense(hidden, no bias) → ReLU) → Dense(out, no bias)."""
    hidden: int
    out: int
    n_hidden_layers: int = 1

    @nn.compact
    def __call__(self, h):
        for _ in range(self.n_hidden_layers):
            h = nn.relu(nn.Dense(self.hidden, use_bias=False, kernel_init=TORCH_LINEAR_INIT)(h))
        return nn.Dense(self.out, use_bias=False, kernel_init=TORCH_LINEAR_INIT)(h)


def safe_normalize(v):
    """v / ‖v‖ over the last axis; a zero vector stays zero (finite value and gradient)."""
    return v * jax.lax.rsqrt(jnp.maximum(jnp.sum(v * v, -1, keepdims=True), 1e-24))


class ImplicitVolume(nn.Module):
    radius: float = 2.0
    n_levels: int = 16
    n_features_per_level: int = 2
    log2_hashmap_size: int = 19
    base_resolution: int = 16
    per_level_scale: float = 1.4472692374403782
    mlp_hidden: int = 64
    blob_density: float = 10.0
    blob_radius: float = 0.5

    def setup(self):
        self.encoding = HashGridEncoding(self.n_levels, self.n_features_per_level,
                                         self.log2_hashmap_size, self.base_resolution,
                                         self.per_level_scale)
        self.density_mlp = MLP(self.mlp_hidden, 1)
        self.feature_mlp = MLP(self.mlp_hidden, 3)

    def raw(self, x):
        """x [N,3] scene points -> (pre-softplus density [N], albedo features [N,3])."""
        enc = self.encoding((x + self.radius) / (2.0 * self.radius))
        # Guarded norm: finite gradient (zero) at the origin, where the plain norm's is NaN.
        norm = jnp.sqrt(jnp.maximum(jnp.sum(x * x, axis=-1), 1e-20))
        bias = self.blob_density * (1.0 - norm / self.blob_radius)
        return self.density_mlp(enc)[:, 0] + bias, self.feature_mlp(enc)

    def __call__(self, x):
        """x [N,3] -> dict(density [N], albedo [N,3])."""
        raw, features = self.raw(x)
        return dict(density=jax.nn.softplus(raw), albedo=jax.nn.sigmoid(features))

    def density(self, x):
        """x [N,3] -> density [N]."""
        return jax.nn.softplus(self.raw(x)[0])


def field_outputs(field, params, x):
    """Density [N], albedo [N,3] and analytic normal [N,3] from one forward and one backward pass.

    Each output depends only on its own point, so the vector-Jacobian product with ones is the
    per-point gradient.
    """
    raw_density, vjp_fn, features = jax.vjp(
        lambda x: field.apply(params, x, method=ImplicitVolume.raw), x, has_aux=True)
    (grad,) = vjp_fn(jnp.ones_like(raw_density))
    return dict(density=jax.nn.softplus(raw_density), albedo=jax.nn.sigmoid(features),
                normal=safe_normalize(-grad))


def make_density_fn(field):
    """-> density_fn(params, x [N,3]) -> [N]."""
    def density_fn(params, x):
        return field.apply(params, x, method=ImplicitVolume.density)
    return density_fn


# Weights enter these as an argument: jitted closures over them compile the 2^19-entry hash tables
# in as constants (seconds a call) and share nothing between the two fields or across runs.
@functools.partial(jax.jit, static_argnums=0)
def field_density(field, params, x):
    """density [N] of `field` (an ImplicitVolume) with `params` at x [N,3], compiled once per
    field settings and shape."""
    return make_density_fn(field)(params, x)


@functools.partial(jax.jit, static_argnums=0)
def field_albedo(field, params, x):
    """albedo [N,3] in [0,1] of `field` with `params` at x [N,3] (as field_density)."""
    return field.apply(params, x)["albedo"]


def make_radiance_fn(field):
    """-> radiance_fn(params, x [N,3], d [N,3], shading) -> dict(density [N], rgb [N,3],
    normal [N,3], albedo [N,3]). The material is view-independent, so `d` is unused; it is in the
    signature for the renderer's sake."""
    def radiance_fn(params, x, d, shading):
        del d
        out = field_outputs(field, params, x)
        out["rgb"] = shade(shading, out["albedo"], out["normal"], x)
        return out
    return radiance_fn


def field_from_config(cfg):
    """ImplicitVolume from the `field` config block (configs/base.py)."""
    return ImplicitVolume(radius=cfg.radius, n_levels=cfg.n_levels,
                          n_features_per_level=cfg.n_features_per_level,
                          log2_hashmap_size=cfg.log2_hashmap_size,
                          base_resolution=cfg.base_resolution, per_level_scale=cfg.per_level_scale,
                          mlp_hidden=cfg.mlp_hidden, blob_density=cfg.blob_density,
                          blob_radius=cfg.blob_radius)
