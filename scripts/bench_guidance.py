"""Speed, memory and agreement of the Flax IF UNet against diffusers/PyTorch, on the full-scale stand-in.

The 4.43 B-parameter stand-in of docs/method.md §3 (IF-I-XL's layout with block_out_channels [704, 1408, 2112,
2816]; random weights, labelled as such) is built by diffusers on the GPU in fp16, timed, saved with
save_pretrained (fp16 safetensors) and compared against an fp32 copy; then, in this process, loaded by
`guidance.load_if_unet` in bfloat16, checked against the PyTorch outputs and timed. The PyTorch part runs
in a child process so its GPU memory is gone before JAX starts. Prints one table.

    GPU (one python with torch, diffusers, jax):  python scripts/bench_guidance.py
    CPU check here:  .venv/bin/python scripts/bench_guidance.py --small --torch-python .venv-ref/bin/python
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from ifcommon import atomic_savez, save_text

_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))

STAND_IN = {  # IF-I-XL's unet/config.json layout at the docs/method.md §3 stand-in size
    "act_fn": "gelu", "addition_embed_type": "text", "addition_embed_type_num_heads": 64,
    "attention_head_dim": 64, "block_out_channels": [704, 1408, 2112, 2816], "class_embed_type": None,
    "cross_attention_dim": 4096, "cross_attention_norm": "group_norm",
    "down_block_types": ["ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D", "SimpleCrossAttnDownBlock2D",
                         "SimpleCrossAttnDownBlock2D"],
    "encoder_hid_dim": 4096, "encoder_hid_dim_type": "text_proj", "in_channels": 3, "layers_per_block": 3,
    "mid_block_type": "UNetMidBlock2DSimpleCrossAttn", "norm_num_groups": 32, "only_cross_attention": False,
    "out_channels": 6, "resnet_skip_time_act": True, "resnet_time_scale_shift": "scale_shift",
    "sample_size": 64, "time_embedding_act_fn": "gelu",
    "up_block_types": ["SimpleCrossAttnUpBlock2D", "SimpleCrossAttnUpBlock2D", "SimpleCrossAttnUpBlock2D",
                       "ResnetUpsampleBlock2D"],
    "upcast_attention": False,
}
SMALL = dict(STAND_IN, block_out_channels=[32, 64, 64, 64], layers_per_block=1, cross_attention_dim=64,
             encoder_hid_dim=64, addition_embed_type_num_heads=4, attention_head_dim=16, norm_num_groups=8)


def stand_in_params(module, key, dtype="float32"):
    """Random weights of the IFUNet `module` (a stand-in, labelled as such), drawn leaf by leaf on
    the device: kernels normal / sqrt(fan-in), norm scales 1, biases 0, in `dtype`. Leaf by leaf
    because a jitted init of the 4.4 B network compiles for minutes."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from guidance import kernel_fan_in
    from guidance.unet_weights import param_shapes

    paths, treedef = jax.tree_util.tree_flatten_with_path(param_shapes(module))

    def leaf(i, path, shape):
        if len(shape) >= 2:
            w = jax.random.normal(jax.random.fold_in(key, i), shape, jnp.float32)
            return (w / np.sqrt(kernel_fan_in(shape))).astype(dtype)
        return (jnp.ones if path[-1].key == "scale" else jnp.zeros)(shape, dtype)

    return jax.tree_util.tree_unflatten(
        treedef, [leaf(i, path, x.shape) for i, (path, x) in enumerate(paths)])


def timed(fn, sync, warmup: int, iters: int) -> float:
    """Median milliseconds of fn() over iters runs, after warmup runs."""
    for _ in range(warmup):
        sync(fn())
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        sync(fn())
        times.append(1e3 * (time.perf_counter() - start))
    return statistics.median(times)


def _write_json(path, data):
    save_text(path, json.dumps(data, indent=1))


