"""Release scene: carrying a backpack."""
from configs.base import scene_config


def get_config():
    return scene_config(
        'carrying_a_backpack',
        'a backpack',
        'carrying a backpack',
        'preset:carrying',
    )
