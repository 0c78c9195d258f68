"""Command-line configs: `--config path.py [--config.a.b=value ...]` through ml_collections.

Overrides are parsed by `ml_collections.config_flags`; its errors (misspelt key, wrong type) are
turned into one line that names the flag and the nearest valid key, instead of a traceback.
A resolved config is saved as a Python file whose `get_config()` rebuilds it, so a run can be
repeated from that file alone.
"""
import os
import pprint
import re

from absl import flags
from ml_collections import config_flags

from ifcommon import UserError, save_text


class ConfigError(UserError):
    """A config file or override that cannot be applied."""


def _override_flag(argv, message):
    """The `--config.x=...` argument a parse error refers to, for the message."""
    overrides = [a for a in argv if a.startswith("--config.")]
    key = message.split("'")[1] if message.count("'") >= 2 else None
    for a in overrides:
        if key and key in a.split("=")[0]:
            return a
    return overrides[-1] if overrides else "--config"


def parse_config(argv):
    """argv (program name first) -> (locked ConfigDict, remaining positional args).

    Raises ConfigError with one line naming the offending flag; the message carries ml_collections'
    "Did you mean ..." suggestion for a misspelt key.
    """
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file("config", flag_values=fv, lock_config=True, sys_argv=list(argv))
    try:
        rest = fv(list(argv))
    except flags.Error as e:
        raise ConfigError(str(e).splitlines()[0]) from None
    except (AttributeError, KeyError) as e:
        text = str(e.args[0] if e.args else e)
        key = re.search(r"'([^'\\]+)\\?'", text)
        hint = re.search(r'Did you mean "[^"]+" instead of "[^"]+"\?', text)
        raise ConfigError(
            f"{_override_flag(argv, text)}: no such config key"
            f"{' ' + repr(key.group(1)) if key else ''}{'; ' + hint.group(0) if hint else ''}"
        ) from None
    except Exception as e:  # noqa: BLE001 - whatever the user's config file raised
        raise ConfigError(f"--config: the config file failed: {type(e).__name__}: {e}") from None
    if fv["config"].value is None:
        raise ConfigError("--config is required: a Python file under configs/ with get_config()")
    path = config_flags.get_config_filename(fv["config"])
    if not os.path.isfile(path):
        raise ConfigError(f"--config: no such config file: {path}")
    return fv.config, rest[1:]


def load_config(path, overrides=()):
    """Config file path plus `a.b=value` overrides -> locked ConfigDict."""
    config, _ = parse_config(["prog", f"--config={path}"] + [f"--config.{o}" for o in overrides])
    return config


def config_source(config):
    """Python source whose get_config() returns `config` (all references resolved)."""
    body = pprint.pformat(config.to_dict(), indent=1, width=100, sort_dicts=True)
    return (
        '"""Resolved config of a run, written by interfusion_jax; re-run it with --config."""\n'
        "import ml_collections\n\n\n"
        "def get_config():\n"
        f"    return ml_collections.ConfigDict({body})\n"
    )


def save_config(config, path):
    """Write `config` as a re-runnable Python file, atomically."""
    save_text(path, config_source(config))
