"""Release scene: pushing a shopping cart."""
from configs.base import scene_config


def get_config():
    return scene_config(
        'pushing_a_shopping_cart',
        'a shopping cart',
        'pushing a shopping cart',
        'preset:carrying',
    )
