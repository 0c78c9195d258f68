"""The IF UNet's forward pass as the training step runs it: batch 8 (four SDS views, each with and
without text), 64x64, on a precomputed text context, in bfloat16. The UNet is the 4.43 B-parameter
stand-in of docs/method.md §3 (IF-I-XL's layout, random weights, labelled as such). Prints one
table: XLA compile time, the median forward, and with --trace the device time per
forward by kernel (where the UNet's part of the training step goes, without the renders).

    GPU:        python scripts/bench_unet.py --trace /tmp/unet_trace
    CPU check:  python scripts/bench_unet.py --small
"""
import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

PROFILED = 5  # forward passes in the trace


def main():
    import jax
    import jax.numpy as jnp

    from guidance import IFUNet, encode_text
    from scripts.bench_guidance import SMALL, STAND_IN, stand_in_params, timed
    from scripts.bench_train_step import kernel_table, print_table

    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true", help="a tiny UNet of the same layout (CPU)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--trace", metavar="DIR", help="jax.profiler trace of a few forwards here; "
                                                   "prints the device time by kernel")
    args = ap.parse_args()

    config = SMALL if args.small else STAND_IN
    module = IFUNet.from_config(config, dtype=jnp.bfloat16, source="stand-in")
    key = jax.random.PRNGKey(0)
    params = jax.block_until_ready(stand_in_params(module, key, jnp.bfloat16))
    n_params = sum(p.size for p in jax.tree_util.tree_leaves(params))
    emb = jax.random.normal(jax.random.fold_in(key, 1),
                            (args.batch, 77, config["encoder_hid_dim"]), jnp.bfloat16)
    context = jax.jit(lambda p, e: encode_text(module, p, e))(params, emb)
    size = config["sample_size"]
    x = jax.random.normal(jax.random.fold_in(key, 2), (args.batch, size, size, 3), jnp.bfloat16)
    t = jnp.linspace(20, 980, args.batch).astype(jnp.int32)

    forward = jax.jit(lambda p, x, t, c: module.apply({"params": p}, x, t, c))
    t0 = time.perf_counter()
    compiled = forward.lower(params, x, t, context).compile()
    compile_s = time.perf_counter() - t0
    ms = timed(lambda: compiled(params, x, t, context), jax.block_until_ready, 1, args.iters)
    if args.trace:
        jax.profiler.start_trace(args.trace, create_perfetto_trace=True)
        for _ in range(PROFILED):
            out = compiled(params, x, t, context)
        out.block_until_ready()
        jax.profiler.stop_trace()
        print(kernel_table(args.trace, PROFILED))
    print_table("IF UNet forward", [
        ("device", jax.devices()[0].device_kind),
        ("UNet", f"{'tiny' if args.small else 'stand-in'} of IF-I-XL's layout, "
                 f"{n_params:,} params, random weights, bfloat16"),
        ("batch", str(args.batch)),
        ("XLA compile [s]", f"{compile_s:.1f}"),
        (f"forward, median of {args.iters} [ms]", f"{ms:.2f}")])


if __name__ == "__main__":
    main()
