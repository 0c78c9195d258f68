"""Release scene: carrying a backpack (docs/method.md §2.6).

The values of the release's InterGen/configs/interfusion-if/carrying_a_backpack.yaml. Its guide pose
is a file of the release's own runs, not shipped, so a built-in preset stands in.
"""
from configs.base import scene_config


def get_config():
    return scene_config(
        "carrying_a_backpack",
        "a backpack",
        "carrying a backpack",
        "preset:carrying",
        person="a person in a fleece pullover and hiking pants",
        mode="default",
        distance_range=(2.5, 3.0),
        shape_weights=(0.01, 0.1, 0.1),
    )
