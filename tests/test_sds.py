"""Score distillation against analytic denoisers (no weights).

The data of the "conditional" model is a narrow Gaussian N(target, s²) per pixel, that of the
"unconditional" model a broad one N(0, S²). For x_t = √ᾱ·x0 + √(1−ᾱ)·ε with x0 ~ N(m, s²):
x_t ~ N(√ᾱ·m, ᾱs² + 1 − ᾱ) and Cov(ε, x_t) = √(1−ᾱ), so the exact ε-prediction is
E[ε | x_t] = √(1−ᾱ)·(x_t − √ᾱ·m) / (ᾱs² + 1 − ᾱ).
"""

import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from guidance import (SDSConfig, ddpm_alphas_cumprod, ideal_denoiser, sds_from_noise, sds_loss, to_model_space,
                      view_index, view_prompts)

NARROW, BROAD = 0.02, 4.0
L, D = 5, 4


def cosine_alphas_cumprod(steps=1000):
    """Independent NumPy statement of the squaredcos_cap_v2 (Glide) schedule."""
    f = lambda u: math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2
    betas = np.array([min(1 - f((i + 1) / steps) / f(i / steps), 0.999) for i in range(steps)])
    return np.cumprod(1 - betas)


ALPHAS = cosine_alphas_cumprod()


def gaussian_eps(x_t, alpha_bar, mean, std):
    return (1 - alpha_bar) ** 0.5 * (x_t - alpha_bar ** 0.5 * mean) / (alpha_bar * std ** 2 + 1 - alpha_bar)


def make_target(size=64):
    yy, xx = np.meshgrid(np.linspace(0, 1, size), np.linspace(0, 1, size), indexing="ij")
    return np.stack([0.2 + 0.6 * xx, 0.2 + 0.6 * yy, 0.5 + 0.3 * np.sin(6 * xx * yy)], -1).astype(np.float32)


TARGET_MODEL_SPACE = make_target() * 2 - 1


def analytic_unet(x, t, emb):
    """emb[:, 0, 0] == 1 marks the conditional model (narrow Gaussian at the target), 0 the unconditional
    one (broad Gaussian at 0). Variance channels are zeros."""
    ab = jnp.asarray(ALPHAS, jnp.float32)[t][:, None, None, None]
    cond = emb[:, 0, 0][:, None, None, None]
    eps_c = gaussian_eps(x, ab, TARGET_MODEL_SPACE, NARROW)
    eps_u = gaussian_eps(x, ab, 0.0, BROAD)
    eps = cond * eps_c + (1 - cond) * eps_u
    return jnp.concatenate([eps, jnp.zeros_like(eps)], -1)


def embeddings(n):
    cond = np.zeros((n, L, D), np.float32)
    cond[:, 0, 0] = 1
    return jnp.asarray(cond), jnp.zeros((L, D), jnp.float32)


def test_schedule_is_squaredcos_cap_v2():
    np.testing.assert_allclose(np.asarray(ddpm_alphas_cumprod()), ALPHAS, rtol=2e-5, atol=1e-7)
    # diffusers' PyTorch DDPMScheduler, which IF ships with (scripts/parity_ddpm_step.py), to the bit.
    reference = np.load(os.path.join(os.path.dirname(__file__), "fixtures", "ddpm_step", "reference.npz"))
    np.testing.assert_array_equal(ddpm_alphas_cumprod(), reference["alphas_cumprod"])
    with pytest.raises(ValueError, match="beta_schedule 'linear' is not supported"):
        ddpm_alphas_cumprod(beta_schedule="linear")


