"""Release scene: reading a laptop (docs/method.md §2.6).

The values of the release's InterGen/configs/interfusion-if/reading_a_laptop.yaml. Its guide pose is
a file of the release's own runs, not shipped, so a built-in preset stands in.
"""
from configs.base import scene_config


def get_config():
    return scene_config(
        "reading_a_laptop",
        "a laptop",
        "reading a laptop",
        "preset:sitting",
        person="a security guard",
        mode="default",
        distance_range=(2.0, 2.7),
        shape_weights=(0.001, 0.01, 0.1),
    )
