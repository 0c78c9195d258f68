"""The interaction stage's training state and its one jitted step (docs/method.md §2.2-2.5).

One step: a random camera, the four views (object, human, interaction, head) rendered from it, one
batched SDS call of the IF UNet on the four images, the regularisers and body-shape losses, the
Adam update, and every `grid_update_every` steps the three occupancy grids (object, human, and the
interaction grid on the sum of both densities).
"""
import functools
from typing import Any, NamedTuple

import flax
import jax
import jax.numpy as jnp
import optax

from interfusion_jax import losses
from interfusion_jax.scene import (FIELDS, GRIDS, SHADING_DRAWS, VIEW_TABLE, VIEWS, Views,
                                   render_training_views, scene_views, stacked_shadings)
from nerf.background import Background
from nerf.cameras import generate_rays, random_camera
from nerf.field import (field_albedo, field_density, field_from_config, make_density_fn,
                        make_radiance_fn)
from nerf.material import sample_shading
from nerf.occupancy import init_grid, update_grid
from nerf.render import FieldFns
from nerf.sampler import MarchConfig

# The sampler's figures, logged per render (object, human, interaction, head).
BUFFER_FIGURES = ("num_samples", "num_candidates", "rounds", "truncated_rays", "open_truncated_rays",
                  "dropped_samples")


@flax.struct.dataclass
class TrainState:
    """params {object,human}: {field, background}; grids {object, human, interaction};
    center [3]: the object centre (docs/method.md §2.4), refreshed outside the step; bad_steps []: the
    steps in a row whose loss or gradient was not finite (their updates were skipped)."""

    step: jax.Array
    params: Any
    opt_state: Any
    grids: Any
    center: jax.Array
    key: jax.Array
    bad_steps: jax.Array


class SceneModel(NamedTuple):
    """The scene's modules and settings shared by training and evaluation. The training step gets
    `head` and `prior` as arguments (step_arrays), so that scenes with different guide bodies
    share one compiled step."""

    field: Any
    background: Any
    march: MarchConfig
    optimizer: Any
    head: jax.Array  # [3] head joint of the guide body, scene frame
    prior: Any  # pose.BodyPrior of the guide body

    def density_fn(self, params):
        return functools.partial(make_density_fn(self.field), params["field"])

    def compiled_density(self, params):
        """density_fn of one field for evaluation outside the training step (grids, meshes,
        metrics): nerf.field.field_density with the field's parameters bound."""
        return functools.partial(field_density, self.field, params["field"])

    def compiled_albedo(self, params):
        """The same for the albedo (nerf.field.field_albedo)."""
        return functools.partial(field_albedo, self.field, params["field"])

    def field_fns(self, params, shading):
        radiance = make_radiance_fn(self.field)
        return FieldFns(
            density=self.density_fn(params),
            radiance=lambda x, d: radiance(params["field"], x, d, shading),
            background=lambda d: self.background.apply(params["background"], d),
        )


def make_optimizer(optim):
    """Adam (0.9, 0.99, eps 1e-15); lr 0.01 for the fields, 0.001 for the backgrounds."""
    def adam(lr):
        return optax.adam(lr, b1=optim.b1, b2=optim.b2, eps=optim.eps)

    def labels(params):
        return {name: {"field": "field", "background": "background"} for name in params}

    return optax.multi_transform({"field": adam(optim.lr), "background": adam(optim.lr_background)},
                                 labels)


def march_config(cfg):
    """The sampler's settings of a config (its `render` block and the field's radius)."""
    r = cfg.render
    return MarchConfig(radius=cfg.field.radius, num_steps_per_diagonal=r.num_steps_per_diagonal,
                       max_samples=r.max_samples, max_candidates=r.max_candidates,
                       max_rounds=r.max_rounds, alpha_threshold=r.alpha_threshold)


def make_scene_model(cfg, head, prior):
    return SceneModel(field_from_config(cfg.field), Background(hidden=cfg.field.background_hidden),
                      march_config(cfg), make_optimizer(cfg.optim), jnp.asarray(head, jnp.float32),
                      prior)


def init_state(model, cfg, key):
    k_fields, key = jax.random.split(key)
    params = {}
    for name, k in zip(FIELDS, jax.random.split(k_fields)):
        k_field, k_bg = jax.random.split(k)
        params[name] = {"field": model.field.init(k_field, jnp.zeros((1, 3))),
                        "background": model.background.init(k_bg, jnp.ones((1, 3)) / 3**0.5)}
    grids = {name: init_grid(cfg.render.grid_resolution, cfg.field.radius) for name in GRIDS}
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=model.optimizer.init(params), grids=grids,
                      center=jnp.zeros(3), key=key, bad_steps=jnp.zeros((), jnp.int32))


