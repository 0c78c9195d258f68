"""Images per hour of pose.gen_image's sampling at several batch sizes per device, on this host's devices.

The cascade is stand-ins, labelled as such, built here without downloading anything: stage I is the
4.43 B-parameter stand-in of docs/method.md §3 (IF-I-XL's layout, scripts/bench_guidance.py), stage II has
IF-II-L's layout (diffusers' convert_if.py: five blocks of 2, 2, 3, 5, 5 layers, cross-attention
only, at 32 and 16 px, a noise-level class embedding) at widths 128 ... 1280, 1.42 B parameters
where IF-II-L has 1.2 B. Random weights in bfloat16; random prompt embeddings of T5-XXL's width.
The sampling is gen_image's own (guidance.sampling.iter_cascade): keys per image, each batch split
over jax.local_devices() with the UNets replicated.

Per batch size a first batch compiles; then batches at --timed_steps steps per stage, at twice the
stage-I steps and at twice the stage-II steps give the time of a stage-I step, of a stage-II step
and of the rest (keys, upsampling, fetching the images). A batch at IF's 100 + 50 steps, as
gen_image runs, takes the rest + 100 stage-I steps + 50 stage-II steps. Prints one table.

    GPU:        python scripts/bench_gen_image.py
    CPU check:  python scripts/bench_gen_image.py --small   (the tiny cascade of tests/fixtures/if_unet)
"""
import argparse
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _ROOT)

from guidance import MAX_LENGTH, IFUNet, kernel_fan_in  # noqa: E402
from guidance.sampling import SchedulerConfig, UNetApply, iter_cascade  # noqa: E402
from guidance.unet_weights import param_shapes  # noqa: E402
from scripts.bench_guidance import STAND_IN  # noqa: E402

STAGE2_STAND_IN = dict(  # IF-II-L's unet/config.json layout at stand-in widths
    STAND_IN, block_out_channels=[128, 256, 640, 1280, 1280], layers_per_block=[2, 2, 3, 5, 5],
    down_block_types=["ResnetDownsampleBlock2D"] * 3 + ["SimpleCrossAttnDownBlock2D"] * 2,
    up_block_types=["SimpleCrossAttnUpBlock2D"] * 2 + ["ResnetUpsampleBlock2D"] * 3,
    in_channels=6, class_embed_type="timestep", only_cross_attention=True, cross_attention_dim=1280,
    time_embedding_dim=1280, resnet_out_scale_factor=1 / 0.7071, mid_block_scale_factor=1 / 0.7071,
    sample_size=256)
FIXTURES = os.path.join(_ROOT, "tests", "fixtures", "if_unet")
FULL_STEPS = (100, 50)  # IFPipeline's and IFSuperResolutionPipeline's, as gen_image runs them
CODEBOOK_IMAGES = 245 * 250  # the release's codebook: 245 phrases, 250 images each


def stand_in(config, dtype, seed):
    """(module, params) of `config` with random weights: kernels normal / sqrt(fan-in), norm scales 1,
    biases 0. Drawn on the host, leaf by leaf: on the device every new leaf shape would compile a
    random-number kernel, and a jitted init of the 4.4 B network compiles for minutes."""
    module = IFUNet.from_config(config, dtype=dtype, source="stand-in")
    paths, treedef = jax.tree_util.tree_flatten_with_path(param_shapes(module))
    rng = np.random.default_rng(seed)

    def leaf(path, shape):
        if len(shape) >= 2:
            w = rng.standard_normal(shape, np.float32) / np.float32(np.sqrt(kernel_fan_in(shape)))
        else:
            w = np.full(shape, 1.0 if path[-1].key == "scale" else 0.0, np.float32)
        return jax.device_put(w.astype(dtype))

    return module, jax.tree_util.tree_unflatten(treedef, [leaf(p, x.shape) for p, x in paths])


