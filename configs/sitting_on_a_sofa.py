"""Release scene: sitting on a sofa."""
from configs.base import scene_config


def get_config():
    return scene_config(
        'sitting_on_a_sofa',
        'a sofa',
        'sitting on a sofa',
        'preset:sitting',
    )
