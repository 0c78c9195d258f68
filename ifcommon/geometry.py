"""Small vector helpers shared by the renderers of the body, the fields and the cameras."""
import jax.numpy as jnp


def normalize(v, eps=1e-12):
    """v [..., 3] scaled to unit length along the last axis (zero vectors stay near zero)."""
    return v / jnp.maximum(jnp.linalg.norm(v, axis=-1, keepdims=True), eps)
