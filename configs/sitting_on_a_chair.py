"""Release scene: sitting on a chair."""
from configs.base import scene_config


def get_config():
    return scene_config(
        'sitting_on_a_chair',
        'a chair',
        'sitting on a chair',
        'preset:sitting',
        mode='aug_rot',
        shape_weights=(0.001, 0.01, 0.1),
    )