def torch_phase(args):
    """Builds, times and saves the diffusers model; writes inputs and reference outputs."""
    import torch
    from diffusers import UNet2DConditionModel

    sys.path.insert(0, os.path.dirname(__file__))
    from parity_unet import randomize_

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    dtype = torch.float16 if cuda else torch.float32  # fp16 convolutions on CPU are not a fair baseline
    config = SMALL if args.small else STAND_IN
    log = {"torch_device": torch.cuda.get_device_name() if cuda else "cpu", "torch_dtype": str(dtype)}

    t0 = time.perf_counter()
    with torch.device("meta"):  # allocate once on the device, in the target dtype, then fill at random
        model = UNet2DConditionModel(**config)
    model = model.to(dtype).to_empty(device=device).eval().requires_grad_(False)
    randomize_(model, torch.Generator(device).manual_seed(0))
    log["params"] = sum(p.numel() for p in model.parameters())
    log["build_s"] = time.perf_counter() - t0

    g = torch.Generator(device).manual_seed(1)
    size, batch = config["sample_size"], 8
    inputs = {
        "sample": torch.randn(batch, config["in_channels"], size, size, generator=g, device=device),
        "timestep": torch.randint(20, 981, (batch,), generator=g, device=device),
        "encoder_hidden_states": torch.randn(batch, args.tokens, config["encoder_hid_dim"], generator=g,
                                             device=device),
    }
    cast = lambda b: {k: (v[:b].to(dtype) if v.is_floating_point() else v[:b]) for k, v in inputs.items()}
    sync = (lambda _: torch.cuda.synchronize()) if cuda else (lambda _: None)
    with torch.inference_mode():
        out_b2 = model(**cast(2)).sample.float().cpu().numpy()
        for b in (2, 8):
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            log[f"torch_ms_b{b}"] = timed(lambda: model(**cast(b)).sample, sync, args.warmup, args.iters)
            if cuda:
                log[f"torch_peak_gb_b{b}"] = torch.cuda.max_memory_allocated() / 2**30
        quarters = [{k: v[2 * i:2 * i + 2] for k, v in cast(8).items()} for i in range(4)]
        log["torch_ms_4x_b2"] = timed(lambda: [model(**q).sample for q in quarters], sync, args.warmup, args.iters)

        # fp32 reference from the same (fp16-valued) weights, TF32 off: the yardstick for both low precisions
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
        t0 = time.perf_counter()
        model = model.float()
        out_ref = model(**{k: v[:2] for k, v in inputs.items()}).sample.cpu().numpy()
        log["torch_fp32_s"] = time.perf_counter() - t0
        model = model.to(dtype)

    t0 = time.perf_counter()
    unet_dir = os.path.join(args.workdir, "model", "unet")
    tmp = tempfile.mkdtemp(dir=args.workdir, prefix=".unet-")
    model.save_pretrained(tmp, safe_serialization=True, variant="fp16" if cuda else None)
    shutil.rmtree(unet_dir, ignore_errors=True)
    os.makedirs(os.path.dirname(unet_dir), exist_ok=True)
    os.replace(tmp, unet_dir)
    log["save_s"] = time.perf_counter() - t0
    log["variant"] = "fp16" if cuda else None

    arrays = {k: v.float().cpu().numpy() if v.is_floating_point() else v.cpu().numpy() for k, v in inputs.items()}
    arrays["sample"] = arrays["sample"].transpose(0, 2, 3, 1)
    atomic_savez(os.path.join(args.workdir, "io.npz"), out_lowp_b2=out_b2.transpose(0, 2, 3, 1),
                 out_fp32_b2=out_ref.transpose(0, 2, 3, 1), **arrays)
    _write_json(os.path.join(args.workdir, "torch.json"), log)


def _guided_eps(eps):
    """Classifier-free guidance of docs/method.md §2.5 on a UNet output [2N, H, W, 6] = [conditional; unconditional]:
    first 3 channels, scale 20."""
    import jax.numpy as jnp
    eps_text, eps_uncond = jnp.split(eps[..., :3].astype(jnp.float32), 2)
    return eps_text + 20.0 * (eps_text - eps_uncond)


