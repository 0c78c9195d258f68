"""IF cascade sampling: the DDPM step vs diffusers' PyTorch DDPMScheduler (fixture from
scripts/parity_ddpm_step.py), an analytic Gaussian denoiser, and tiny random IF UNets end to end."""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import save_file
from scipy.ndimage import map_coordinates

from guidance import (SchedulerConfig, ddpm_step, ddpm_timesteps, generate_images, load_safetensors_dir,
                      resize_align_corners, sample_stage1, sample_stage2)

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


@pytest.fixture(scope="module")
def ref():
    return np.load(os.path.join(FIXTURES, "ddpm_step", "reference.npz"))


@pytest.mark.parametrize("name", ["if", "plain"])
def test_step_matches_pytorch_ddpm_scheduler(ref, name):
    config = SchedulerConfig.from_dict(json.loads(str(ref["configs"]))[name])
    pairs = ddpm_timesteps(config, 10)
    np.testing.assert_array_equal([t for t, _ in pairs], ref[f"{name}_timesteps"])
    step = jax.jit(lambda *a: ddpm_step(config, config.alphas_cumprod(), *a))
    for i, (t, prev_t) in enumerate(pairs):
        out = step(ref[f"{name}_output"][i], t, prev_t, ref[f"{name}_sample"][i], ref[f"{name}_noise"][i])
        expected = ref[f"{name}_result"][i]
        np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())


def test_unsupported_scheduler_settings_are_named():
    with pytest.raises(ValueError, match="prediction_type"):
        SchedulerConfig.from_dict({"prediction_type": "v_prediction"})
    with pytest.raises(ValueError, match="variance_type"):
        SchedulerConfig.from_dict({"variance_type": "learned"})
    with pytest.raises(ValueError, match="beta_schedule = 'linear' is not supported"):
        SchedulerConfig.from_dict({"beta_schedule": "linear"})


def gaussian_eps(x_t, alpha_bar, mean, std):
    """Exact E[ε | x_t] for data N(mean, std²) (derivation in tests/test_sds.py)."""
    return (1 - alpha_bar) ** 0.5 * (x_t - alpha_bar ** 0.5 * mean) / (alpha_bar * std ** 2 + 1 - alpha_bar)


def test_stage1_with_analytic_denoiser_lands_on_target():
    size = 16
    yy, xx = np.meshgrid(np.linspace(0, 1, size), np.linspace(0, 1, size), indexing="ij")
    target = np.stack([0.2 + 0.6 * xx, 0.2 + 0.6 * yy, 0.5 + 0.2 * xx * yy], -1).astype(np.float32)
    alphas = jnp.asarray(SchedulerConfig().alphas_cumprod())

    def unet_fn(params, x, t, emb):
        ab = alphas[t][:, None, None, None]
        is_text = emb[:, 0, 0][:, None, None, None]
        eps = is_text * gaussian_eps(x, ab, target * 2 - 1, 0.01) + (1 - is_text) * gaussian_eps(x, ab, 0.0, 1.0)
        return jnp.concatenate([eps, jnp.zeros_like(eps)], -1)

    cond = jnp.zeros((2, 4, 4)).at[:, 0, 0].set(1.0)
    # guidance 1: ε̂ = ε̂_text exactly, so the samples follow the text model's (narrow) distribution; a swap of
    # the halves would sample the broad unconditional one instead.
    images = sample_stage1(unet_fn, None, jax.random.PRNGKey(0), cond, jnp.zeros((4, 4)), num_steps=50,
                           guidance_scale=1.0, image_size=size, progress=False)
    assert images.shape == (2, size, size, 3)
    assert float(jnp.sqrt(jnp.mean((images - target) ** 2))) < 0.03


def test_resize_align_corners_matches_interpolation():
    x = np.random.default_rng(0).uniform(size=(2, 5, 7, 3)).astype(np.float32)
    out = np.asarray(resize_align_corners(jnp.asarray(x), 11))
    ys, xs = np.meshgrid(np.linspace(0, 4, 11), np.linspace(0, 6, 11), indexing="ij")
    expected = np.stack([[map_coordinates(x[n, :, :, c], [ys, xs], order=1) for c in range(3)]
                         for n in range(2)]).transpose(0, 2, 3, 1)
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_stage2_rejects_mismatched_low_res():
    with pytest.raises(ValueError, match="low_res"):
        sample_stage2(lambda *a: None, None, jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)), jnp.zeros((2, 4, 4)),
                      jnp.zeros((4, 4)), num_steps=2, image_size=16)


def _unet_for_t5(src, dst, text_dim=32):
    """Copies a tiny IF UNet fixture with its text-input width changed to the T5 fixture's d_model."""
    config = json.load(open(os.path.join(src, "config.json")))
    old = config["encoder_hid_dim"]
    rng = np.random.default_rng(0)
    tensors = {}
    for key, value in load_safetensors_dir(src, "diffusion_pytorch_model").items():
        value = value.astype(np.float32)
        if key.startswith(("add_embedding.", "encoder_hid_proj.")) and old in value.shape:
            shape = tuple(text_dim if s == old else s for s in value.shape)
            value = (rng.normal(size=shape) * 0.2 + (key.endswith("norm1.weight"))).astype(np.float32)
        tensors[key] = value
    os.makedirs(dst)
    save_file(tensors, os.path.join(dst, "diffusion_pytorch_model.safetensors"))
    json.dump({**config, "encoder_hid_dim": text_dim}, open(os.path.join(dst, "config.json"), "w"))


def test_generate_images_end_to_end(tmp_path):
    stage1, stage2 = tmp_path / "IF-I", tmp_path / "IF-II"
    _unet_for_t5(os.path.join(FIXTURES, "if_unet", "stage1", "unet"), str(stage1 / "unet"))
    _unet_for_t5(os.path.join(FIXTURES, "if_unet", "stage2", "unet"), str(stage2 / "unet"))
    for sub in ("text_encoder", "tokenizer"):
        shutil.copytree(os.path.join(FIXTURES, "t5", sub), stage1 / sub)
    run = lambda seed: generate_images(str(stage1), str(stage2), ["riding a bike", "playing a drum"], 2, seed=seed,
                                       cache_dir=str(tmp_path / "cache"), dtype=jnp.float32, batch_size=4,
                                       stage1_steps=2, stage2_steps=2, progress=False)
    images = run(0)  # tiny random UNets (tests/fixtures/if_unet) with the tiny T5 (tests/fixtures/t5)
    assert images.dtype == np.uint8 and images.shape == (4, 16, 16, 3)
    assert images.std() > 10  # thresholded samples spread over the range, not a constant
    np.testing.assert_array_equal(images, run(0))
    assert not np.array_equal(images, run(1))
    assert not np.array_equal(images[0], images[2])  # different prompts, different images
    seeded = lambda prompts, seeds: generate_images(  # noqa: E731
        str(stage1), str(stage2), prompts, 2, prompt_seeds=seeds, cache_dir=str(tmp_path / "cache"),
        dtype=jnp.float32, batch_size=4, stage1_steps=2, stage2_steps=2, progress=False)
    # A prompt's images depend on its own seed only, not on the prompts sharing the call.
    np.testing.assert_array_equal(seeded(["riding a bike", "playing a drum"], [7, 8])[2:],
                                  seeded(["playing a drum"], [8]))