@pytest.mark.parametrize("weighting", ["uniform", "sds", "fantasia3d"])
def test_loss_gradient_is_weighted_sds_gradient(weighting):
    n = 3
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(n, 64, 64, 3)).astype(np.float32)
    noise = rng.normal(size=(n, 64, 64, 3)).astype(np.float32)
    t = np.array([20, 500, 980], np.int32)
    weights = np.array([1.0, 0.3, 2.0], np.float32)
    cond, uncond = embeddings(n)
    config = SDSConfig(weighting=weighting)

    def loss(imgs):
        return sds_from_noise(analytic_unet, imgs, cond, uncond, jnp.asarray(t), jnp.asarray(noise),
                              ddpm_alphas_cumprod(), config, weights)

    (value, aux), grad_images = jax.value_and_grad(loss, has_aux=True)(jnp.asarray(images))
    ab = ALPHAS[t][:, None, None, None]
    x = images * 2 - 1
    x_t = np.sqrt(ab) * x + np.sqrt(1 - ab) * noise
    e_c, e_u = gaussian_eps(x_t, ab, TARGET_MODEL_SPACE, NARROW), gaussian_eps(x_t, ab, 0.0, BROAD)
    w = {"uniform": np.ones_like(ab), "sds": 1 - ab, "fantasia3d": np.sqrt(ab) * (1 - ab)}[weighting]
    g_ref = w * (e_c + 20 * (e_c - e_u) - noise)
    np.testing.assert_allclose(np.asarray(aux["grad"]), g_ref, rtol=1e-4, atol=1e-4 * np.abs(g_ref).max())
    # d/dimage of Σ w_i·0.5‖x_i − sg(x_i − g_i)‖² with x = 2·image − 1 is 2·w_i·g_i.
    expected = 2 * weights[:, None, None, None] * g_ref
    np.testing.assert_allclose(np.asarray(grad_images), expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    np.testing.assert_allclose(float(value), np.sum(weights * 0.5 * np.sum(g_ref ** 2, axis=(1, 2, 3))), rtol=1e-4)


def test_nan_zeroed_and_clipped():
    n = 2
    images = jnp.full((n, 64, 64, 3), 0.5)
    cond, uncond = embeddings(n)
    nan_unet = lambda x, t, e: analytic_unet(x, t, e).at[:, 0, 0, 0].set(jnp.nan)
    _, aux = sds_from_noise(nan_unet, images, cond, uncond, jnp.array([100, 900]), jnp.ones((n, 64, 64, 3)),
                            ddpm_alphas_cumprod(), grad_clip=0.05)
    grad = np.asarray(aux["grad"])
    assert np.all(grad[:, 0, 0, 0] == 0)
    assert np.all(np.isfinite(grad)) and np.abs(grad).max() <= 0.05 + 1e-7
    assert np.isclose(np.abs(grad).max(), 0.05)  # the clamp is active, not merely satisfied


def test_pairs_in_one_call_equal_separate_calls():
    n = 4
    rng = np.random.default_rng(1)
    images = jnp.asarray(rng.uniform(size=(n, 96, 96, 3)), jnp.float32)
    cond = jnp.asarray(rng.normal(size=(n, L, D)), jnp.float32)
    cond = cond.at[:, 0, 0].set(jnp.array([1.0, 0.0, 1.0, 0.5]))
    uncond = jnp.zeros((L, D))
    t = jnp.array([30, 200, 600, 950])
    noise = jnp.asarray(rng.normal(size=(n, 64, 64, 3)), jnp.float32)
    weights = jnp.array([0.2, 1.0, 1.0, 0.5])
    calls = []

    def counting_unet(x, t, e):
        calls.append(x.shape[0])
        return analytic_unet(x, t, e)

    loss = lambda imgs, s: sds_from_noise(counting_unet, imgs, cond[s], uncond, t[s], noise[s], ddpm_alphas_cumprod(),
                                          weights=weights[s])
    (total, aux), grad = jax.value_and_grad(loss, has_aux=True)(images, slice(None))
    assert calls == [2 * n]
    for i in range(n):
        (single, aux_i), grad_i = jax.value_and_grad(loss, has_aux=True)(images[i:i + 1], slice(i, i + 1))
        np.testing.assert_allclose(float(aux["loss_per_pair"][i]), float(aux_i["loss_per_pair"][0]), rtol=1e-5)
        np.testing.assert_allclose(np.asarray(grad[i]), np.asarray(grad_i[0]), rtol=1e-5, atol=1e-6)
    per_pair = np.asarray(aux["loss_per_pair"])
    np.testing.assert_allclose(float(total), float(np.sum(np.asarray(weights) * per_pair)), rtol=1e-5)


def test_sds_loss_draws_t_in_range_and_is_seeded():
    n = 64
    cond, uncond = embeddings(n)
    images = jnp.full((n, 64, 64, 3), 0.5)
    config = SDSConfig(min_step=20, max_step=22)
    run = jax.jit(lambda key: sds_loss(analytic_unet, key, images, cond, uncond, ddpm_alphas_cumprod(), config))
    loss_a, aux = run(jax.random.PRNGKey(3))
    loss_b, _ = run(jax.random.PRNGKey(3))
    loss_c, _ = run(jax.random.PRNGKey(4))
    assert set(np.asarray(aux["t"]).tolist()) == {20, 21, 22}  # both ends included
    assert float(loss_a) == float(loss_b) and float(loss_a) != float(loss_c)


def test_oracle_sds_pulls_image_to_target():
    cond, uncond = embeddings(1)
    target = make_target()[None]
    image = jnp.asarray(np.random.default_rng(2).uniform(size=target.shape), jnp.float32)
    steps = 400
    optimizer = optax.adam(optax.cosine_decay_schedule(0.03, steps, alpha=0.01))
    state = optimizer.init(image)
    alphas = ddpm_alphas_cumprod()

    @jax.jit
    def step(image, state, key):
        grad, _ = jax.grad(lambda x: sds_loss(analytic_unet, key, x, cond, uncond, alphas), has_aux=True)(image)
        updates, state = optimizer.update(grad, state)
        return optax.apply_updates(image, updates), state

    error_before = float(np.sqrt(np.mean((np.asarray(image) - target) ** 2)))
    for key in jax.random.split(jax.random.PRNGKey(0), steps):
        image, state = step(image, state, key)
    error_after = float(np.sqrt(np.mean((np.asarray(image) - target) ** 2)))
    assert error_after < error_before / 10, (error_before, error_after)


def test_resize_to_64_is_half_pixel_bilinear():
    # 128 -> 64 bilinear with align_corners=False samples at 2i + 0.5: the mean of each 2x2 block.
    images = np.random.default_rng(3).uniform(size=(2, 128, 128, 3)).astype(np.float32)
    expected = images.reshape(2, 64, 2, 64, 2, 3).mean(axis=(2, 4)) * 2 - 1
    np.testing.assert_allclose(np.asarray(to_model_space(jnp.asarray(images))), expected, atol=1e-6)


def test_bad_inputs_are_rejected():
    cond, uncond = embeddings(1)
    alphas = ddpm_alphas_cumprod()
    with pytest.raises(ValueError, match="floating point"):
        sds_loss(analytic_unet, jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3), jnp.uint8), cond, uncond, alphas)
    with pytest.raises(ValueError, match="NHWC"):
        sds_loss(analytic_unet, jax.random.PRNGKey(0), jnp.zeros((1, 3, 64, 64)), cond, uncond, alphas)
    with pytest.raises(ValueError, match="weighting"):
        SDSConfig(weighting="linear")


