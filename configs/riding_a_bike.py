"""Release scene: riding a bike."""
from configs.base import scene_config


def get_config():
    return scene_config(
        'riding_a_bike',
        'a bike',
        'riding a bike',
        'preset:riding',
    )
