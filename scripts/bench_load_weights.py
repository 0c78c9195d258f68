"""How long the IF UNet's and the T5 encoder's weights take to load, from safetensors to the device.

Writes stand-in checkpoints in the published layouts (random values, labelled as such): IF-I-XL's
unet/ (config.json and the fp16 variant, PyTorch names and layouts: OIHW convolutions, [out, in]
linears) at the docs/method.md §3 stand-in size, and T5 v1.1 XXL's text_encoder/ (the encoder
IF uses). Both are written as shards of about 2 GB with an index, so that writing needs little
host memory; `--scale` shrinks every width (a 2-core CPU with 24 GB: --scale 0.5). Then loads each
with the project's loaders (`guidance.load_if_unet`, `guidance.t5.load_t5_weights`), `--repeats`
times, page cache warm, and prints one table: size, tensors, seconds (first and best), GB/s.

    GPU host:   python scripts/bench_load_weights.py --dir /tmp/weights
    CPU:        python scripts/bench_load_weights.py --scale 0.5
    CPU check:  python scripts/bench_load_weights.py --small
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

T5_XXL = {  # DeepFloyd IF's text_encoder/config.json, the keys the Flax encoder reads
    "vocab_size": 32128, "d_model": 4096, "d_kv": 64, "d_ff": 10240, "num_heads": 64, "num_layers": 24,
    "feed_forward_proj": "gated-gelu", "relative_attention_num_buckets": 32,
    "relative_attention_max_distance": 128, "layer_norm_epsilon": 1e-6,
}
SHARD_BYTES = 2 * 10**9
# Flax names of the UNet whose digit suffix is a PyTorch list index (down_blocks_0 is down_blocks.0).
_INDEXED = ("down_blocks", "up_blocks", "resnets", "attentions", "downsamplers", "upsamplers", "to_out")


def unet_key(path):
    """Flax path of guidance.IFUNet -> its diffusers state-dict key (unet_weights' mapping inverted)."""
    parts = []
    for part in path:
        head, _, index = part.rpartition("_")
        parts.append(f"{head}.{index}" if index.isdigit() and head in _INDEXED else part)
    return ".".join(parts[:-1] + ["weight" if parts[-1] in ("kernel", "scale") else parts[-1]])


def t5_keys(config):
    """The transformers T5EncoderModel state-dict keys and shapes of `config` (T5 v1.1, gated)."""
    d, inner, ff = config["d_model"], config["num_heads"] * config["d_kv"], config["d_ff"]
    shapes = {"shared.weight": (config["vocab_size"], d), "encoder.final_layer_norm.weight": (d,),
              "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight":
                  (config["relative_attention_num_buckets"], config["num_heads"])}
    for b in range(config["num_layers"]):
        block = f"encoder.block.{b}.layer"
        shapes.update({f"{block}.0.SelfAttention.{p}.weight": (inner, d) for p in "qkv"})
        shapes.update({f"{block}.0.SelfAttention.o.weight": (d, inner),
                       f"{block}.0.layer_norm.weight": (d,), f"{block}.1.layer_norm.weight": (d,),
                       f"{block}.1.DenseReluDense.wi_0.weight": (ff, d),
                       f"{block}.1.DenseReluDense.wi_1.weight": (ff, d),
                       f"{block}.1.DenseReluDense.wo.weight": (d, ff)})
    return shapes


def unet_keys(config):
    """The diffusers state-dict keys and shapes (PyTorch layouts) of the IF UNet of `config`."""
    from flax import traverse_util

    from guidance import IFUNet
    from guidance.unet_weights import param_shapes, torch_key_to_flax_path

    shapes = {}
    for path, leaf in traverse_util.flatten_dict(param_shapes(IFUNet.from_config(config))).items():
        shape = leaf.shape
        if path[-1] == "kernel":  # Flax OHWI / [in, out] -> PyTorch OIHW / [out, in]
            shape = (shape[0], shape[3], shape[1], shape[2]) if len(shape) == 4 else shape[::-1]
        key = unet_key(path)
        if torch_key_to_flax_path(key, len(shape)) != path:
            raise AssertionError(f"unet_key({path}) = {key!r} does not map back")
        shapes[key] = shape
    return shapes


def write_checkpoint(folder, prefix, variant, shapes, config):
    """config.json and `shapes` (key -> shape) as float16 safetensors shards with an index."""
    import numpy as np
    from safetensors.numpy import save_file

    os.makedirs(folder, exist_ok=True)
    values = np.random.default_rng(0).standard_normal(1 << 20).astype(np.float16)
    shards, current, size = [], {}, 0
    for key, shape in shapes.items():
        current[key] = shape
        size += 2 * int(np.prod(shape))
        if size >= SHARD_BYTES:
            shards.append(current)
            current, size = {}, 0
    shards += [current] if current else []
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f)
    weight_map = {}
    for i, shard in enumerate(shards):
        name = f"{prefix}.{variant}-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file({k: np.resize(values, s) for k, s in shard.items()}, os.path.join(folder, name))
        weight_map.update(dict.fromkeys(shard, name))
    # The index last: a folder with one holds a whole checkpoint (main reuses it).
    with open(os.path.join(folder, f"{prefix}.safetensors.index.{variant}.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": weight_map}, f)


