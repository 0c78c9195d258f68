"""The interaction stage's training state and its one jitted step (SPEC 2.2-2.5).

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
from interfusion_jax.scene import Views, scene_views
from nerf.background import Background
from nerf.cameras import generate_rays, random_camera
from nerf.field import field_from_config, make_density_fn, make_radiance_fn
from nerf.material import sample_shading
from nerf.occupancy import init_grid, update_grid
from nerf.render import FieldFns, render_composite, render_field
from nerf.sampler import MarchConfig

FIELDS = ("object", "human")
# The sampler's figures, logged per render (object, human, interaction, head).
BUFFER_FIGURES = ("num_samples", "num_candidates", "rounds", "truncated_rays", "open_truncated_rays",
                  "dropped_samples")


@flax.struct.dataclass
class TrainState:
    """params {object,human}: {field, background}; grids {object, human, interaction};
    center [3]: the object centre (SPEC 2.4), refreshed outside the step."""

    step: jax.Array
    params: Any
    opt_state: Any
    grids: Any
    center: jax.Array
    key: jax.Array


class SceneModel(NamedTuple):
    """The static half of the scene: modules and settings shared by training and evaluation."""

    field: Any
    background: Any
    march: MarchConfig
    optimizer: Any
    head: jax.Array  # [3] head joint of the guide body, scene frame
    prior: Any  # pose.BodyPrior of the guide body

    def density_fn(self, params):
        return functools.partial(make_density_fn(self.field), params["field"])

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


def make_scene_model(cfg, head, prior):
    march = MarchConfig(radius=cfg.field.radius,
                        num_steps_per_diagonal=cfg.render.num_steps_per_diagonal,
                        max_samples=cfg.render.max_samples,
                        max_candidates=cfg.render.max_candidates,
                        max_rounds=cfg.render.max_rounds,
                        alpha_threshold=cfg.render.alpha_threshold)
    return SceneModel(field_from_config(cfg.field), Background(hidden=cfg.field.background_hidden),
                      march, make_optimizer(cfg.optim), jnp.asarray(head, jnp.float32), prior)


def init_state(model, cfg, key):
    k_fields, key = jax.random.split(key)
    params = {}
    for name, k in zip(FIELDS, jax.random.split(k_fields)):
        k_field, k_bg = jax.random.split(k)
        params[name] = {"field": model.field.init(k_field, jnp.zeros((1, 3))),
                        "background": model.background.init(k_bg, jnp.ones((1, 3)) / 3**0.5)}
    grids = {name: init_grid(cfg.render.grid_resolution, cfg.field.radius)
             for name in FIELDS + ("interaction",)}
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=model.optimizer.init(params), grids=grids,
                      center=jnp.zeros(3), key=key)


def _shape_subset(key, render, k):
    """Slots of up to k random valid samples (the release draws up to 80 000 points)."""
    valid = render["valid"]
    if valid.shape[0] <= k:
        return valid
    order = jnp.argsort(jnp.where(valid, jax.random.uniform(key, valid.shape), 2.0))[:k]
    return jnp.zeros_like(valid).at[order].set(valid[order])


def _field_regularisers(render, lambda_orient, loss_cfg):
    return dict(
        orient=lambda_orient * losses.orientation_loss(render["weights"], render["normal"],
                                                       render["t_dirs"], render["valid"],
                                                       render["opacity"]),
        sparsity=loss_cfg.lambda_sparsity * losses.sparsity_loss(render["opacity"]),
        opaque=loss_cfg.lambda_opaque * losses.opacity_entropy_loss(render["opacity"]),
    )


def scene_losses(params, state, model, guidance, cfg, keys):
    """Total loss and metrics of one step for `params` (everything else fixed)."""
    step = state.step
    cam = random_camera(keys["camera"], **{k: cfg.camera[k] for k in (
        "elevation_range", "azimuth_range", "distance_range", "fovy_range", "position_jitter",
        "center_jitter", "up_jitter", "light_distance_range")})
    scales = (cfg.camera.object_scale, cfg.camera.human_scale, cfg.camera.interaction_scale,
              cfg.camera.head_scale)
    c2ws, lights = scene_views(cam.c2w, cam.light_position, state.center, model.head, scales)
    h, w = cfg.render.height, cfg.render.width
    # Every material call draws its own shading, as each of the release's does: one per view,
    # and a second one for the human in the interaction view.
    shade = functools.partial(sample_shading, step=step, soft_shading=cfg.material.soft_shading,
                              ambient_only_steps=cfg.material.ambient_only_steps,
                              albedo_prob=cfg.material.albedo_prob,
                              textureless_prob=cfg.material.textureless_prob)
    shadings = [shade(k, light_position=lights[v])
                for k, v in zip(jax.random.split(keys["shading"], 5), (0, 1, 2, 3, 2))]
    fns = lambda name, i: model.field_fns(params[name], shadings[i])  # noqa: E731
    rays = [generate_rays(c2ws[v], cam.fovy, h, w) for v in range(4)]
    render_keys = jax.random.split(keys["render"], 4)
    renders = [
        render_field(render_keys[0], *rays[0], state.grids["object"], fns("object", 0), model.march),
        render_field(render_keys[1], *rays[1], state.grids["human"], fns("human", 1), model.march),
        render_composite(render_keys[2], *rays[2], state.grids["interaction"], fns("object", 2),
                         fns("human", 4), model.march),
        render_field(render_keys[3], *rays[3], state.grids["human"], fns("human", 3), model.march),
    ]
    r_obj, r_hum = renders[0], renders[1]

    images = jnp.stack([r["comp_rgb"].reshape(h, w, 3) for r in renders])
    stacked = lambda picks: jax.tree_util.tree_map(  # noqa: E731
        lambda *a: jnp.stack(a), *[shadings[i] for i in picks])
    views = Views(c2w=c2ws, fovy=cam.fovy, elevation=cam.elevation, azimuth=cam.azimuth,
                  background=jax.lax.stop_gradient(jnp.stack([r["background"] for r in renders])),
                  object_shading=stacked((0, 0, 2, 0)), human_shading=stacked((1, 1, 4, 3)))
    sds, sds_aux = guidance.loss(guidance.arrays, keys["sds"], images, views, step)

    lambda_orient = losses.schedule_value(cfg.loss.lambda_orient, step)
    terms = {"sds": sds}
    for name, render in (("object", r_obj), ("human", r_hum)):
        for k, v in _field_regularisers(render, lambda_orient, cfg.loss).items():
            terms[f"{k}_{name}"] = v
    subset = _shape_subset(keys["shape"], r_hum, cfg.loss.shape_max_points)
    occ_h, dist_h = model.prior.query(r_hum["points"])
    terms["shape_human"] = cfg.loss.lambda_shape_human * losses.human_shape_loss(
        r_hum["density"], occ_h, dist_h, subset, cfg.loss.shape_density_scale, cfg.loss.shape_sigma)
    occ_o, _ = model.prior.query(r_obj["points"])
    terms["shape_object"] = losses.object_shape_weight(step, cfg.loss.shape_weights) * \
        losses.object_shape_loss(r_obj["density"], occ_o, r_obj["valid"], cfg.loss.shape_density_scale)

    total = sum(terms.values())
    metrics = dict(terms, loss=total, sds_t=sds_aux["t"], sds_grad_norm=sds_aux["grad_norm"],
                   **{f"opacity_{v}": jnp.mean(r["opacity"]) for v, r in zip(
                       ("object", "human", "interaction", "head"), renders)},
                   nan_density=sum(r["nan_density"] for r in renders),
                   **{k: jnp.stack([r[k] for r in renders]) for k in BUFFER_FIGURES})
    return total, (metrics, images)


def _update_grids(state, model, params, key, cfg):
    dens = {name: model.density_fn(params[name]) for name in FIELDS}
    fns = dict(dens, interaction=lambda x: dens["object"](x) + dens["human"](x))
    grids = {}
    for (name, fn), k in zip(fns.items(), jax.random.split(key, 3)):
        grids[name], _ = update_grid(state.grids[name], k, fn, state.step,
                                     step_size=model.march.step_size,
                                     warmup_steps=cfg.render.grid_warmup_steps,
                                     decay=cfg.render.grid_decay, threshold=cfg.render.grid_threshold)
    return grids


def train_step(state, arrays, model, guidance, cfg):
    """(state, arrays) -> (state, metrics, images [4,H,W,3]), with model, guidance's loss and cfg
    bound (see `make_train_step`). arrays: the guidance's arrays and the body prior, passed as
    arguments so that they are not baked into the executable as constants."""
    model = model._replace(prior=arrays["prior"])
    guidance = guidance._replace(arrays=arrays["guidance"])
    key, *ks = jax.random.split(state.key, 7)
    keys = dict(zip(("camera", "shading", "render", "sds", "shape", "grid"), ks))
    # As nerfacc's estimator in threestudio: the grids follow the current fields before the
    # render, so step 0 already marches an updated grid instead of the dense initial one.
    grids = jax.lax.cond(state.step % cfg.render.grid_update_every == 0,
                         lambda: _update_grids(state, model, state.params, keys["grid"], cfg),
                         lambda: state.grids)
    state = state.replace(grids=grids)
    grad_fn = jax.value_and_grad(scene_losses, has_aux=True)
    (_, (metrics, images)), grads = grad_fn(state.params, state, model, guidance, cfg, keys)
    updates, opt_state = model.optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state, key=key)
    return new_state, metrics, images


def make_train_step(model, guidance, cfg):
    """state -> (state, metrics, images), one jitted call; the state's buffers are donated."""
    arrays = dict(guidance=guidance.arrays, prior=model.prior)
    jitted = jax.jit(functools.partial(
        train_step, model=model._replace(prior=None), guidance=guidance._replace(arrays=None),
        cfg=cfg), donate_argnums=(0,))
    return lambda state: jitted(state, arrays)
