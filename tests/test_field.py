"""Field, material and background against analytic values, finite differences and SciPy."""
import jax
import jax.numpy as jnp
import numpy as np
import scipy.special

from nerf.background import Background, sh_encoding
from nerf.field import ImplicitVolume, field_outputs, make_density_fn, make_radiance_fn
from configs.base import get_config
from interfusion_jax.train_step import StepSettings
from nerf.material import ALBEDO, TEXTURELESS, make_shading, sample_shading, shade

SHADING = StepSettings.from_config(get_config()).shading  # the release's material settings

SMALL = dict(n_levels=4, log2_hashmap_size=12, base_resolution=8, per_level_scale=1.5,
             mlp_hidden=16)


def softplus(v):
    return np.logaddexp(0.0, v)


def test_blob_bias_at_init():
    field = ImplicitVolume(**SMALL)
    params = field.init(jax.random.PRNGKey(0), jnp.zeros((1, 3)))
    x = np.array([[0, 0, 0], [0.25, 0, 0], [0, -0.3, 0.4], [1.5, 0, 0]], np.float32)
    # Tables start at ±1e-4, so the MLP adds almost nothing to the blob bias 10 (1 − |x| / 0.5).
    want = softplus(10.0 * (1.0 - np.linalg.norm(x, axis=-1) / 0.5))
    got = np.asarray(make_density_fn(field)(params, jnp.asarray(x)))
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-6)
    assert got[0] > 9.9 and got[-1] < 1e-8
    # The blob's norm has no gradient at the origin: normals there must stay finite.
    assert np.all(np.isfinite(np.asarray(field_outputs(field, params, jnp.asarray(x))["normal"])))


def _random_field(seed=0):
    field = ImplicitVolume(**SMALL)
    params = field.init(jax.random.PRNGKey(seed), jnp.zeros((1, 3)))
    # Large random tables so the density has structure beyond the radial blob.
    table = params["params"]["encoding"]["table"]
    params["params"]["encoding"]["table"] = jax.random.normal(jax.random.PRNGKey(seed + 1),
                                                              table.shape) * 3.0
    return field, params


def test_normals_are_normalised_negative_density_gradient():
    field, params = _random_field()
    rng = np.random.default_rng(0)
    x = rng.uniform(-0.6, 0.6, size=(32, 3))
    out = field_outputs(field, params, jnp.asarray(x, jnp.float32))
    with jax.enable_x64(True):
        p64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
        density = jax.jit(lambda x: field.apply(p64, x, method=ImplicitVolume.density))
        eps = 1e-6
        grad = np.stack([(np.asarray(density(jnp.asarray(x + e))) -
                          np.asarray(density(jnp.asarray(x - e)))) / (2 * eps)
                         for e in np.eye(3) * eps], -1)
    want = -grad / np.linalg.norm(grad, axis=-1, keepdims=True)
    np.testing.assert_allclose(np.asarray(out["normal"]), want, atol=2e-3)
    np.testing.assert_allclose(np.asarray(out["density"]),
                               np.asarray(make_density_fn(field)(params, jnp.asarray(x, jnp.float32))),
                               rtol=1e-5)


def test_shading_formulas_by_hand():
    albedo = jnp.array([[0.5, 1.2, -0.1], [0.2, 0.4, 0.6]])
    normal = jnp.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    points = jnp.zeros((2, 3))
    light = jnp.array([0.0, 3.0, 4.0])  # l = (0, 0.6, 0.8): n·l = 0.8 and 0
    s = make_shading(light, "diffuse", ambient=0.1, diffuse=0.9)
    lum = np.array([0.1 + 0.9 * 0.8, 0.1])[:, None]
    np.testing.assert_allclose(shade(s, albedo, normal, points),
                               np.clip(np.asarray(albedo), 0, 1) * lum, rtol=1e-6)
    np.testing.assert_allclose(shade(s._replace(mode=jnp.int32(TEXTURELESS)), albedo, normal, points),
                               np.broadcast_to(lum, (2, 3)), rtol=1e-6)
    np.testing.assert_allclose(shade(s._replace(mode=jnp.int32(ALBEDO)), albedo, normal, points),
                               albedo)
    # A normal facing away from the light gets the ambient term only.
    np.testing.assert_allclose(shade(s, albedo, -normal, points)[0], np.array([0.05, 0.1, 0.0]),
                               rtol=1e-6)


