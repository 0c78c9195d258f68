"""UNet precision for score distillation: float32, bfloat16 and float16 on the full-scale stand-in.

The 4.43 B-parameter stand-in of docs/method.md §3 (IF-I-XL's layout, random weights, labelled as such) is
drawn once in float32 on the device and cast to bfloat16 and float16, so the three UNets share
their weights. One SDS batch of the training step (four noisy 64x64 images, each with a text and
an empty-prompt embedding: one batch-8 call) runs through each, and the table gives, per dtype,
against float32:
- the relative L2 error of the raw UNet output;
- the relative error of the guided prediction eps_text + 20 (eps_text - eps_uncond) (docs/method.md §2.5);
- the cosine similarity of the SDS gradient (uniform weighting: guided prediction minus noise);
- the forward time at batch 8 and the non-finite outputs.
float32 runs its matrix products at full precision (no TF32), the yardstick.
The text and empty embeddings differ as little as real prompt / empty-prompt pairs do: the empty
one is a random base, each text one that base plus a random perturbation of relative size delta
(--deltas); the guidance scale multiplies their small difference by 20, so rounding shows there.

    GPU:        python scripts/bench_precision.py
    CPU check:  python scripts/bench_precision.py --small
"""
import argparse
import contextlib
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from guidance import IFUNet, ddpm_alphas_cumprod, to_model_space  # noqa: E402
from scripts.bench_guidance import SMALL, STAND_IN, stand_in_params  # noqa: E402

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
GUIDANCE_SCALE = 20.0
PAIRS, TOKENS, SIZE = 4, 77, 64


def sds_inputs(key, dim, deltas):
    """The UNet inputs of one SDS batch per delta: (x_t [2P,64,64,3], t [2P], embeddings
    [2P,77,dim]) with the P text rows first, and the noise [P,64,64,3] of x_t."""
    k_img, k_t, k_noise, k_base, k_pert = jax.random.split(key, 5)
    images = jax.random.uniform(k_img, (PAIRS, SIZE, SIZE, 3))
    t = jax.random.randint(k_t, (PAIRS,), 20, 981, dtype=jnp.int32)
    noise = jax.random.normal(k_noise, (PAIRS, SIZE, SIZE, 3))
    alpha_bar = jnp.asarray(ddpm_alphas_cumprod())[t][:, None, None, None]
    x_t = jnp.sqrt(alpha_bar) * to_model_space(images) + jnp.sqrt(1.0 - alpha_bar) * noise
    base = jax.random.normal(k_base, (TOKENS, dim))
    perturbation = jax.random.normal(k_pert, (PAIRS, TOKENS, dim))
    batches = {}
    for delta in deltas:
        text = base + delta * perturbation  # both N(0, 1) entries: relative size delta
        emb = jnp.concatenate([text, jnp.broadcast_to(base, text.shape)])
        batches[delta] = (jnp.concatenate([x_t, x_t]), jnp.concatenate([t, t]), emb)
    return batches, noise


def guided(out):
    """Guided prediction [P,64,64,3] (float64) of a UNet output [2P,64,64,6], text rows first."""
    eps = np.asarray(out[..., :3], np.float64)
    eps_text, eps_uncond = eps[:PAIRS], eps[PAIRS:]
    return eps_text + GUIDANCE_SCALE * (eps_text - eps_uncond)


def rel_err(a, ref):
    return float(np.linalg.norm(a - ref) / np.linalg.norm(ref))


def cosine(a, b):
    a, b = a.reshape(-1), b.reshape(-1)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def timed_ms(fn, warmup, iters):
    """Median milliseconds of fn() after warmup calls."""
    for _ in range(warmup):
        jax.block_until_ready(fn())
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(1e3 * (time.perf_counter() - start))
    return statistics.median(times)