class StepSettings(NamedTuple):
    """The config numbers the training step reads, read once from the config (`from_config`).

    The fields in STATIC shape the computation and are compiled into the step; every other number
    reaches the step as an array argument (`numbers`, put back with `with_numbers`), so that scenes
    whose camera ranges, loss weights or schedules differ share one compiled step (train_many).
    """

    height: int
    width: int
    camera: dict  # nerf.cameras.random_camera's keyword arguments
    scales: tuple  # the four views' camera position scales, VIEWS order
    shading: dict  # nerf.material.sample_shading's keyword arguments but key, step and light
    lambda_orient: Any  # a number or a schedule (losses.schedule_value)
    lambda_sparsity: float
    lambda_opaque: float
    lambda_shape_human: float
    shape_weights: tuple
    shape_weight_steps: tuple
    shape_sigma: float
    shape_density_scale: float
    shape_max_points: int
    object_sds_ramp_every: int
    grid_update_every: int
    grid_warmup_steps: int
    grid_decay: float
    grid_threshold: float

    @classmethod
    def from_config(cls, cfg):
        loss, render = cfg.loss, cfg.render
        return cls(
            height=render.height, width=render.width,
            camera={k: cfg.camera[k] for k in (
                "elevation_range", "azimuth_range", "distance_range", "fovy_range",
                "position_jitter", "center_jitter", "up_jitter", "light_distance_range")},
            scales=tuple(cfg.camera[f"{name}_scale"] for name in VIEWS),
            shading={k: cfg.material[k] for k in (
                "soft_shading", "ambient_only_steps", "albedo_prob", "textureless_prob")},
            lambda_orient=loss.lambda_orient, lambda_sparsity=loss.lambda_sparsity,
            lambda_opaque=loss.lambda_opaque, lambda_shape_human=loss.lambda_shape_human,
            shape_weights=tuple(loss.shape_weights),
            shape_weight_steps=tuple(loss.shape_weight_steps), shape_sigma=loss.shape_sigma,
            shape_density_scale=loss.shape_density_scale, shape_max_points=loss.shape_max_points,
            object_sds_ramp_every=loss.object_sds_ramp_every,
            grid_update_every=render.grid_update_every,
            grid_warmup_steps=render.grid_warmup_steps, grid_decay=render.grid_decay,
            grid_threshold=render.grid_threshold)

    def numbers(self):
        """{field: value}: the settings outside STATIC_SETTINGS as float32 or int32 arrays (of a
        dict field, its number entries; booleans choose code paths and stay static)."""
        out = {}
        for name, value in self._asdict().items():
            if name in STATIC_SETTINGS:
                continue
            if isinstance(value, dict):
                value = {k: v for k, v in value.items()
                         if not isinstance(v, bool) and f"{name}.{k}" not in STATIC_SETTINGS}
            out[name] = jax.tree_util.tree_map(_number_array, value)
        return out

    def static(self):
        """These settings without their numbers (None in their place), as compiled into a step."""
        return self.with_numbers(jax.tree_util.tree_map(lambda _: None, self.numbers()))

    def with_numbers(self, numbers):
        """These settings with `numbers` (as `numbers()` gives them, or traced) in place."""
        return self._replace(**{
            name: dict(getattr(self, name), **value) if isinstance(value, dict) else value
            for name, value in numbers.items()})


# Fields (or "field.key" of a dict field) compiled into the step: sizes, the grid refresh period
# and the object term's ramp period (which the guidance's loss also compiles in). shape_sigma and
# the elevation range too, although numbers: as constants they keep the single run's step bitwise
# what it was (XLA evaluates 2 sigma^2 and the elevation draw's arithmetic differently on
# arguments, a rounding apart), and the release's scenes share them.
STATIC_SETTINGS = ("height", "width", "shape_max_points", "object_sds_ramp_every",
                   "grid_update_every", "shape_sigma", "camera.elevation_range")


def _number_array(x):
    # Fixed dtypes: a scene's numbers then stack into arrays of one dtype across scenes.
    return jnp.asarray(x, jnp.int32 if isinstance(x, int) else jnp.float32)


