"""Rotation conversions shared by the body model, pose files and VPoser (JAX, batched on leading axes).

Conventions: axis-angle vectors are [..., 3]; rotation matrices [..., 3, 3] act on column vectors;
the 6D representation is the first two columns of a rotation matrix laid out as a [..., 3, 2] array
flattened row-major to [..., 6] (PIXIE's and VPoser's layout).
"""
import jax.numpy as jnp

_EPS = 1e-8


def _normalize(v):
    return v / jnp.maximum(jnp.linalg.norm(v, axis=-1, keepdims=True), _EPS)


def skew(v):
    """[..., 3] -> [..., 3, 3] cross-product matrices."""
    x, y, z = v[..., 0], v[..., 1], v[..., 2]
    o = jnp.zeros_like(x)
    return jnp.stack([o, -z, y, z, o, -x, -y, x, o], axis=-1).reshape(v.shape[:-1] + (3, 3))


def axis_angle_to_matrix(aa):
    """Rodrigues' formula, [..., 3] -> [..., 3, 3]; smooth (Taylor form) at zero angle."""
    theta2 = jnp.sum(aa * aa, axis=-1)[..., None, None]
    small = theta2 < 1e-8
    safe2 = jnp.where(small, 1.0, theta2)
    theta = jnp.sqrt(safe2)
    a = jnp.where(small, 1.0 - theta2 / 6.0, jnp.sin(theta) / theta)
    b = jnp.where(small, 0.5 - theta2 / 24.0, (1.0 - jnp.cos(theta)) / safe2)
    k = skew(aa)
    eye = jnp.eye(3, dtype=aa.dtype)
    return eye + a * k + b * (k @ k)


def rot6d_to_matrix(x):
    """[..., 6] -> [..., 3, 3]: Gram-Schmidt on the two stored columns; third column = b1 x b2."""
    m = x.reshape(x.shape[:-1] + (3, 2))
    a1, a2 = m[..., 0], m[..., 1]
    b1 = _normalize(a1)
    b2 = _normalize(a2 - jnp.sum(b1 * a2, axis=-1, keepdims=True) * b1)
    b3 = jnp.cross(b1, b2)
    return jnp.stack([b1, b2, b3], axis=-1)


def matrix_to_rot6d(r):
    """[..., 3, 3] -> [..., 6], the inverse of `rot6d_to_matrix` on rotation matrices."""
    return r[..., :, :2].reshape(r.shape[:-2] + (6,))


def matrix_to_axis_angle(r):
    """[..., 3, 3] -> [..., 3], angle in [0, pi]; accurate near 0 and near pi.

    Away from pi the axis comes from the antisymmetric part; near pi that part vanishes, so the axis
    is read from the symmetric part, R + R^T = 2 cos I + 2 (1 - cos) n n^T, through the largest
    diagonal entry of n n^T, with its sign fixed by the antisymmetric part.
    """
    trace = r[..., 0, 0] + r[..., 1, 1] + r[..., 2, 2]
    cos = jnp.clip((trace - 1.0) / 2.0, -1.0, 1.0)
    vee = jnp.stack(
        [r[..., 2, 1] - r[..., 1, 2], r[..., 0, 2] - r[..., 2, 0], r[..., 1, 0] - r[..., 0, 1]], axis=-1
    )
    sin2 = jnp.linalg.norm(vee, axis=-1)  # 2 sin(theta)
    theta = jnp.arctan2(sin2, 2.0 * cos)

    small = theta < 1e-4
    factor = jnp.where(small, 0.5 + theta**2 / 12.0, theta / jnp.maximum(sin2, _EPS))
    aa_regular = vee * factor[..., None]

    eye = jnp.eye(3, dtype=r.dtype)
    sym = (r + jnp.swapaxes(r, -1, -2)) / 2.0
    nnt = (sym - cos[..., None, None] * eye) / jnp.maximum(1.0 - cos, _EPS)[..., None, None]
    diag = jnp.stack([nnt[..., 0, 0], nnt[..., 1, 1], nnt[..., 2, 2]], axis=-1)
    k = jnp.argmax(diag, axis=-1)
    col = jnp.take_along_axis(nnt, k[..., None, None].repeat(3, axis=-1), axis=-2)[..., 0, :]
    axis = _normalize(col)
    sign = jnp.where(jnp.sum(axis * vee, axis=-1) < 0, -1.0, 1.0)
    aa_pi = axis * (sign * theta)[..., None]

    near_pi = cos < -0.9
    return jnp.where(near_pi[..., None], aa_pi, aa_regular)


def rot6d_to_axis_angle(x):
    """[..., 6] -> [..., 3]."""
    return matrix_to_axis_angle(rot6d_to_matrix(x))
