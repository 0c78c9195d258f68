"""The four views of a training step and the object-centre update (SPEC 2.4)."""
import jax.numpy as jnp
import numpy as np

from interfusion_jax.scene import object_center, scene_views


def test_views_share_rotation_and_follow_the_release_offsets():
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    p = np.array([2.0, -1.0, 1.5])
    c2w = np.eye(4)
    c2w[:3, :3], c2w[:3, 3] = q, p
    light = np.array([0.5, 0.5, 1.0])
    center = np.array([0.3, -0.2, 0.1])
    head = np.array([0.0, 0.1, 0.7])
    c2ws, lights = scene_views(jnp.asarray(c2w), jnp.asarray(light), jnp.asarray(center),
                               jnp.asarray(head), (0.7, 0.7, 0.8, 0.2))
    want_pos = [0.7 * p + center, 0.7 * p, 0.8 * p + center / 2, 0.2 * p + head]
    want_light = [light + center, light, light + center / 2, light + head]
    for i in range(4):
        np.testing.assert_allclose(np.asarray(c2ws[i, :3, :3]), q, atol=1e-6)
        np.testing.assert_allclose(np.asarray(c2ws[i, :3, 3]), want_pos[i], atol=1e-6)
        np.testing.assert_allclose(np.asarray(lights[i]), want_light[i], atol=1e-6)
        np.testing.assert_allclose(np.asarray(c2ws[i, 3]), [0, 0, 0, 1])


def test_object_center_is_the_mean_of_the_opaque_region():
    box_lo, box_hi = np.array([0.2, -0.6, 0.0]), np.array([1.0, 0.2, 0.4])

    def density(x):
        inside = jnp.all((x >= box_lo) & (x <= box_hi), axis=-1)
        return jnp.where(inside, 50.0, 0.0)

    c = object_center(density, jnp.zeros(3), radius=2.0, resolution=41, chunk=4096)
    axis = np.linspace(-2, 2, 41)
    g = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    inside = np.all((g >= box_lo) & (g <= box_hi), axis=1)
    np.testing.assert_allclose(np.asarray(c), g[inside].mean(0), atol=1e-5)


def test_object_center_keeps_the_previous_value_when_empty():
    prev = jnp.array([0.1, 0.2, 0.3])
    c = object_center(lambda x: jnp.zeros(x.shape[0]), prev, radius=2.0, resolution=16, chunk=1000)
    np.testing.assert_allclose(np.asarray(c), np.asarray(prev))