def measure(config, args):
    """Per dtype: outputs per delta, forward ms, non-finite count; plus the parameter count."""
    key = jax.random.PRNGKey(0)
    dim = config["encoder_hid_dim"]
    t0 = time.perf_counter()
    params32 = jax.block_until_ready(
        stand_in_params(IFUNet.from_config(config, source="stand-in"), key))
    print(f"float32 weights drawn in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    batches, noise = sds_inputs(jax.random.fold_in(key, 1), dim, args.deltas)
    results = {}
    for name, dtype in DTYPES.items():
        module = IFUNet.from_config(config, dtype=dtype, attention_impl=args.attention,
                                    source="stand-in")
        params = jax.tree_util.tree_map(lambda w, d=dtype: w.astype(d), params32)
        fwd = jax.jit(lambda p, x, t, e, m=module: m.apply({"params": p}, x, t, e))
        # GPUs run float32 products as TF32 by default; the yardstick must not round.
        full = dtype == jnp.float32
        with jax.default_matmul_precision("highest") if full else contextlib.nullcontext():
            t0 = time.perf_counter()
            outs = {d: np.asarray(fwd(params, *b).astype(jnp.float32)) for d, b in batches.items()}
            compile_s = time.perf_counter() - t0
            first = batches[args.deltas[0]]
            ms = timed_ms(lambda p=params: fwd(p, *first), args.warmup, args.iters)
        nonfinite = sum(int(np.sum(~np.isfinite(o))) for o in outs.values())
        results[name] = dict(outs=outs, ms=ms, compile_s=compile_s, nonfinite=nonfinite)
        print(f"{name}: compile + first runs {compile_s:.1f} s, forward b8 {ms:.1f} ms",
              file=sys.stderr, flush=True)
        del params
    n_params = sum(x.size for x in jax.tree_util.tree_leaves(params32))
    return results, np.asarray(noise, np.float64), n_params


def table(results, noise, deltas):
    """Markdown table rows: per dtype, errors against float32 and the forward time."""
    ref = results["float32"]["outs"]
    pct = lambda d: f"{100 * d:g}%"  # noqa: E731
    header = (["dtype", "raw output rel. err"]
              + [f"guided rel. err, delta {pct(d)}" for d in deltas]
              + [f"SDS grad cosine, delta {pct(d)}" for d in deltas]
              + ["forward b8 [ms]", "non-finite"])
    rows = []
    for name, r in results.items():
        raw = rel_err(np.concatenate([r["outs"][d].ravel() for d in deltas]),
                      np.concatenate([ref[d].ravel() for d in deltas]))
        guided_err = [rel_err(guided(r["outs"][d]), guided(ref[d])) for d in deltas]
        grad_cos = [cosine(guided(r["outs"][d]) - noise, guided(ref[d]) - noise) for d in deltas]
        rows.append([name, f"{raw:.2e}"] + [f"{e:.2e}" for e in guided_err]
                    + [f"{c:.6f}" for c in grad_cos] + [f"{r['ms']:.1f}", str(r["nonfinite"])])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    # How far apart text and empty predictions are: what the guidance scale amplifies.
    spread = []
    for d in deltas:
        eps = ref[d][..., :3]
        spread.append(f"delta {pct(d)}: {rel_err(eps[:PAIRS], eps[PAIRS:]):.2e}")
    lines.append("\nfloat32 |eps_text - eps_uncond| / |eps_uncond|: " + ", ".join(spread))
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="a tiny UNet of the layout (CPU check)")
    ap.add_argument("--deltas", type=lambda s: [float(x) for x in s.split(",")],
                    default=[0.01, 0.1], help="relative text-embedding perturbations")
    ap.add_argument("--attention", default=None, choices=["xla", "cudnn"],
                    help="attention implementation (default: the guidance's, XLA)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--iters", type=int, default=20)
    args = ap.parse_args()
    config = SMALL if args.small else STAND_IN
    results, noise, n_params = measure(config, args)
    model = "tiny UNet (--small)" if args.small else "stand-in of IF-I-XL's layout"
    print(f"device: {jax.devices()[0].device_kind}; {model}, {n_params / 1e9:.3f} B parameters, "
          f"random weights; {PAIRS} SDS pairs (batch {2 * PAIRS}), guidance scale "
          f"{GUIDANCE_SCALE:g}, attention {args.attention or 'xla'}\n")
    print(table(results, noise, args.deltas))


if __name__ == "__main__":
    main()
