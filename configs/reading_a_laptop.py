"""Release scene: reading a laptop."""
from configs.base import scene_config


def get_config():
    return scene_config(
        'reading_a_laptop',
        'a laptop',
        'reading a laptop',
        'preset:sitting',
        distance_range=(2.0, 2.7),
    )
