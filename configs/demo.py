"""Small sizes that run on two CPU cores: the embedded built-in body, a preset pose, tiny fields.

No DeepFloyd IF weights are needed: with an empty guidance.model_dir the demo guidance is a tiny
randomly initialised UNet of the IF layout, so the run exercises every part of the pipeline but does
not produce a meaningful scene.
"""
from configs.base import scene_config


def get_config():
    c = scene_config("demo", "a chair", "sitting on a chair", "preset:sitting", mode="aug_rot")
    c.body.prior_resolution = 48
    c.field.update(dict(n_levels=8, log2_hashmap_size=14, per_level_scale=1.5, mlp_hidden=32))
    c.render.update(dict(width=32, height=32, max_samples=2**16, num_steps_per_diagonal=256))
    c.train.update(dict(max_steps=40, val_every=20, val_views=2, object_center_every=20,
                        object_center_resolution=32))
    c.material.ambient_only_steps = 10
    c.test.update(dict(views=8, resolution=64, fps=8, mesh_resolution=48))
    return c