def sample_views(key, state, model, settings):
    """A random camera and the four views' cameras and lights: (camera, c2ws [4,4,4], lights
    [4,3])."""
    cam = random_camera(key, **settings.camera)
    c2ws, lights = scene_views(cam.c2w, cam.light_position, state.center, model.head,
                               settings.scales)
    return cam, c2ws, lights


def draw_shadings(key, step, lights, settings):
    """{(view index, field): Shading}, the SHADING_DRAWS of one step."""
    return {(v, field): sample_shading(k, step=step, light_position=lights[v], **settings.shading)
            for (v, field), k in zip(SHADING_DRAWS, jax.random.split(key, len(SHADING_DRAWS)))}


def render_views(key, cam, c2ws, params, state, model, shadings, settings):
    """The four training renders (VIEWS order), each of its view's field(s) and grid."""
    rays = [generate_rays(c2w, cam.fovy, settings.height, settings.width) for c2w in c2ws]
    return render_training_views(jax.random.split(key, len(VIEW_TABLE)), rays, state.grids,
                                 params, shadings, model.field_fns, model.march)


def _field_regularisers(render, lambda_orient, settings):
    return dict(
        orient=lambda_orient * losses.orientation_loss(render["weights"], render["normal"],
                                                       render["t_dirs"], render["valid"],
                                                       render["opacity"]),
        sparsity=settings.lambda_sparsity * losses.sparsity_loss(render["opacity"]),
        opaque=settings.lambda_opaque * losses.opacity_entropy_loss(render["opacity"]),
    )


def regularisers(renders, step, settings):
    """Orientation, sparsity and opacity terms of the object and human views, and the
    orientation weight of this step."""
    lambda_orient = losses.schedule_value(settings.lambda_orient, step)
    terms = {}
    for name in FIELDS:
        for k, v in _field_regularisers(renders[VIEWS.index(name)], lambda_orient,
                                        settings).items():
            terms[f"{k}_{name}"] = v
    return terms, lambda_orient


def _shape_subset(key, render, k):
    """Slots of up to k random valid samples (the release draws up to 80 000 points)."""
    valid = render["valid"]
    if valid.shape[0] <= k:
        return valid
    order = jnp.argsort(jnp.where(valid, jax.random.uniform(key, valid.shape), 2.0))[:k]
    return jnp.zeros_like(valid).at[order].set(valid[order])


def shape_losses(key, renders, prior, step, settings):
    """The body-shape terms (docs/method.md §2.5) on the samples of the human and object views:
    the human fills the guide body, the object stays out of it. Also returns the object term's
    weight of this step."""
    r_obj, r_hum = renders[VIEWS.index("object")], renders[VIEWS.index("human")]
    subset = _shape_subset(key, r_hum, settings.shape_max_points)
    occ_h, dist_h = prior.query(r_hum["points"])
    occ_o, _ = prior.query(r_obj["points"])
    weight = losses.object_shape_weight(step, settings.shape_weights, settings.shape_weight_steps)
    terms = dict(
        shape_human=settings.lambda_shape_human * losses.human_shape_loss(
            r_hum["density"], occ_h, dist_h, subset, settings.shape_density_scale,
            settings.shape_sigma),
        shape_object=weight * losses.object_shape_loss(
            r_obj["density"], occ_o, r_obj["valid"], settings.shape_density_scale))
    return terms, weight


def scene_losses(params, state, model, guidance, settings, keys):
    """Total loss and (metrics, images [4,H,W,3]) of one step for `params` (all else fixed)."""
    step = state.step
    cam, c2ws, lights = sample_views(keys["camera"], state, model, settings)
    shadings = draw_shadings(keys["shading"], step, lights, settings)
    renders = render_views(keys["render"], cam, c2ws, params, state, model, shadings, settings)

    images = jnp.stack([r["comp_rgb"].reshape(settings.height, settings.width, 3)
                        for r in renders])
    object_shading, human_shading = stacked_shadings(shadings)
    views = Views(c2w=c2ws, fovy=cam.fovy, elevation=cam.elevation, azimuth=cam.azimuth,
                  background=jax.lax.stop_gradient(jnp.stack([r["background"] for r in renders])),
                  object_shading=object_shading, human_shading=human_shading)
    sds, sds_aux = guidance.loss(guidance.arrays, keys["sds"], images, views, step)

    reg_terms, lambda_orient = regularisers(renders, step, settings)
    shape_terms, shape_weight = shape_losses(keys["shape"], renders, model.prior, step, settings)
    terms = dict(sds=sds, **reg_terms, **shape_terms)
    total = sum(terms.values())
    metrics = dict(terms, loss=total, sds_t=sds_aux["t"], sds_grad_norm=sds_aux["grad_norm"],
                   weight_orient=lambda_orient, weight_shape_object=shape_weight,
                   weight_object_sds=losses.object_sds_weight(step,
                                                              settings.object_sds_ramp_every),
                   **{f"opacity_{v}": jnp.mean(r["opacity"]) for v, r in zip(VIEWS, renders)},
                   nan_density=sum(r["nan_density"] for r in renders),
                   **{k: jnp.stack([r[k] for r in renders]) for k in BUFFER_FIGURES})
    return total, (metrics, images)


