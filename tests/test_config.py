"""Config files load, overrides apply with type checks, and a resolved config re-runs alone."""
import glob
import os

import pytest

from interfusion_jax.config import ConfigError, load_config, save_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "*.py")))
SCENES = [
    "sitting_on_a_chair", "carrying_a_backpack", "jumping_a_skateboard", "playing_the_guitar",
    "playing_the_saxophone", "pushing_a_shopping_cart", "reading_a_laptop", "riding_a_bike",
    "riding_a_horse", "riding_a_motorcycle", "sitting_on_a_sofa",
]


def _path(name):
    return os.path.join(ROOT, "configs", f"{name}.py")


def test_every_release_scene_has_a_config():
    names = {os.path.basename(p)[:-3] for p in CONFIGS}
    assert set(SCENES) <= names
    assert "demo" in names and "base" in names


@pytest.mark.parametrize("path", [p for p in CONFIGS if not p.endswith("__init__.py")])
def test_config_loads_and_resolves(path, tmp_path):
    c = load_config(path)
    assert c.prompts.interaction.startswith("a photo of ")
    assert c.body.mode in ("default", "aug_rot", "aug_trans")
    out = tmp_path / "config.py"
    save_config(c, str(out))
    assert load_config(str(out)).to_dict() == c.to_dict()


def test_overrides_apply_with_their_types():
    c = load_config(_path("riding_a_bike"), ["train.max_steps=7", "camera.fovy_range=(30.0,60.0)",
                                             "body.pose=results/top_0.npy"])
    assert c.train.max_steps == 7
    assert tuple(c.camera.fovy_range) == (30.0, 60.0)
    assert c.body.pose == "results/top_0.npy"


def test_misspelt_key_names_the_flag_and_the_nearest_key():
    with pytest.raises(ConfigError) as e:
        load_config(_path("riding_a_bike"), ["train.max_step=7"])
    assert "--config.train.max_step=7" in str(e.value)
    assert '"max_steps"' in str(e.value)
    with pytest.raises(ConfigError) as e:
        load_config(_path("riding_a_bike"), ["trian.seed=1"])
    assert '"train"' in str(e.value)


def test_wrong_type_fails_naming_the_flag():
    with pytest.raises(ConfigError) as e:
        load_config(_path("riding_a_bike"), ["train.max_steps=many"])
    assert "max_steps" in str(e.value)


def test_missing_or_broken_config_file(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(str(tmp_path / "absent.py"))
    bad = tmp_path / "bad.py"
    bad.write_text("def get_config():\n    return undefined_name\n")
    with pytest.raises(ConfigError, match="NameError"):
        load_config(str(bad))
