"""Release scene: pushing a shopping cart (docs/method.md §2.6).

The values of the release's InterGen/configs/interfusion-if/pushing_a_shopping_cart.yaml. Its guide
pose is a file of the release's own runs, not shipped, so a built-in preset stands in.
"""
from configs.base import scene_config


def get_config():
    # The release's interaction prompt says "carrying", not "pushing" (docs/method.md §2.6): kept as released.
    return scene_config(
        "pushing_a_shopping_cart",
        "a shopping cart",
        "carrying a shopping cart",
        "preset:carrying",
        person="a man in a puffer jacket and wool beanie",
        mode="default",
        distance_range=(2.5, 3.0),
        shape_weights=(0.001, 0.01, 0.1),
    )
