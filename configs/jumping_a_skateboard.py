"""Release scene: jumping a skateboard."""
from configs.base import scene_config


def get_config():
    return scene_config(
        'jumping_a_skateboard',
        'a skateboard',
        'jumping a skateboard',
        'preset:standing',
        mode='aug_trans',
    )
