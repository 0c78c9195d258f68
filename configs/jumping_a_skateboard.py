"""Release scene: jumping a skateboard (docs/method.md §2.6).

The values of the release's InterGen/configs/interfusion-if/jumping_a_skateboard.yaml. Its guide
pose is a file of the release's own runs, not shipped, so a built-in preset stands in.
"""
from configs.base import scene_config


def get_config():
    return scene_config(
        "jumping_a_skateboard",
        "a skateboard",
        "jumping a skateboard",
        "preset:standing",
        person="a person in a cropped hoodie and bike shorts",
        mode="aug_trans",
        distance_range=(2.5, 3.0),
        shape_weights=(0.01, 0.1, 0.1),
    )
