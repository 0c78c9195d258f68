"""Checks of what a run's config names, before anything is built or compiled.

Every file or folder the config points to (body model, pose file, IF weights, reference mesh) and
every prompt is checked first, so that a mistake costs seconds, not a compile, and is reported as
one line naming the flag and the file.
"""
import os

from guidance import check_safetensors, find_checkpoint
from guidance.unet_weights import WEIGHTS_PREFIX, resolve_unet_dir
from ifcommon import UserError
from interfusion_jax.checkpoint import complete_steps
from nerf.mesh import mesh_file_name, parse_threshold
from body import load_pose
from interfusion_jax.reference_scene import BUILTIN_OBJECTS

GUIDANCE_KINDS = ("if", "reference")


def _flag(key):
    return f"--config.{key}"


def _check_file(key, path, what):
    if not os.path.isfile(path):
        where = "does not exist" if not os.path.exists(path) else "is not a file"
        raise UserError(f"{_flag(key)}={path}: {what} {where}")


def _check_value(key, parse, value):
    """parse(value), its ValueError reported as a UserError naming the flag."""
    try:
        parse(value)
    except ValueError as e:
        raise UserError(f"{_flag(key)}={value}: {str(e).removeprefix('nerf.mesh: ')}") from None


def check_if_weights(model_dir):
    """The IF UNet under `model_dir`: its config and weights present, their headers readable."""
    key = "guidance.model_dir"
    try:
        unet_dir = resolve_unet_dir(model_dir)
    except FileNotFoundError as e:
        raise UserError(f"{_flag(key)}: {e}") from None
    weights = find_checkpoint(unet_dir, WEIGHTS_PREFIX)
    if weights is None:
        raise UserError(f"{_flag(key)}={model_dir}: no {WEIGHTS_PREFIX}*.safetensors in {unet_dir}")
    try:
        check_safetensors(weights)
    except (ValueError, FileNotFoundError) as e:
        raise UserError(f"{_flag(key)}: {e}") from None


def check_inputs(cfg):
    """Raise UserError (one line naming the flag and file) for the first thing in `cfg` that a run
    cannot use."""
    if not cfg.name or os.sep in cfg.name:
        raise UserError(f"{_flag('name')}={cfg.name!r}: a run name is a non-empty folder name")
    for view, text in cfg.prompts.items():
        if not text.strip():
            raise UserError(f"{_flag('prompts.' + view)}: the {view} prompt is empty")
    if cfg.body.body_model:
        _check_file("body.body_model", cfg.body.body_model, "SMPL-X model file")
    if not cfg.body.pose.startswith("preset:"):
        _check_file("body.pose", cfg.body.pose, "pose file")
    try:
        load_pose(cfg.body.pose)
    except (KeyError, ValueError) as e:
        raise UserError(f"{_flag('body.pose')}: {str(e).strip(chr(34) + chr(39))}") from None
    kind = cfg.guidance.kind
    if kind not in GUIDANCE_KINDS:
        raise UserError(f"{_flag('guidance.kind')}={kind!r}: expected one of "
                        f"{', '.join(GUIDANCE_KINDS)}")
    if kind == "if" and cfg.guidance.model_dir:
        check_if_weights(cfg.guidance.model_dir)
    _check_value("test.mesh_format", lambda f: mesh_file_name("mesh", f), cfg.test.mesh_format)
    _check_value("test.mesh_threshold", parse_threshold, cfg.test.mesh_threshold)
    if cfg.train.profile_at < 0:
        raise UserError(f"{_flag('train.profile_at')}={cfg.train.profile_at}: a step (0 for no "
                        "profile)")
    init_from = cfg.train.init_from
    if init_from and not complete_steps(os.path.join(init_from, "ckpt")):
        raise UserError(f"{_flag('train.init_from')}={init_from}: no complete checkpoint in "
                        f"{os.path.join(init_from, 'ckpt')}")
    mesh = cfg.reference.object_mesh
    if kind == "reference" and not mesh:
        raise UserError(f"{_flag('reference.object_mesh')} is required with guidance.kind="
                        f"reference (a mesh file or one of {', '.join(BUILTIN_OBJECTS)})")
    if mesh.startswith("builtin:"):
        if mesh not in BUILTIN_OBJECTS:
            raise UserError(f"{_flag('reference.object_mesh')}={mesh}: unknown built-in object; "
                            f"known: {', '.join(BUILTIN_OBJECTS)}")
    elif mesh:
        _check_file("reference.object_mesh", mesh, "reference mesh")