def _count(n):
    return f"{n / 1e9:.2f} B" if n >= 1e8 else f"{n / 1e6:.2f} M"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true",
                    help="the tiny cascade's configs (tests/fixtures/if_unet) in float32: a CPU check")
    ap.add_argument("--batch_sizes", help="images per device, comma-separated (default 1,4,8,16; --small 1,2)")
    ap.add_argument("--timed_steps", type=int, help="steps per stage of the timed batches (default 10; --small 20)")
    ap.add_argument("--repeats", type=int, default=3, help="timed batches per step count; the fastest counts")
    args = ap.parse_args()
    batch_sizes = [int(b) for b in (args.batch_sizes or ("1,2" if args.small else "1,4,8,16")).split(",")]
    k = args.timed_steps or (20 if args.small else 10)
    if min(batch_sizes) < 1 or k < 1 or args.repeats < 1:
        sys.exit("error: --batch_sizes, --timed_steps and --repeats must be positive")

    if args.small:
        configs = []
        for stage in ("stage1", "stage2"):
            with open(os.path.join(FIXTURES, stage, "unet", "config.json")) as f:
                configs.append(json.load(f))
        dtype, names = jnp.float32, ("tiny stage I", "tiny stage II")
    else:
        configs, dtype, names = [STAND_IN, STAGE2_STAND_IN], jnp.bfloat16, ("stand-in IF-I-XL", "stand-in IF-II-L")
    devices = jax.local_devices()
    whole = NamedSharding(Mesh(np.array(devices), ("batch",)), P())
    t0 = time.perf_counter()
    stages = []
    for i, config in enumerate(configs):
        module, params = stand_in(config, dtype, i)
        # Replicated once here, so that iter_cascade's own device_put is a no-op and not timed.
        stages.append(dict(unet_fn=UNetApply(module), params=jax.device_put(params, whole),
                           image_size=config["sample_size"]))
    stages[0].update(guidance_scale=7.0, scheduler=SchedulerConfig())
    stages[1].update(guidance_scale=4.0, noise_level=250, scheduler=SchedulerConfig(sample_max_value=1.0),
                     noising_scheduler=SchedulerConfig())
    sizes = [_count(sum(x.size for x in jax.tree_util.tree_leaves(s["params"]))) for s in stages]
    jax.block_until_ready([s["params"] for s in stages])
    print(f"stand-in weights ready in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    dim = configs[0]["encoder_hid_dim"]  # both stages read the same T5 embeddings
    rng = np.random.default_rng(len(stages))
    embedding = rng.standard_normal((1, MAX_LENGTH, dim), np.float32)
    empty = rng.standard_normal((MAX_LENGTH, dim), np.float32)
    prompt_keys = jax.random.PRNGKey(7)[None]

    def seconds(per_device, steps1, steps2):
        """Wall time of one batch of per_device images on each device, at steps1 + steps2 steps."""
        stage1, stage2 = dict(stages[0], num_steps=steps1), dict(stages[1], num_steps=steps2)
        start = time.perf_counter()
        for _ in iter_cascade(stage1, stage2, embedding, empty, prompt_keys,
                              per_device * len(devices), per_device, devices, progress=False):
            pass
        return time.perf_counter() - start

    print(f"gen_image sampling: {names[0]} ({sizes[0]}) -> {names[1]} ({sizes[1]}), "
          f"{jnp.dtype(dtype).name}, random weights; {len(devices)} x {devices[0].device_kind}; "
          f"images/hour at {FULL_STEPS[0]} + {FULL_STEPS[1]} steps")
    print(f"{'per device':>10} {'batch':>6} {'compile s':>10} {'I ms/step':>10} {'II ms/step':>11} {'rest s':>7} "
          f"{'s/batch':>8} {'images/h':>9}")
    best = 0.0
    for b in batch_sizes:
        runs = [(k, k), (2 * k, k), (k, 2 * k)]
        try:
            # Each step count compiles its own small per-call computations (the step coefficients):
            # every shape runs once before the timed runs.
            first = [seconds(b, *steps) for steps in runs]
            base, more1, more2 = [min(seconds(b, *steps) for _ in range(args.repeats)) for steps in runs]
        except jax.errors.JaxRuntimeError as e:  # out of device memory, most likely
            print(f"{b:>10} {b * len(devices):>6}  failed: {str(e).splitlines()[0][:100]}")
            continue
        step1, step2 = (more1 - base) / k, (more2 - base) / k
        rest = base - k * (step1 + step2)
        per_batch = rest + FULL_STEPS[0] * step1 + FULL_STEPS[1] * step2
        rate = 3600 * b * len(devices) / per_batch
        best = max(best, rate)
        print(f"{b:>10} {b * len(devices):>6} {first[0] - base:>10.1f} {1e3 * step1:>10.1f} {1e3 * step2:>11.1f} "
              f"{rest:>7.2f} {per_batch:>8.1f} {rate:>9.0f}", flush=True)
    if best:
        print(f"the release's codebook ({CODEBOOK_IMAGES} images) at the best rate: {CODEBOOK_IMAGES / best:.1f} h")


if __name__ == "__main__":
    main()
