"""Release scene: riding a motorcycle."""
from configs.base import scene_config


def get_config():
    return scene_config(
        'riding_a_motorcycle',
        'a motorcycle',
        'riding a motorcycle',
        'preset:riding',
    )
