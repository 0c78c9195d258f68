"""Benchmark of the occupancy-grid renderers at release sizes (docs/method.md §2.2-2.4), for one GPU.

Two release-size ImplicitVolume fields (2^19 entries x 16 levels x 2 features) at their initial
blob density, with the occupancy grid updated a few times (warm-up updates, as in training);
64x64 rays from a random training camera, step 1.732 * 4 / 512. Prints kept samples, the sampler's
truncation (rays cut short, of those cut before they were opaque, samples dropped) and pruning
rounds, forward and forward+backward milliseconds and samples per second for the single render,
the composite and dense marching (full grid, no pruning), and forward+backward of the four renders
of a training step (object, human, composite, head) in one jitted call.

    python scripts/bench_render.py            # release sizes (GPU)
    python scripts/bench_render.py --small    # tiny sizes, runs on CPU
"""
import argparse
import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

from nerf.background import Background
from nerf.cameras import generate_rays, random_camera
from nerf.field import ImplicitVolume, make_density_fn, make_radiance_fn
from nerf.material import make_shading
from nerf.occupancy import init_grid, update_grid
from nerf.render import FieldFns, render_composite, render_field
from configs.base import get_config
from interfusion_jax.train_step import StepSettings, march_config


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--small", action="store_true", help="tiny sizes for a CPU check")
    p.add_argument("--iters", type=int, default=None, help="timed runs per case (median)")
    p.add_argument("--max-samples", type=int, default=2**16)
    p.add_argument("--max-candidates", type=int, default=2**18)
    p.add_argument("--max-rounds", type=int, default=4)
    p.add_argument("--grid-updates", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


def timed(fn, args, iters, warmup=3):
    """Median milliseconds of fn(*args) over `iters` runs after `warmup` runs (compile included
    in the first warm-up)."""
    for _ in range(warmup):
        jax.block_until_ready(fn(*args))
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def main():
    args = parse_args()
    base = get_config()
    release = march_config(base)
    if args.small:
        size, iters = 16, args.iters or 3
        volume = ImplicitVolume(n_levels=4, log2_hashmap_size=12, base_resolution=16,
                                per_level_scale=2.0, mlp_hidden=16)
        march = dataclasses.replace(release, max_samples=2**13, max_candidates=2**14)
        dense = dataclasses.replace(release, max_samples=2**17, max_candidates=2**17,
                                    alpha_threshold=0.0, early_stop_eps=0.0)
    else:
        size, iters = 64, args.iters or 50
        volume = ImplicitVolume()
        march = dataclasses.replace(release, max_samples=args.max_samples,
                                    max_candidates=args.max_candidates, max_rounds=args.max_rounds)
        dense = dataclasses.replace(release, max_samples=2**21, max_candidates=2**21,
                                    alpha_threshold=0.0, early_stop_eps=0.0)

    key = jax.random.PRNGKey(args.seed)
    k_o, k_h, k_bo, k_bh, k_cam, k_grid, k_render = jax.random.split(key, 7)
    x0 = jnp.zeros((4, 3))
    background = Background()
    params = dict(obj=volume.init(k_o, x0), human=volume.init(k_h, x0),
                  bg_obj=background.init(k_bo, x0), bg_human=background.init(k_bh, x0))
    density_fn, radiance_fn = make_density_fn(volume), make_radiance_fn(volume)

    cam = random_camera(k_cam, **StepSettings.from_config(base).camera)
    shading = make_shading(cam.light_position, "diffuse")

    def fields(p):
        def field(name, bg):
            return FieldFns(lambda x: density_fn(p[name], x),
                            lambda x, d: radiance_fn(p[name], x, d, shading),
                            lambda d: background.apply(p[bg], d))
        return field("obj", "bg_obj"), field("human", "bg_human")

    def update(grid, key, density, step):
        return update_grid(grid, key, density, step, step_size=march.step_size)[0]

    update_single = jax.jit(lambda p, g, k, s: update(g, k, fields(p)[0].density, s))
    update_sum = jax.jit(lambda p, g, k, s: update(
        g, k, lambda x: fields(p)[0].density(x) + fields(p)[1].density(x), s))
    grid, grid_sum = init_grid(radius=march.radius), init_grid(radius=march.radius)
    for i, k in enumerate(jax.random.split(k_grid, args.grid_updates)):
        grid = update_single(params, grid, k, 16 * i)
        grid_sum = update_sum(params, grid_sum, k, 16 * i)

    o, d = generate_rays(cam.c2w, cam.fovy, size, size)
    c2w_views = [cam.c2w.at[:3, 3].mul(s) for s in (0.7, 0.7, 0.8, 0.2)]
    view_rays = [generate_rays(c, cam.fovy, size, size) for c in c2w_views]

    def single(p, key, cfg, g):
        return render_field(key, o, d, g, fields(p)[0], cfg)

    def composite(p, key, cfg, g):
        obj, human = fields(p)
        return render_composite(key, o, d, g, obj, human, cfg)

    def scalar(out):
        return jnp.sum(out["comp_rgb"]) + 1e-3 * jnp.sum(out["weights"])

    def cases(render, cfg, g):
        fwd = jax.jit(lambda p, k: render(p, k, cfg, g))
        bwd = jax.jit(jax.grad(lambda p, k: scalar(render(p, k, cfg, g))))
        return fwd, bwd

    rows = []
    for name, render, cfg, g in [("single", single, march, grid),
                                 ("composite", composite, march, grid_sum),
                                 ("single dense", single, dense, init_grid()),
                                 ("composite dense", composite, dense, init_grid())]:
        fwd, bwd = cases(render, cfg, g)
        out = fwd(params, k_render)
        cut = (float(out["truncated_rays"]), float(out["open_truncated_rays"]),
               int(out["dropped_samples"]), int(out["rounds"]))
        kept = int(out["num_samples"])
        ms_f = timed(fwd, (params, k_render), iters)
        ms_b = timed(bwd, (params, k_render), iters)
        rows.append((name, kept, cut, ms_f, ms_b, kept / (ms_b * 1e-3)))

    def training_step(p, key):
        keys = jax.random.split(key, 4)
        obj, human = fields(p)
        outs = [render_field(keys[0], *view_rays[0], grid, obj, march),
                render_field(keys[1], *view_rays[1], grid, human, march),
                render_composite(keys[2], *view_rays[2], grid_sum, obj, human, march),
                render_field(keys[3], *view_rays[3], grid, human, march)]
        return sum(scalar(out) for out in outs)

    step_fn = jax.jit(jax.grad(training_step))
    ms_step = timed(step_fn, (params, k_render), iters)

    print(f"device: {jax.devices()[0].device_kind}  rays: {size}x{size}  step: "
          f"{march.step_size:.5f}  max_samples: {march.max_samples}  "
          f"max_candidates: {march.max_candidates} x {march.max_rounds} rounds  occupied cells: "
          f"{float(grid.mask.mean()):.3f} (single) {float(grid_sum.mask.mean()):.3f} (sum)")
    print(f"{'render':<16} {'kept samples':>12} {'cut rays':>9} {'cut open':>9} {'dropped':>8} "
          f"{'rounds':>6} {'fwd ms':>8} {'fwd+bwd ms':>10} {'samples/s (fwd+bwd)':>20}")
    for name, kept, (cut, cut_open, dropped, rounds), ms_f, ms_b, rate in rows:
        print(f"{name:<16} {kept:>12d} {cut:>9.2%} {cut_open:>9.2%} {dropped:>8d} {rounds:>6d} "
              f"{ms_f:>8.2f} {ms_b:>10.2f} {rate:>20.3e}")
    print(f"training step: 4 renders (object, human, composite, head) fwd+bwd: {ms_step:.2f} ms "
          f"(target < 10 ms on one H100)")


if __name__ == "__main__":
    main()