def jax_phase(args, log):
    import jax
    import jax.numpy as jnp
    import numpy as np

    sys.path.insert(0, _ROOT)
    from guidance import load_if_unet

    io = np.load(os.path.join(args.workdir, "io.npz"))
    t0 = time.perf_counter()
    module, params = load_if_unet(os.path.join(args.workdir, "model"), dtype=jnp.bfloat16, variant=log["variant"])
    jax.block_until_ready(params)
    log["jax_load_s"] = time.perf_counter() - t0
    log["jax_device"] = str(jax.devices()[0].device_kind)
    log["jax_params"] = sum(x.size for x in jax.tree_util.tree_leaves(params))

    inputs = [jnp.asarray(io[k]) for k in ("sample", "timestep", "encoder_hidden_states")]
    batch = lambda b: [x[:b] for x in inputs]
    sync = jax.block_until_ready
    ref, lowp = io["out_fp32_b2"], io["out_lowp_b2"]
    rel = lambda a, r: float(np.linalg.norm(a - r) / np.linalg.norm(r))
    log["relerr_torch_lowp"] = rel(lowp, ref)
    impls = args.attention.split(",") if args.attention else (
        ["xla", "cudnn"] if jax.devices()[0].platform == "gpu" else ["xla"])
    forwards = {}
    for impl in impls:  # one batch-8 compile per implementation; its first two rows are the b2 inputs
        fwd = jax.jit(module.clone(attention_impl=impl).apply)
        try:
            t0 = time.perf_counter()
            out = np.asarray(fwd({"params": params}, *batch(8))[:2].astype(jnp.float32))
            log[f"jax_compile_s_{impl}"] = time.perf_counter() - t0
        except Exception as e:  # cuDNN attention is not available on every GPU / shape
            log[f"jax_error_{impl}"] = f"{type(e).__name__}: {str(e)[:200]}"
            continue
        log[f"relerr_jax_{impl}"] = rel(out, ref)
        log[f"relerr_jax_vs_torch_lowp_{impl}"] = rel(out, lowp)
        log[f"jax_ms_b8_{impl}"] = timed(lambda: fwd({"params": params}, *batch(8)), sync, args.warmup, args.iters)
        forwards[impl] = fwd
    if not forwards:
        raise RuntimeError(f"No attention implementation ran: {log}")
    best = min(forwards, key=lambda impl: log[f"jax_ms_b8_{impl}"])
    log["jax_attention"] = best
    fwd = forwards[best]
    log["jax_ms_b2"] = timed(lambda: fwd({"params": params}, *batch(2)), sync, args.warmup, args.iters)

    # One 4-prompt SDS evaluation: four (noisy image, prompt) pairs with their unconditional twins in a
    # single batch-8 UNet call, then guidance. (Same shapes as the b8 forward: no new compile.)
    x_t, t, text = batch(4)
    sds_in = (jnp.concatenate([x_t, x_t]), jnp.concatenate([t, t]), jnp.concatenate([text, jnp.zeros_like(text)]))
    guide = jax.jit(_guided_eps)
    log["jax_ms_sds4"] = timed(lambda: guide(fwd({"params": params}, *sds_in)), sync, args.warmup, args.iters)
    stats = jax.devices()[0].memory_stats() or {}
    log["jax_peak_gb"] = stats.get("peak_bytes_in_use", float("nan")) / 2**30
    return log


def args_tol(log):
    """bfloat16 keeps 8 mantissa bits against fp16's 11: allow 8x torch fp16's own error, at least 5e-2.
    A wiring error (wrong heads, scale, layout) gives errors of order 1."""
    return max(5e-2, 8 * log["relerr_torch_lowp"])


