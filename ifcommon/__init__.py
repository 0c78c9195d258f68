"""Helpers that every package of the project may import; this package imports nothing of ours.

files: writing files atomically, the user's cache folder and arrays cached there; errors: the
user-error type and the one error path of every command line; geometry: vector helpers.
"""
from ifcommon.errors import UserError, command_line
from ifcommon.files import (atomic_savez, atomic_write, cached_arrays, save_npy, save_png,
                            save_text, source_bytes, user_cache_dir)

__all__ = ["UserError", "command_line", "atomic_savez", "atomic_write", "cached_arrays",
           "save_npy", "save_png", "save_text", "source_bytes", "user_cache_dir"]
