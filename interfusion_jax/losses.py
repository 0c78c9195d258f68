"""Regularisers and body-shape losses of the interaction stage (docs/method.md §2.5), as pure jittable functions.

Per-sample inputs come from the fixed-size sample buffer of a render: arrays of length S with a
`valid` mask marking the slots that hold a real sample; per-ray inputs have length R. `step` may be
a traced integer, so every schedule is written with jnp.where rather than Python branches.
"""
import jax
import jax.numpy as jnp

# -log(1e-4): the release clamps its occupancy target at 1e-4, which bounds each sample's loss.
SHAPE_LOSS_SCALE = 9.21


def schedule_value(spec, step):
    """A weight: a number, or (start_step, start_value, end_value, end_step) linear and clamped.
    The entries may be traced (a scene's numbers passed into the step, train_step.StepSettings)."""
    if not isinstance(spec, (tuple, list)):
        return jnp.asarray(spec, jnp.float32)
    start_step, start_value, end_value, end_step = spec
    frac = jnp.clip((step - start_step) / jnp.maximum(end_step - start_step, 1), 0.0, 1.0)
    return start_value + frac * (end_value - start_value)


def object_sds_weight(step, every):
    """floor(step / every) / 10: the object prompt's SDS term grows in from zero (the release:
    every 1000 steps)."""
    return jnp.floor(step / every) / 10.0


def object_shape_weight(step, shape_weights, steps):
    """shape_weights[0] before steps[0] or after steps[3], [1] before steps[1] or after steps[2],
    else [2] (the release: steps 1000, 2000, 8000, 9000 of its 10 000)."""
    w0, w1, w2 = shape_weights
    outer = (step < steps[0]) | (step > steps[3])
    middle = (step < steps[1]) | (step > steps[2])
    return jnp.where(outer, w0, jnp.where(middle, w1, w2))


def orientation_loss(weights, normals, dirs, valid, opacity):
    """sum(sg(w) * max(0, n.d)^2) / #(rays with opacity > 0): normals must face the camera.

    weights [S], normals [S,3], dirs [S,3] (ray directions), valid [S] bool, opacity [R].
    """
    facing_away = jnp.maximum(jnp.sum(normals * dirs, axis=-1), 0.0) ** 2
    total = jnp.sum(jnp.where(valid, jax.lax.stop_gradient(weights) * facing_away, 0.0))
    return total / jnp.maximum(jnp.sum(opacity > 0), 1)


def sparsity_loss(opacity):
    """mean(sqrt(opacity^2 + 0.01)) over rays."""
    return jnp.mean(jnp.sqrt(opacity**2 + 0.01))


def opacity_entropy_loss(opacity):
    """Binary entropy of the per-ray opacity, pushing it to 0 or 1."""
    p = jnp.clip(opacity, 1e-3, 1.0 - 1e-3)
    return -jnp.mean(p * jnp.log(p) + (1.0 - p) * jnp.log(1.0 - p))


def _occupancy_from_density(density, density_scale):
    return jnp.clip(1.0 - jnp.exp(-density_scale * density), 0.0, 1.1)


def human_shape_loss(density, body_occupancy, body_distance, valid, density_scale, sigma):
    """docs/method.md §2.5 "type 2": the human field fills the body and fades away from its surface.

    Inside the body: sum 9.21 (1 - p); outside: sum 9.21 p (1 - exp(-d^2 / (2 sigma^2))), with
    p = clamp(1 - exp(-0.2 density), 0, 1.1) and d the distance to the body surface. All [S].
    """
    p = _occupancy_from_density(density, density_scale)
    inside = body_occupancy > 0.5
    inside_term = 1.0 - p
    outside_term = p * (1.0 - jnp.exp(-(body_distance**2) / (2.0 * sigma**2)))
    per_sample = jnp.where(inside, inside_term, outside_term)
    return SHAPE_LOSS_SCALE * jnp.sum(jnp.where(valid, per_sample, 0.0))


def object_shape_loss(density, body_occupancy, valid, density_scale):
    """docs/method.md §2.5 "type 3": sum 9.21 p over object samples inside the body (push the object out)."""
    p = _occupancy_from_density(density, density_scale)
    inside = (body_occupancy > 0.5) & valid
    return SHAPE_LOSS_SCALE * jnp.sum(jnp.where(inside, p, 0.0))
