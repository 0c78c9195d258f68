"""The four views of a training step and the object-centre update (docs/method.md §2.4)."""
import jax.numpy as jnp
import numpy as np

from interfusion_jax.scene import object_center, scene_views


def test_views_share_rotation_and_follow_the_release_offsets():
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    p = np.array([2.0, -1.0, 1.5])
    c2w = np.eye(4)
    c2w[:3, :3], c2w[:3, 3] = q, p
    light = np.array([0.5, 0.5, 1.0])
    center = np.array([0.3, -0.2, 0.1])
    head = np.array([0.0, 0.1, 0.7])
    c2ws, lights = scene_views(jnp.asarray(c2w), jnp.asarray(light), jnp.asarray(center),
                               jnp.asarray(head), (0.7, 0.7, 0.8, 0.2))
    want_pos = [0.7 * p + center, 0.7 * p, 0.8 * p + center / 2, 0.2 * p + head]
    want_light = [light + center, light, light + center / 2, light + head]
    for i in range(4):
        np.testing.assert_allclose(np.asarray(c2ws[i, :3, :3]), q, atol=1e-6)
        np.testing.assert_allclose(np.asarray(c2ws[i, :3, 3]), want_pos[i], atol=1e-6)
        np.testing.assert_allclose(np.asarray(lights[i]), want_light[i], atol=1e-6)
        np.testing.assert_allclose(np.asarray(c2ws[i, 3]), [0, 0, 0, 1])


def test_object_center_is_the_mean_of_the_opaque_region():
    box_lo, box_hi = np.array([0.2, -0.6, 0.0]), np.array([1.0, 0.2, 0.4])

    def density(x):
        inside = jnp.all((x >= box_lo) & (x <= box_hi), axis=-1)
        return jnp.where(inside, 50.0, 0.0)

    c = object_center(density, jnp.zeros(3), radius=2.0, resolution=41, density_scale=0.2,
                      chunk=4096)
    axis = np.linspace(-2, 2, 41)
    g = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    inside = np.all((g >= box_lo) & (g <= box_hi), axis=1)
    np.testing.assert_allclose(np.asarray(c), g[inside].mean(0), atol=1e-5)


def test_object_center_keeps_the_previous_value_when_empty():
    prev = jnp.array([0.1, 0.2, 0.3])
    c = object_center(lambda x: jnp.zeros(x.shape[0]), prev, radius=2.0, resolution=16,
                      density_scale=0.2, chunk=1000)
    np.testing.assert_allclose(np.asarray(c), np.asarray(prev))


