"""Choosing a body: a SMPL-X model file, or the built-in body when none is given.

Its own module because it needs both the SMPL-X loader (body_model) and the built-in body, which is
itself built on body_model.
"""
from body.body_model import load_smplx
from body.builtin_body import builtin_body


def load_body(path_or_none, flat_hand_mean=True):
    """The SMPL-X model at `path_or_none` (hands as `load_smplx`'s flat_hand_mean), or the built-in
    body, with its own hands, when it is None or empty."""
    if not path_or_none:
        return builtin_body()
    return load_smplx(path_or_none, flat_hand_mean)
