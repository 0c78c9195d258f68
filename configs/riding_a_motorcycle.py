"""Release scene: riding a motorcycle (docs/method.md §2.6).

The values of the release's InterGen/configs/interfusion-if/riding_a_motorcycle.yaml. Its guide pose
is a file of the release's own runs, not shipped, so a built-in preset stands in.
"""
from configs.base import scene_config


def get_config():
    return scene_config(
        "riding_a_motorcycle",
        "a motorcycle",
        "riding a motorcycle",
        "preset:riding",
        person="a man with blond hair wearing a brown leather jacket",
        mode="default",
        distance_range=(2.5, 3.0),
        shape_weights=(0.001, 0.01, 0.1),
    )
