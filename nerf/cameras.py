"""Cameras of the interaction stage (docs/method.md §2.1, §2.4), as threestudio's camera datasets make them.

Scene frame z-up; a camera at elevation e, azimuth a, distance d sits at
(d cos e cos a, d cos e sin a, d sin e) and looks at the centre with +z up. Camera-to-world
matrices follow OpenGL: the camera looks down its -z axis, x right, y up.
"""
import functools

import flax
import jax
import jax.numpy as jnp

from ifcommon.geometry import normalize


@flax.struct.dataclass
class Camera:
    """c2w [...,4,4]; fovy [...] radians; elevation, azimuth [...] degrees; distance [...];
    position, light_position [...,3]."""

    c2w: jax.Array
    fovy: jax.Array
    elevation: jax.Array
    azimuth: jax.Array
    distance: jax.Array
    position: jax.Array
    light_position: jax.Array



def spherical_position(elevation_deg, azimuth_deg, distance):
    e, a = jnp.deg2rad(elevation_deg), jnp.deg2rad(azimuth_deg)
    return jnp.stack([distance * jnp.cos(e) * jnp.cos(a), distance * jnp.cos(e) * jnp.sin(a),
                      distance * jnp.sin(e)], -1)


def look_at(position, center, up):
    """c2w [...,4,4] of a camera at position [...,3] looking at center with the given up.

    When the view is parallel to `up` (straight down at elevation 90 without jitter) the scene x
    axis stands in for it, so the matrix stays a rotation instead of NaN.
    """
    forward = normalize(center - position)
    right = jnp.cross(forward, up)
    fallback = jnp.cross(forward, jnp.broadcast_to(jnp.array([1.0, 0.0, 0.0]), forward.shape))
    degenerate = jnp.linalg.norm(right, axis=-1, keepdims=True) < 1e-6
    right = normalize(jnp.where(degenerate, fallback, right))
    true_up = normalize(jnp.cross(right, forward))
    rot = jnp.stack([right, true_up, -forward], -1)
    top = jnp.concatenate([rot, position[..., :, None]], -1)
    bottom = jnp.broadcast_to(jnp.array([0.0, 0.0, 0.0, 1.0]), top.shape[:-2] + (1, 4))
    return jnp.concatenate([top, bottom], -2)


def _uniform(key, lo_hi, shape=()):
    lo, hi = lo_hi
    return jax.random.uniform(key, shape, minval=lo, maxval=hi)


def magic3d_light(key, camera_position, distance_range=(0.8, 1.5)):
    """Light [3] at distance in `distance_range` from the centre, 30-90 degrees above the plane
    orthogonal to the camera direction ("magic3d" in the release's uncond.py).

    The release draws the light azimuth as rand * pi - 2 pi, i.e. uniform in [-2 pi, -pi]: half
    a circle (local y >= 0), not the full circle its comment claims. Kept as released.
    """
    k_dist, k_az, k_el = jax.random.split(key, 3)
    dist = _uniform(k_dist, distance_range)
    az = _uniform(k_az, (-2.0 * jnp.pi, -jnp.pi))
    el = _uniform(k_el, (jnp.pi / 6.0, jnp.pi / 2.0))
    z = normalize(camera_position)
    x = normalize(jnp.stack([z[1], -z[0], jnp.zeros_like(z[0])]))
    y = normalize(jnp.cross(z, x))
    local = dist * jnp.stack([jnp.cos(el) * jnp.cos(az), jnp.cos(el) * jnp.sin(az), jnp.sin(el)])
    return jnp.stack([x, y, z], -1) @ local


def random_camera(key, *, elevation_range, azimuth_range, distance_range, fovy_range,
                  position_jitter, center_jitter, up_jitter, light_distance_range):
    """One random training camera (threestudio's RandomCameraIterableDataset, batch 1); the
    release's numbers are configs/base.py's `camera` block.

    Elevation: half the time uniform in degrees, half uniform on the sphere (inverse-CDF in
    sin e). Then position jitter U(+-position_jitter), look-at centre jitter N(0, center_jitter),
    up jitter N(0, up_jitter); the light uses the jittered position. Angles in degrees.
    """
    keys = jax.random.split(key, 10)
    lo, hi = elevation_range
    elev_uniform = _uniform(keys[0], elevation_range)
    u = _uniform(keys[1], ((lo + 90.0) / 180.0, (hi + 90.0) / 180.0))
    elev_sphere = jnp.rad2deg(jnp.arcsin(jnp.clip(2.0 * u - 1.0, -1.0, 1.0)))
    elevation = jnp.where(jax.random.uniform(keys[2]) < 0.5, elev_uniform, elev_sphere)
    azimuth = _uniform(keys[3], azimuth_range)
    distance = _uniform(keys[4], distance_range)
    position = spherical_position(elevation, azimuth, distance)
    position = position + _uniform(keys[5], (-position_jitter, position_jitter), (3,))
    center = center_jitter * jax.random.normal(keys[6], (3,))
    up = jnp.array([0.0, 0.0, 1.0]) + up_jitter * jax.random.normal(keys[7], (3,))
    fovy = jnp.deg2rad(_uniform(keys[8], fovy_range))
    light = magic3d_light(keys[9], position, light_distance_range)
    return Camera(look_at(position, center, up), fovy, elevation, azimuth, distance, position,
                  light)


# One compiled program per n instead of some thirty single-operation ones: each costs a
# compilation on an accelerator, and a run draws circles of three sizes.
@functools.partial(jax.jit, static_argnames=("n", "endpoint"))
def circle_cameras(n, *, elevation=10.0, distance=2.0, fovy=70.0, endpoint=True):
    """n evaluation cameras [n] on a circle, azimuth 0..360 degrees, light at the camera.

    endpoint=True spaces them as threestudio's test split (linspace(0, 360, n), first and last
    views equal); endpoint=False as its validation split (n + 1 points, last dropped).
    """
    azimuth = jnp.linspace(0.0, 360.0, n + (0 if endpoint else 1))[:n]
    elev = jnp.full((n,), elevation, jnp.float32)
    dist = jnp.full((n,), distance, jnp.float32)
    position = spherical_position(elev, azimuth, dist)
    up = jnp.broadcast_to(jnp.array([0.0, 0.0, 1.0]), position.shape)
    c2w = look_at(position, jnp.zeros_like(position), up)
    return Camera(c2w, jnp.full((n,), jnp.deg2rad(fovy), jnp.float32), elev, azimuth, dist,
                  position, position)


def generate_rays(c2w, fovy, height, width):
    """Rays of a pinhole camera: origins, unit directions [height * width, 3], row-major from the
    top-left pixel, through pixel centres (threestudio's get_ray_directions / get_rays)."""
    focal = 0.5 * height / jnp.tan(0.5 * fovy)
    i, j = jnp.meshgrid(jnp.arange(width) + 0.5, jnp.arange(height) + 0.5, indexing="xy")
    cam = jnp.stack([(i - width / 2.0) / focal, -(j - height / 2.0) / focal,
                     -jnp.ones_like(i)], -1).reshape(-1, 3)
    directions = normalize(cam @ c2w[:3, :3].T)
    origins = jnp.broadcast_to(c2w[:3, 3], directions.shape)
    return origins, directions
