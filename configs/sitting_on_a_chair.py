"""Release scene: sitting on a chair (docs/method.md §2.6).

The values of the release's InterGen/configs/interfusion-if/sitting_on_a_chair.yaml. Its guide pose
is a file of the release's own runs, not shipped, so a built-in preset stands in.
"""
from configs.base import scene_config


def get_config():
    return scene_config(
        "sitting_on_a_chair",
        "a chair",
        "sitting on a chair",
        "preset:sitting",
        person="a person in a military uniform",
        mode="aug_rot",
        distance_range=(2.5, 3.0),
        shape_weights=(0.001, 0.01, 0.1),
    )
