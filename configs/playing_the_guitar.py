"""Release scene: playing the guitar (docs/method.md §2.6).

The values of the release's InterGen/configs/interfusion-if/playing_the_guitar.yaml. Its guide pose
is a file of the release's own runs, not shipped, so a built-in preset stands in.
"""
from configs.base import scene_config


def get_config():
    return scene_config(
        "playing_the_guitar",
        "a guitar",
        "playing the guitar",
        "preset:playing",
        person="a man in a quilted gilet and moleskin trousers",
        mode="default",
        distance_range=(2.5, 3.0),
        shape_weights=(0.001, 0.01, 0.1),
    )