def test_sample_shading_phases_and_probabilities():
    keys = jax.random.split(jax.random.PRNGKey(0), 4000)
    light = jnp.ones(3)
    early = jax.vmap(lambda k: sample_shading(k, 2000, light, **SHADING))(keys)
    assert np.all(np.asarray(early.mode) == ALBEDO)
    np.testing.assert_array_equal(early.ambient, 1.0)
    late = jax.vmap(lambda k: sample_shading(k, 2001, light, **SHADING))(keys)
    freq = np.bincount(np.asarray(late.mode), minlength=3) / len(keys)
    np.testing.assert_allclose(freq, [0.25, 0.375, 0.375], atol=0.03)
    np.testing.assert_allclose(late.ambient + late.diffuse, 1.0, atol=1e-6)
    assert 0.45 < float(jnp.mean(late.diffuse)) < 0.55 and float(jnp.std(late.diffuse)) > 0.25
    hard = sample_shading(keys[0], 5000, light, **dict(SHADING, soft_shading=False))
    assert float(hard.ambient) == np.float32(0.1) and float(hard.diffuse) == np.float32(0.9)


def test_radiance_fn_shades_field_outputs():
    field, params = _random_field(3)
    x = jax.random.uniform(jax.random.PRNGKey(5), (16, 3), minval=-0.5, maxval=0.5)
    light = jnp.array([2.0, 1.0, 3.0])
    out = jax.jit(make_radiance_fn(field))(params, x, jnp.zeros_like(x),
                                           make_shading(light, "diffuse"))
    raw_albedo = field.apply(params, x)["albedo"]
    l = np.array(light - x)
    l /= np.linalg.norm(l, axis=-1, keepdims=True)
    lum = 0.1 + 0.9 * np.maximum(np.sum(np.asarray(out["normal"]) * l, -1, keepdims=True), 0)
    np.testing.assert_allclose(out["rgb"], np.asarray(raw_albedo) * lum, rtol=1e-5, atol=1e-6)
    assert out["density"].shape == (16,) and out["normal"].shape == (16, 3)


def _real_sh_scipy(l, m, dirs):
    """Real orthonormal SH from SciPy's complex ones (sign conventions aside)."""
    theta = np.arccos(np.clip(dirs[:, 2], -1, 1))
    phi = np.arctan2(dirs[:, 1], dirs[:, 0])
    y = scipy.special.sph_harm_y(l, abs(m), theta, phi)
    if m > 0:
        return np.sqrt(2) * y.real
    if m < 0:
        return np.sqrt(2) * y.imag
    return y.real


def test_sh_basis_matches_scipy_up_to_sign_and_is_orthonormal():
    rng = np.random.default_rng(0)
    dirs = rng.normal(size=(256, 3))
    dirs /= np.linalg.norm(dirs, axis=-1, keepdims=True)
    got = np.asarray(sh_encoding(jnp.asarray(dirs, jnp.float32), degree=4))
    assert got.shape == (256, 16)
    for l in range(4):
        for m in range(-l, l + 1):
            ref = _real_sh_scipy(l, m, dirs)
            col = got[:, l * l + l + m]
            err = min(np.max(np.abs(col - ref)), np.max(np.abs(col + ref)))
            assert err < 1e-5, (l, m, err)
    # Orthonormality over the sphere by Monte Carlo (4π · mean).
    many = rng.normal(size=(200000, 3))
    many /= np.linalg.norm(many, axis=-1, keepdims=True)
    y = np.asarray(sh_encoding(jnp.asarray(many, jnp.float32), degree=4), np.float64)
    np.testing.assert_allclose(4 * np.pi * y.T @ y / len(many), np.eye(16), atol=0.03)
    assert sh_encoding(jnp.asarray(dirs, jnp.float32)).shape == (256, 9)  # tcnn degree 3


def test_background_shape_and_range():
    bg = Background()
    dirs = jax.random.normal(jax.random.PRNGKey(0), (10, 3))
    dirs = dirs / jnp.linalg.norm(dirs, axis=-1, keepdims=True)
    params = bg.init(jax.random.PRNGKey(1), dirs)
    rgb = bg.apply(params, dirs)
    assert rgb.shape == (10, 3)
    assert np.all((np.asarray(rgb) > 0) & (np.asarray(rgb) < 1))
    assert params["params"]["MLP_0"]["Dense_0"]["kernel"].shape == (9, 16)
    assert "bias" not in params["params"]["MLP_0"]["Dense_0"]
