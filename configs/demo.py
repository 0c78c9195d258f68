"""The demo: the reference scene (built-in body sitting on the built-in chair) at sizes that run on
two CPU cores in a few minutes.

No diffusion weights are needed: the guidance is the ideal denoiser of a known scene (the guide
body in `preset:sitting` on `builtin:chair`) rendered from each step's views, so the run
reconstructs that scene through the whole interaction pipeline (fields, sampler, composite renders,
SDS, body-shape losses, evaluation, meshes, metrics) and ends with a person sitting on a chair.
Text-to-3D needs DeepFloyd IF:
  python -m interfusion_jax.train --config configs/sitting_on_a_chair.py \\
      --config.guidance.model_dir=weights/IF-I-XL-v1.0
"""
from configs import reference_chair


def get_config():
    c = reference_chair.get_config()
    c.name = "demo"
    c.body.prior_resolution = 64
    c.field.update(dict(n_levels=8, log2_hashmap_size=14, per_level_scale=1.5, mlp_hidden=32))
    c.render.update(dict(width=24, height=24, num_steps_per_diagonal=256, max_samples=2**14,
                         max_candidates=2**16))
    # The release's schedules compressed to the demo's length.
    c.train.update(dict(max_steps=300, val_every=100, val_views=2, object_center_every=100,
                        object_center_resolution=64))
    c.material.ambient_only_steps = 150
    c.loss.object_sds_ramp_every = 30
    c.loss.lambda_orient = (0, 10.0, 1000.0, 150)
    c.test.update(dict(views=24, resolution=96, fps=12, mesh_resolution=64, metrics_views=4,
                       metrics_grid=64))
    return c