def test_step_wiring_each_view_renders_its_fields_grid_shading_and_prompt(monkeypatch):
    """The training step's renders follow the view table: the object view renders the object
    field on the object grid, the human and head views the human field on the human grid, the
    interaction view the composite (object first) on the interaction grid; each field gets the
    shading drawn for it in that view; prompts line up with the views."""
    import jax

    from configs.base import get_config
    from interfusion_jax import scene, train_step
    from interfusion_jax.guidance_setup import prompt_texts
    from nerf.cameras import random_camera

    # Each fake render returns what it was given, so each view's result shows its inputs (the
    # views of one field run inside one lax.map, where nothing is concrete).
    monkeypatch.setattr(scene, "render_field", lambda key, o, d, grid, field, march: dict(
        composite=jnp.zeros((), bool), grid=grid, params=field[0], shading=field[1]))
    monkeypatch.setattr(scene, "render_composite", lambda key, o, d, grid, obj, hum, march: dict(
        composite=jnp.ones((), bool), grid=grid, params=jnp.stack([obj[0], hum[0]]),
        shading=jnp.stack([obj[1], hum[1]])))

    class FakeModel:
        march = None

        @staticmethod
        def field_fns(params, shading):
            return (params, shading)

    cfg = get_config()
    settings = train_step.StepSettings.from_config(cfg)._replace(height=2, width=2)
    cam = random_camera(jax.random.PRNGKey(0), **settings.camera)
    c2ws = jnp.broadcast_to(cam.c2w, (4, 4, 4))
    field_code = {"object": 1.0, "human": 2.0}
    shadings = {(v, f): jnp.float32(100 * v + field_code[f]) for v, f in scene.SHADING_DRAWS}
    state = type("S", (), {"grids": {g: jnp.float32(i + 1) for i, g in enumerate(scene.GRIDS)}})
    params = {f: jnp.float32(10 * c) for f, c in field_code.items()}
    renders = train_step.render_views(jax.random.PRNGKey(1), cam, c2ws, params, state, FakeModel,
                                      shadings, settings)
    got = [(bool(r["composite"]), float(r["grid"]), np.asarray(r["params"]).tolist(),
            np.asarray(r["shading"]).tolist()) for r in renders]
    # grids: object 1, human 2, interaction 3; params: object 10, human 20; shading 100 v + field.
    assert got == [(False, 1.0, 10.0, 1.0),
                   (False, 2.0, 20.0, 102.0),
                   (True, 3.0, [10.0, 20.0], [201.0, 202.0]),
                   (False, 2.0, 20.0, 302.0)]
    # Five material draws, one per (view, field) shown, each its own.
    assert sorted(scene.SHADING_DRAWS) == [(0, "object"), (1, "human"), (2, "human"),
                                           (2, "object"), (3, "human")]
    texts = prompt_texts(cfg.prompts, view_dependent=False)
    assert [row[0] for row in texts] == [cfg.prompts.object, cfg.prompts.human,
                                         cfg.prompts.interaction, cfg.prompts.head]
    assert scene.VIEWS == ("object", "human", "interaction", "head")


def test_eval_wiring_each_view_renders_its_field_grid_and_light(monkeypatch):
    """The evaluation renderer follows the view table as the training step does: object, human
    and interaction images in that order, each of its field(s), grid and light (the one-field
    views run inside one lax.map, the interaction view as the composite)."""
    from configs.base import get_config
    from interfusion_jax import evaluate
    from interfusion_jax.train_step import march_config

    def images(n, code, composite):  # rgb carries the inputs, opacity says which renderer ran
        return dict(comp_rgb=jnp.broadcast_to(code, (n, 3)), comp_normal=jnp.zeros((n, 3)),
                    opacity=jnp.full((n,), composite, jnp.float32))

    monkeypatch.setattr(evaluate, "render_field_complete", lambda o, d, grid, field, march:
                        images(o.shape[0], jnp.stack([grid, field[0], field[1]]), 0.0))
    monkeypatch.setattr(evaluate, "render_composite_complete", lambda o, d, grid, obj, hum, march:
                        images(o.shape[0], jnp.stack([grid, obj[0] + hum[0], obj[1]]), 1.0))

    cfg = get_config()

    class FakeModel:
        march = march_config(cfg)
        head = jnp.zeros(3)

        @staticmethod
        def field_fns(params, shading):
            return (params, shading.light_position[0])

    render = evaluate.make_eval_renderer(FakeModel, cfg)
    grids = {g: jnp.float32(i + 1) for i, g in enumerate(("object", "human", "interaction"))}
    params = {"object": jnp.float32(10.0), "human": jnp.float32(20.0)}
    center, light = jnp.array([10.0, 0.0, 0.0]), jnp.array([0.5, 0.0, 0.0])
    out = render(params, grids, center, jnp.eye(4), jnp.float32(0.7), light, jnp.int32(0), 2)
    got = np.asarray(out["rgb"][:, 0, 0]).tolist()
    # grids: object 1, human 2, interaction 3; params: object 10, human 20; light x: 0.5 plus
    # the view's offset of the object centre (object 1, human 0, interaction 0.5).
    assert got == [[1.0, 10.0, 10.5], [2.0, 20.0, 0.5], [3.0, 30.0, 5.5]]
    assert np.asarray(out["opacity"][:, 0, 0]).tolist() == [0.0, 0.0, 1.0]