def test_view_index():
    elevation = np.array([0, 0, 0, 0, 0, 0, 0, 61, 60, 10])
    azimuth = np.array([0, 44.9, 45, 135, 135.1, 180, -170, 0, 0, 200])
    expected = [0, 0, 1, 1, 2, 2, 2, 3, 0, 2]
    np.testing.assert_array_equal(np.asarray(jax.jit(view_index)(elevation, azimuth)), expected)
    assert view_prompts("a chair") == ["a chair, front view", "a chair, side view", "a chair, back view",
                                       "a chair, overhead view"]


def test_ideal_denoiser_gradient_points_at_the_reference_image():
    """With the exact denoiser of the single image x*, ε̂ − ε = √ᾱ/√(1−ᾱ) (x − x*): the SDS
    gradient pulls each render straight to its reference, and text and empty prompt agree."""
    rng = np.random.default_rng(3)
    images = rng.uniform(size=(3, 32, 32, 3)).astype(np.float32)
    targets = rng.uniform(size=(3, 32, 32, 3)).astype(np.float32)
    t = jnp.array([20, 500, 980], jnp.int32)
    noise = jnp.asarray(rng.normal(size=(3, 64, 64, 3)).astype(np.float32))
    unet_fn = ideal_denoiser(jnp.asarray(targets), ALPHAS)
    emb = jnp.asarray(rng.normal(size=(3, L, D)).astype(np.float32))
    _, aux = sds_from_noise(unet_fn, jnp.asarray(images), emb, jnp.zeros((L, D)), t, noise, ALPHAS,
                            SDSConfig(guidance_scale=20.0))
    ab = ALPHAS[np.asarray(t)][:, None, None, None]
    x, x_star = (np.asarray(to_model_space(jnp.asarray(a))) for a in (images, targets))
    np.testing.assert_allclose(np.asarray(aux["grad"]), np.sqrt(ab / (1 - ab)) * (x - x_star),
                               rtol=2e-3, atol=2e-3)


def test_a_text_context_stands_for_the_embeddings():
    from guidance import encode_text, load_if_unet

    module, params = load_if_unet(os.path.join(os.path.dirname(__file__), "fixtures", "if_unet", "stage1"))
    rng = np.random.default_rng(2)
    width = module.config.encoder_hid_dim
    emb = jnp.asarray(rng.normal(size=(3, 77, width)), jnp.float32)  # two prompts, then the empty one
    images = jnp.asarray(rng.uniform(size=(2, 64, 64, 3)), jnp.float32)
    t, noise = jnp.array([100, 700]), jnp.asarray(rng.normal(size=(2, 64, 64, 3)), jnp.float32)
    unet_fn = lambda x, t, text: module.apply({"params": params}, x, t, text)  # noqa: E731
    context = encode_text(module, params, emb)
    rows = lambda tree, index: jax.tree_util.tree_map(lambda a: a[index], tree)  # noqa: E731

    def loss(cond, uncond):
        return jax.value_and_grad(lambda im: sds_from_noise(unet_fn, im, cond, uncond, t, noise,
                                                            ddpm_alphas_cumprod())[0])(images)

    by_emb, by_context = loss(emb[:2], emb[2]), loss(rows(context, slice(0, 2)), rows(context, 2))
    for a, b in zip(by_emb, by_context):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="TextContext of N rows"):
        loss(rows(context, slice(0, 1)), rows(context, 2))
