"""Random training cameras, evaluation circle and ray generation (docs/method.md §2.1, §2.4)."""
import jax
import jax.numpy as jnp
import numpy as np

from configs.base import get_config
from interfusion_jax.train_step import StepSettings
from nerf.cameras import circle_cameras, generate_rays, look_at, random_camera

CAMERA = StepSettings.from_config(get_config()).camera  # the release's ranges


def _sample(n=4000):
    return jax.jit(jax.vmap(lambda k: random_camera(k, **CAMERA)))(
        jax.random.split(jax.random.PRNGKey(0), n))


def test_random_camera_statistics():
    cams = _sample()
    e, a, dist = (np.asarray(v, np.float64) for v in (cams.elevation, cams.azimuth, cams.distance))
    assert e.min() >= -30 and e.max() <= 90 and a.min() >= -180 and a.max() <= 180
    assert dist.min() >= 2.5 and dist.max() <= 3.0
    fovy = np.rad2deg(np.asarray(cams.fovy))
    assert fovy.min() >= 40 and fovy.max() <= 70
    # position = spherical point at the sampled distance plus jitter of at most 0.1 per axis
    er, ar = np.deg2rad(e), np.deg2rad(a)
    sph = dist[:, None] * np.stack([np.cos(er) * np.cos(ar), np.cos(er) * np.sin(ar), np.sin(er)], 1)
    jitter = np.asarray(cams.position) - sph
    assert np.abs(jitter).max() <= 0.1 + 1e-5 and np.abs(jitter).max() > 0.09
    np.testing.assert_allclose(np.asarray(cams.c2w[:, :3, 3]), np.asarray(cams.position), atol=1e-6)
    # half uniform in degrees, half uniform on the sphere: P(e > 60) = (0.25 + 0.0893) / 2
    p_high = 0.5 * (30 / 120) + 0.5 * (1 - np.sin(np.pi / 3)) / (1 - np.sin(-np.pi / 6))
    assert abs((e > 60).mean() - p_high) < 0.03
    # magic3d light: distance in [0.8, 1.5], 30-90 degrees above the plane normal to the camera
    light = np.asarray(cams.light_position)
    ld = np.linalg.norm(light, axis=1)
    assert ld.min() >= 0.8 - 1e-5 and ld.max() <= 1.5 + 1e-5
    cos = np.sum(light * np.asarray(cams.position), 1) / ld / np.linalg.norm(cams.position, axis=1)
    assert cos.min() >= np.cos(np.deg2rad(60)) - 1e-4


def test_look_at_frames_are_rotations_facing_the_centre():
    cams = _sample(500)
    rot = np.asarray(cams.c2w[:, :3, :3], np.float64)
    np.testing.assert_allclose(rot.transpose(0, 2, 1) @ rot, np.broadcast_to(np.eye(3), rot.shape),
                               atol=1e-5)
    np.testing.assert_allclose(np.linalg.det(rot), 1.0, atol=1e-5)
    # the look-at centre is jittered by N(0, 0.2): the view axis points close to the origin
    to_origin = -np.asarray(cams.position)
    to_origin /= np.linalg.norm(to_origin, axis=1, keepdims=True)
    assert np.median(np.sum(-rot[:, :, 2] * to_origin, 1)) > 0.99
    circle = circle_cameras(8, elevation=10.0, distance=2.0, fovy=70.0)
    pos = np.asarray(circle.position)
    np.testing.assert_allclose(np.linalg.norm(pos, axis=1), 2.0, atol=1e-6)
    np.testing.assert_allclose(np.rad2deg(np.arcsin(pos[:, 2] / 2.0)), 10.0, atol=1e-4)
    fwd = -np.asarray(circle.c2w[:, :3, 2])
    np.testing.assert_allclose(fwd, -pos / 2.0, atol=1e-6)  # looks exactly at the origin
    np.testing.assert_allclose(np.asarray(circle.c2w[:, 2, 0]), 0.0, atol=1e-6)  # x horizontal
    assert np.all(np.asarray(circle.c2w[:, 2, 1]) > 0)  # y up
    np.testing.assert_allclose(np.asarray(circle.azimuth), np.linspace(0, 360, 8), atol=1e-4)
    top = look_at(jnp.array([0.0, 0.0, 3.0]), jnp.zeros(3), jnp.array([0.0, 0.0, 1.0]))
    assert np.all(np.isfinite(np.asarray(top)))


def test_generated_rays_project_back_to_their_pixels():
    c2w = look_at(jnp.array([1.5, -2.0, 1.0]), jnp.array([0.1, 0.2, 0.0]),
                  jnp.array([0.0, 0.0, 1.0]))
    h, w, fovy = 6, 8, np.deg2rad(50.0)
    o, d = generate_rays(c2w, fovy, h, w)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(d), axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(np.asarray(o), np.broadcast_to(np.asarray(c2w[:3, 3]), (h * w, 3)))
    # project a point along each ray with a pinhole w2c matrix built independently
    m = np.asarray(c2w, np.float64)
    pts = np.asarray(o) + 2.0 * np.asarray(d)
    cam = (pts - m[:3, 3]) @ m[:3, :3]
    focal = 0.5 * h / np.tan(0.5 * fovy)
    u = cam[:, 0] / -cam[:, 2] * focal + w / 2
    v = -cam[:, 1] / -cam[:, 2] * focal + h / 2
    jj, ii = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    np.testing.assert_allclose(u, ii.reshape(-1) + 0.5, atol=1e-4)
    np.testing.assert_allclose(v, jj.reshape(-1) + 0.5, atol=1e-4)
    assert np.all(cam[:, 2] < 0)  # in front of the camera (OpenGL: -z)