def _update_grids(state, model, params, key, settings):
    dens = {name: model.density_fn(params[name]) for name in FIELDS}
    fns = dict(dens, interaction=lambda x: dens["object"](x) + dens["human"](x))
    grids = {}
    for (name, fn), k in zip(fns.items(), jax.random.split(key, 3)):
        grids[name], _ = update_grid(state.grids[name], k, fn, state.step,
                                     step_size=model.march.step_size,
                                     warmup_steps=settings.grid_warmup_steps,
                                     decay=settings.grid_decay, threshold=settings.grid_threshold)
    return grids


def _all_finite(tree):
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)]))


def train_step(state, arrays, model, guidance, settings):
    """(state, arrays) -> (state, metrics, images [4,H,W,3]), with the static halves of model,
    guidance and StepSettings bound (see `bind_step`); arrays: the scene's `step_arrays`, passed
    as arguments so that they are not baked into the executable as constants.

    A step whose loss or gradient is not finite changes neither the parameters, the optimiser
    state nor the grids; its step and key still advance (the next step draws a new camera),
    metrics["skipped"] is 1 and metrics["bad_steps"] counts such steps in a row.
    """
    model = model._replace(prior=arrays["prior"], head=arrays["head"])
    guidance = guidance._replace(arrays=arrays["guidance"])
    settings = settings.with_numbers(arrays["numbers"])
    key, *ks = jax.random.split(state.key, 7)
    keys = dict(zip(("camera", "shading", "render", "sds", "shape", "grid"), ks))
    # As nerfacc's estimator in threestudio: the grids follow the current fields before the
    # render, so step 0 already marches an updated grid instead of the dense initial one.
    grids = jax.lax.cond(state.step % settings.grid_update_every == 0,
                         lambda: _update_grids(state, model, state.params, keys["grid"], settings),
                         lambda: state.grids)
    grad_fn = jax.value_and_grad(scene_losses, has_aux=True)
    (loss, (metrics, images)), grads = grad_fn(state.params, state.replace(grids=grids), model,
                                               guidance, settings, keys)
    updates, opt_state = model.optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    finite = jnp.isfinite(loss) & _all_finite(grads)
    keep = lambda new, old: jax.tree_util.tree_map(  # noqa: E731
        lambda a, b: jnp.where(finite, a, b), new, old)
    new_state = state.replace(step=state.step + 1, key=key, params=keep(params, state.params),
                              opt_state=keep(opt_state, state.opt_state),
                              grids=keep(grids, state.grids),
                              bad_steps=jnp.where(finite, 0, state.bad_steps + 1))
    return new_state, dict(metrics, skipped=(~finite).astype(jnp.int32),
                           bad_steps=new_state.bad_steps), images


def step_arrays(model, guidance, cfg):
    """The arguments of train_step that are a scene's own: its guidance's arrays, body prior,
    head position and step numbers (StepSettings.numbers)."""
    return dict(guidance=guidance.arrays, prior=model.prior, head=model.head,
                numbers=StepSettings.from_config(cfg).numbers())


def bind_step(model, guidance, cfg):
    """train_step with the static halves of model, guidance and settings bound:
    (state, step_arrays) -> (state, metrics, images)."""
    return functools.partial(train_step, model=model._replace(prior=None, head=None),
                             guidance=guidance._replace(arrays=None),
                             settings=StepSettings.from_config(cfg).static())


def make_train_step(model, guidance, cfg):
    """state -> (state, metrics, images), one jitted call; the state's buffers are donated."""
    jitted = jax.jit(bind_step(model, guidance, cfg), donate_argnums=(0,))
    arrays = step_arrays(model, guidance, cfg)
    return lambda state: jitted(state, arrays)
