"""Release scene: riding a horse."""
from configs.base import scene_config


def get_config():
    return scene_config(
        'riding_a_horse',
        'a horse',
        'riding a horse',
        'preset:riding',
    )
