"""Release scene: playing the guitar."""
from configs.base import scene_config


def get_config():
    return scene_config(
        'playing_the_guitar',
        'a guitar',
        'playing the guitar',
        'preset:playing',
    )