def scaled(config, keys, scale, multiple):
    """`config` with the widths under `keys` times `scale`, in multiples of `multiple`."""
    return dict(config, **{k: [max(multiple, int(c * scale) // multiple * multiple) for c in v]
                           if isinstance(v, list) else max(multiple, int(v * scale) // multiple * multiple)
                           for k, v in config.items() if k in keys})


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dir", default=None, help="keep the checkpoints here (reused when present); "
                                               "default: a temporary folder, removed at the end")
    p.add_argument("--scale", type=float, default=1.0, help="factor on every width")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--small", action="store_true", help="tiny widths (a CPU check)")
    args = p.parse_args(argv)

    import jax
    import jax.numpy as jnp

    from guidance import load_if_unet
    from guidance.t5 import load_t5_weights
    from scripts.bench_guidance import SMALL, STAND_IN

    unet_config = SMALL if args.small else scaled(STAND_IN, ("block_out_channels",), args.scale, 64)
    t5_config = (dict(T5_XXL, vocab_size=256, d_model=64, d_kv=16, d_ff=128, num_heads=4, num_layers=2)
                 if args.small else scaled(T5_XXL, ("d_model", "d_ff", "vocab_size"), args.scale, 64))
    root = args.dir or tempfile.mkdtemp(prefix="bench_load_weights_")
    models = [
        ("IF UNet (fp16 file, float16)", os.path.join(root, "unet"), "diffusion_pytorch_model",
         dict(unet_config, _class_name="UNet2DConditionModel"), lambda: unet_keys(unet_config),
         lambda d: load_if_unet(d, dtype=jnp.float16, variant="fp16")[1]),
        ("T5 encoder (fp16 file, float32 compute)", os.path.join(root, "text_encoder"), "model", t5_config,
         lambda: t5_keys(t5_config), lambda d: load_t5_weights(d, jnp.float32, variant="fp16")[1]),
    ]
    rows = []
    try:
        for name, folder, prefix, config, keys, load in models:
            index = os.path.join(folder, f"{prefix}.safetensors.index.fp16.json")
            if not os.path.isfile(index):
                print(f"writing the {name} stand-in in {folder}", file=sys.stderr)
                write_checkpoint(folder, prefix, "fp16", keys(), config)
            with open(index) as f:
                weight_map = json.load(f)["weight_map"]
            size = sum(os.path.getsize(os.path.join(folder, s)) for s in set(weight_map.values()))
            seconds = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                jax.block_until_ready(load(folder))
                seconds.append(time.perf_counter() - t0)
            rows.append((name, size / 1e9, len(weight_map), seconds[0], min(seconds)))
    finally:
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)

    print(f"\n{jax.devices()[0].device_kind}, {os.cpu_count()} CPU cores; stand-in weights (random), "
          f"scale {'small' if args.small else args.scale}")
    print("| checkpoint | GB | tensors | first load s | best load s | GB/s (best) |")
    print("|---|---|---|---|---|---|")
    for name, gb, n, first, best in rows:
        print(f"| {name} | {gb:.2f} | {n} | {first:.2f} | {best:.2f} | {gb / best:.2f} |")


if __name__ == "__main__":
    main()
