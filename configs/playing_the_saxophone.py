"""Release scene: playing the saxophone (docs/method.md §2.6).

The values of the release's InterGen/configs/interfusion-if/playing_the_saxophone.yaml. Its guide
pose is a file of the release's own runs, not shipped, so a built-in preset stands in.
"""
from configs.base import scene_config


def get_config():
    return scene_config(
        "playing_the_saxophone",
        "a saxophone",
        "playing the saxophone",
        "preset:playing",
        person="a man in a velvet smoking jacket and silk pajama pants",
        mode="default",
        distance_range=(2.5, 3.0),
        shape_weights=(0.01, 0.1, 0.1),
    )