def print_table(log):
    impl = log["jax_attention"]
    rows = [
        ("model", "IF-I-XL layout, random weights (stand-in)" if not log["small"] else "tiny (--small)"),
        ("parameters", f"{log['params'] / 1e9:.3f} B (torch), {log['jax_params'] / 1e9:.3f} B (flax)"),
        ("devices", f"torch: {log['torch_device']} {log['torch_dtype']}; jax: {log['jax_device']} bfloat16, "
                    f"attention {impl}"),
        ("rel. L2 err vs torch fp32, b2", f"flax bf16 {log[f'relerr_jax_{impl}']:.2e}, "
                                          f"torch low-prec. {log['relerr_torch_lowp']:.2e}; flax vs torch "
                                          f"low-prec. {log[f'relerr_jax_vs_torch_lowp_{impl}']:.2e}"),
        ("agreement", "OK" if log[f"relerr_jax_{impl}"] < args_tol(log) else "FAILED" + f" (tolerance "
                      f"{args_tol(log):.0e} relative L2 against torch fp32)"),
        ("forward b2 [ms]", f"flax {log['jax_ms_b2']:.1f}   torch {log['torch_ms_b2']:.1f}"),
        ("forward b8 [ms]", f"flax {log[f'jax_ms_b8_{impl}']:.1f}   torch {log['torch_ms_b8']:.1f}"),
        ("4-prompt SDS [ms]", f"flax one b8 call + CFG {log['jax_ms_sds4']:.1f}   torch 4 x b2 "
                              f"{log['torch_ms_4x_b2']:.1f}   speed-up "
                              f"{log['torch_ms_4x_b2'] / log['jax_ms_sds4']:.2f}x"),
        ("peak memory [GiB]", f"flax {log['jax_peak_gb']:.1f} (process)   torch "
                              f"{log.get('torch_peak_gb_b8', float('nan')):.1f} (b8)"),
        ("other timings [s]", f"torch build {log['build_s']:.1f}, fp32 ref {log['torch_fp32_s']:.1f}, save "
                              f"{log['save_s']:.1f}; flax load {log['jax_load_s']:.1f}, compile+run b8 "
                              + ", ".join(f"{k[len('jax_compile_s_'):]} {v:.1f}" for k, v in log.items()
                                          if k.startswith("jax_compile_s_"))),
    ]
    for k in log:
        if k.startswith("jax_ms_b8_") and k != f"jax_ms_b8_{impl}":
            rows.append((f"flax b8, attention {k[len('jax_ms_b8_'):]}", f"{log[k]:.1f} ms"))
        if k.startswith("jax_error_"):
            rows.append((k, log[k]))
    width = max(len(r[0]) for r in rows)
    print("\n| " + "quantity".ljust(width) + " | value |\n|" + "-" * (width + 2) + "|-------|")
    for name, value in rows:
        print(f"| {name.ljust(width)} | {value} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="tiny config (CPU check of the script)")
    parser.add_argument("--phase", choices=["all", "torch"], default="all", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", default="/tmp/if_unet_bench", help="model and inputs go here (~9 GB)")
    parser.add_argument("--torch-python", default=sys.executable, help="python with torch + diffusers")
    parser.add_argument("--tokens", type=int, default=77)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--attention", default=None, help="comma list of jax attention implementations "
                        "(xla, cudnn); default both on GPU")
    parser.add_argument("--keep", action="store_true", help="keep the saved model in --workdir")
    args = parser.parse_args()
    os.makedirs(args.workdir, exist_ok=True)
    if args.phase == "torch":
        torch_phase(args)
        return
    start = time.perf_counter()
    cmd = [args.torch_python, os.path.abspath(__file__), "--phase", "torch", "--workdir", args.workdir,
           "--tokens", str(args.tokens), "--warmup", str(args.warmup), "--iters", str(args.iters)]
    subprocess.run(cmd + (["--small"] if args.small else []), check=True)
    with open(os.path.join(args.workdir, "torch.json")) as f:
        log = json.load(f)
    log["small"] = args.small
    log = jax_phase(args, log)
    log["total_s"] = time.perf_counter() - start
    _write_json(os.path.join(args.workdir, "results.json"), log)
    print_table(log)
    print(f"\ntotal {log['total_s']:.0f} s; all numbers in {os.path.join(args.workdir, 'results.json')}")
    if not args.keep:
        shutil.rmtree(os.path.join(args.workdir, "model"), ignore_errors=True)


if __name__ == "__main__":
    main()
