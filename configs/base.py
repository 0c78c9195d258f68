"""Release settings of InterFusion's interaction stage (docs/method.md §2.1-2.6).

Scene files call `scene_config(...)` with only what differs between scenes; `get_config()` here
gives the shared defaults (a standing guide body and generic prompts) so the base itself runs.
"""
import ml_collections

# The person of the base config and the demo (sitting_on_a_chair's); each scene names its own.
PERSON = "a person in a military uniform"


def prompts(obj, interaction, person=PERSON):
    """The release's four prompts (docs/method.md §2.6): object, human, interaction, head."""
    return ml_collections.ConfigDict(
        dict(
            object=f"a photo of {obj}, 8K, HD",
            human=f"a photo of {person}, 8K, HD",
            interaction=f"a photo of {person} {interaction}, 8K, HD",
            head=f"a photo of head of {person}, 8K, HD",
        )
    )


def get_config():
    c = ml_collections.ConfigDict()
    c.name = "base"
    c.seed = 0
    c.output_dir = "outputs"

    c.prompts = prompts("a chair", "standing next to a chair")

    # Guide body (docs/method.md §2.1). An empty body_model uses the built-in body; pose is `preset:NAME` or a
    # pose file (e.g. results/interfusion_poses/top_0.npy).
    c.body = ml_collections.ConfigDict(
        dict(body_model="", pose="preset:standing", mode="default", prior_resolution=128)
    )

    # Score distillation (docs/method.md §2.5). kind "if": DeepFloyd IF stage I; model_dir holds unet/,
    # text_encoder/, tokenizer/ of DeepFloyd/IF-I-XL-v1.0. kind "reference": the ideal denoiser of
    # a known reference scene (the guide body plus `reference.object_mesh`), rendered from each
    # step's views: the same SDS path with a known right answer. grad_clip: 0 (off), a number or
    # a schedule. embedding_cache: the prompt-embedding cache folder ("": the user's cache,
    # $XDG_CACHE_HOME/interfusion_jax/prompt_embeddings).
    c.guidance = ml_collections.ConfigDict(
        dict(
            kind="if",
            model_dir="",
            dtype="float16",
            guidance_scale=20.0,
            min_step_percent=0.02,
            max_step_percent=0.98,
            weighting="uniform",
            grad_clip=0.0,
            view_dependent=True,
            embedding_cache="",
        )
    )

    # The reference scene of guidance.kind="reference" and of the reference metrics: an .obj, .ply
    # or .glb in scene coordinates (z up), or builtin:chair / builtin:bike / builtin:box.
    c.reference = ml_collections.ConfigDict(dict(object_mesh=""))

    # Two identical fields, object and human (docs/method.md §2.2).
    c.field = ml_collections.ConfigDict(
        dict(
            radius=2.0,
            n_levels=16,
            n_features_per_level=2,
            log2_hashmap_size=19,
            base_resolution=16,
            per_level_scale=1.4472692374403782,
            mlp_hidden=64,
            blob_density=10.0,
            blob_radius=0.5,
            background_hidden=16,
        )
    )

    c.material = ml_collections.ConfigDict(
        dict(ambient_only_steps=2001, soft_shading=True, albedo_prob=0.25, textureless_prob=0.5)
    )

    # Occupancy-grid ray marching (docs/method.md §2.3). max_samples is the fixed sample buffer of one
    # training render (the networks run on every slot, so it sets the cost); max_candidates the
    # densities one pruning round evaluates, max_rounds the rounds at most. Budgets are shared
    # fairly between rays and cut rays from their far end; the log reports the rays cut while not
    # yet opaque. Evaluation renders never cut a ray.
    c.render = ml_collections.ConfigDict(
        dict(
            width=64,
            height=64,
            num_steps_per_diagonal=512,
            alpha_threshold=0.01,
            max_samples=2**16,
            max_candidates=2**18,
            max_rounds=4,
            grid_resolution=32,
            grid_update_every=16,
            grid_warmup_steps=256,
            grid_decay=0.95,
            grid_threshold=0.01,
        )
    )

    # Random training camera (docs/method.md §2.4); angles in degrees.
    c.camera = ml_collections.ConfigDict(
        dict(
            elevation_range=(-30.0, 90.0),
            azimuth_range=(-180.0, 180.0),
            distance_range=(2.5, 3.0),
            fovy_range=(40.0, 70.0),
            position_jitter=0.1,
            center_jitter=0.2,
            up_jitter=0.02,
            light_distance_range=(0.8, 1.5),
            object_scale=0.7,
            human_scale=0.7,
            interaction_scale=0.8,
            head_scale=0.2,
            eval_distance=2.0,
            eval_elevation=10.0,
            eval_fovy=70.0,
        )
    )

    # Loss weights (docs/method.md §2.5): a number or [start_step, start_value, end_value, end_step].
    c.loss = ml_collections.ConfigDict(
        dict(
            lambda_orient=(0, 10.0, 1000.0, 5000),
            lambda_sparsity=1.0,
            lambda_opaque=0.0,
            lambda_shape_human=1.0,
            shape_weights=(0.001, 0.01, 0.1),
            shape_weight_steps=(1000, 2000, 8000, 9000),
            shape_sigma=0.4,
            shape_density_scale=0.2,
            shape_max_points=80000,
            object_sds_ramp_every=1000,
        )
    )

    c.optim = ml_collections.ConfigDict(
        dict(lr=0.01, lr_background=0.001, b1=0.9, b2=0.99, eps=1e-15)
    )

    # log_every: steps between metrics.jsonl rows; checkpoint_every: steps between checkpoints,
    # of which the newest keep_checkpoints stay; init_from: a run folder whose fields (not its
    # optimiser or grids) a new run starts from; compile_cache: JAX's persistent compilation
    # cache in the user's cache folder ($XDG_CACHE_HOME/interfusion_jax/jax_compilation);
    # profile_at: a step from which 5 training steps are traced with jax.profiler into
    # RUN_DIR/profile (TensorBoard's profile plugin or Perfetto show it), 0 for none.
    c.train = ml_collections.ConfigDict(
        dict(
            max_steps=10000,
            log_every=10,
            val_every=200,
            val_views=4,
            checkpoint_every=1000,
            keep_checkpoints=2,
            object_center_every=1000,
            object_center_resolution=128,
            object_center_density_scale=0.2,
            init_from="",
            compile_cache=True,
            profile_at=0,
        )
    )

    # mesh_threshold: "release" (docs/method.md §2.6), "auto" or a density level (nerf/mesh.py); mesh_format:
    # glb, obj or ply (scene.glb is always written). The run ends with interfusion_jax.metrics on
    # metrics_views test views and a metrics_grid^3 grid. ray_chunk: rays an evaluation render
    # takes at once: a whole 512^2 image (scripts/bench_eval_render.py, H100: 87 ms a camera of
    # three views; chunks of 2^13 rays took 1.5 s); lower it on a GPU short of memory.
    c.test = ml_collections.ConfigDict(
        dict(views=180, resolution=512, fps=30, mesh_resolution=128, mesh_format="glb",
             mesh_threshold="release", metrics_views=8, metrics_grid=128, ray_chunk=2**18)
    )
    return c


def scene_config(name, obj, interaction, pose, person=PERSON, mode="default", distance_range=None,
                 shape_weights=None):
    """A release scene (docs/method.md §2.6): the base with its prompts (object, person, interaction text),
    guide pose, guide-body mode and the numbers that differ (camera distances, shape_weights)."""
    c = get_config()
    c.name = name
    c.prompts = prompts(obj, interaction, person)
    c.body.pose = pose
    c.body.mode = mode
    if distance_range is not None:
        c.camera.distance_range = tuple(distance_range)
    if shape_weights is not None:
        c.loss.shape_weights = tuple(shape_weights)
    return c
