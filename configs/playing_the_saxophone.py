"""Release scene: playing the saxophone."""
from configs.base import scene_config


def get_config():
    return scene_config(
        'playing_the_saxophone',
        'a saxophone',
        'playing the saxophone',
        'preset:playing',
    )
