"""T5 v1.1 text encoder in Flax (DeepFloyd IF's prompt encoder), loaded from the transformers layout, no torch.

T5 v1.1: RMS layer norm (no mean subtraction, no bias), pre-norm residual blocks, unscaled attention
logits, a learned relative position bias (bidirectional buckets) computed in the first layer and shared by
all layers, gated-GELU feed-forward (wi_0, wi_1, wo; GELU tanh approximation), final layer norm; no biases,
no dropout (inference). Reference: transformers' modeling_t5.py (T5EncoderModel).

IF repository layout: `<root>/text_encoder/config.json` + `model.safetensors` or sharded
`model-0000x-of-0000y.safetensors` with `model.safetensors.index.json` (or the `.fp16` variant), and
`<root>/tokenizer/` (spiece.model + tokenizer_config.json, read by transformers' T5Tokenizer).
"""

import dataclasses
import hashlib
import json
import math
import os
import re
import sys
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from tqdm import tqdm

from guidance.safetensors_io import assemble_params, dense_kernel, find_checkpoint, load_safetensors

MAX_LENGTH = 77
WEIGHTS_PREFIX = "model"
_ACTIVATIONS = {"gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
                "gelu": lambda x: jax.nn.gelu(x, approximate=False), "relu": jax.nn.relu, "silu": jax.nn.silu}
_HOW_TO_GET = (
    "The T5 v1.1 XXL encoder ships inside the gated DeepFloyd IF repository: accept the licence on "
    "https://huggingface.co/DeepFloyd/IF-I-XL-v1.0 while logged in, then e.g. `huggingface-cli download "
    "DeepFloyd/IF-I-XL-v1.0 --include 'text_encoder/*' 'tokenizer/*' --local-dir IF-I-XL-v1.0` and pass that "
    "folder.")
_LAYOUT = ("Expected layout: <model_dir>/text_encoder/config.json with model.safetensors or sharded "
           "model-0000x-of-0000y.safetensors + model.safetensors.index.json (or their .fp16 variant), and "
           "<model_dir>/tokenizer/spiece.model + tokenizer_config.json.")


@dataclasses.dataclass(frozen=True)
class T5Config:
    vocab_size: int
    d_model: int
    d_kv: int
    d_ff: int
    num_heads: int
    num_layers: int
    activation: str = "gelu_new"
    num_buckets: int = 32
    max_distance: int = 128
    layer_norm_epsilon: float = 1e-6

    @classmethod
    def from_dict(cls, config: dict, source: str = "config") -> "T5Config":
        proj = config.get("feed_forward_proj", "relu")
        if not proj.startswith("gated-"):
            raise ValueError(f"{source}: feed_forward_proj is {proj!r}; only T5 v1.1's gated feed-forward "
                             "('gated-gelu', as DeepFloyd IF's encoder) is supported.")
        activation = "gelu_new" if proj == "gated-gelu" else proj[len("gated-"):]
        if activation not in _ACTIVATIONS:
            raise ValueError(f"{source}: feed_forward_proj {proj!r} names an unsupported activation; supported: "
                             f"{['gated-' + a for a in _ACTIVATIONS]}.")
        try:
            return cls(vocab_size=config["vocab_size"], d_model=config["d_model"], d_kv=config["d_kv"],
                       d_ff=config["d_ff"], num_heads=config["num_heads"], num_layers=config["num_layers"],
                       activation=activation, num_buckets=config.get("relative_attention_num_buckets", 32),
                       max_distance=config.get("relative_attention_max_distance", 128),
                       layer_norm_epsilon=config.get("layer_norm_epsilon", 1e-6))
        except KeyError as e:
            raise ValueError(f"{source}: T5 config lacks the key {e.args[0]!r}.") from e


def relative_position_buckets(length: int, num_buckets: int, max_distance: int) -> np.ndarray:
    """[length, length] int32 bucket of (key position − query position), bidirectional (T5's
    _relative_position_bucket): half the buckets per sign, exact below num_buckets/4, log-spaced up to
    max_distance. float32 logs as PyTorch computes them, so boundary cases fall into the same bucket."""
    relative = np.arange(length)[None, :] - np.arange(length)[:, None]
    half = num_buckets // 2
    buckets = (relative > 0).astype(np.int64) * half
    distance = np.abs(relative)
    max_exact = half // 2
    with np.errstate(divide="ignore"):
        scaled = np.log(distance.astype(np.float32) / np.float32(max_exact)) / np.float32(
            math.log(max_distance / max_exact)) * np.float32(half - max_exact)
    large = np.minimum(max_exact + np.where(distance < max_exact, 0, scaled).astype(np.int64), half - 1)
    return (buckets + np.where(distance < max_exact, distance, large)).astype(np.int32)


class RMSNorm(nn.Module):
    eps: float

    @nn.compact
    def __call__(self, x):
        scale = self.param("scale", nn.initializers.ones, (x.shape[-1],))
        x32 = x.astype(jnp.float32)
        normed = x32 * jax.lax.rsqrt(jnp.mean(x32 ** 2, axis=-1, keepdims=True) + self.eps)
        return (scale.astype(jnp.float32) * normed).astype(x.dtype)


class T5Block(nn.Module):
    config: T5Config
    dtype: Any

    @nn.compact
    def __call__(self, x, bias):
        """x [B,L,d_model]; bias [B,H,L,L] float32 (position bias + padding mask)."""
        cfg, dt = self.config, self.dtype
        dense = lambda features, name: nn.Dense(features, use_bias=False, dtype=dt, name=name)
        h = RMSNorm(cfg.layer_norm_epsilon, name="attn_norm")(x)
        heads = lambda name: dense(cfg.num_heads * cfg.d_kv, name)(h).reshape(*h.shape[:2], cfg.num_heads, cfg.d_kv)
        q, k, v = heads("q"), heads("k"), heads("v")
        # T5 does not scale the logits by 1/sqrt(d_kv) (the scale is folded into the initialisation).
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32) + bias
        weights = jax.nn.softmax(logits, axis=-1).astype(dt)
        attn = jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(*h.shape[:2], -1)
        x = x + dense(cfg.d_model, "o")(attn)
        h = RMSNorm(cfg.layer_norm_epsilon, name="ffn_norm")(x)
        gated = _ACTIVATIONS[cfg.activation](dense(cfg.d_ff, "wi_0")(h)) * dense(cfg.d_ff, "wi_1")(h)
        return x + dense(cfg.d_model, "wo")(gated)


class T5Encoder(nn.Module):
    """(input_ids [B,L] int, attention_mask [B,L] {0,1}) -> last hidden state [B,L,d_model] (dtype)."""
    config: T5Config
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, input_ids, attention_mask):
        cfg = self.config
        length = input_ids.shape[1]
        x = nn.Embed(cfg.vocab_size, cfg.d_model, dtype=self.dtype, name="shared")(input_ids)
        buckets = relative_position_buckets(length, cfg.num_buckets, cfg.max_distance)
        position = nn.Embed(cfg.num_buckets, cfg.num_heads, dtype=jnp.float32, name="relative_attention_bias")(
            buckets)  # [L,L,H]
        mask = jnp.where(attention_mask[:, None, None, :] > 0, 0.0, jnp.finfo(jnp.float32).min)
        bias = position.transpose(2, 0, 1)[None].astype(jnp.float32) + mask
        for i in range(cfg.num_layers):
            x = T5Block(cfg, self.dtype, name=f"block_{i}")(x, bias)
        return RMSNorm(cfg.layer_norm_epsilon, name="final_layer_norm")(x)


_BLOCK_KEY = re.compile(r"encoder\.block\.(\d+)\.layer\.(0\.SelfAttention\.(q|k|v|o|relative_attention_bias)|"
                        r"0\.(layer_norm)|1\.DenseReluDense\.(wi_0|wi_1|wo)|1\.(layer_norm))\.weight")


def _flax_path(key: str) -> tuple | None:
    """transformers T5EncoderModel key -> path in T5Encoder's params (None: not a T5 v1.1 encoder key)."""
    if key in ("shared.weight", "encoder.embed_tokens.weight"):
        return ("shared", "embedding")
    if key == "encoder.final_layer_norm.weight":
        return ("final_layer_norm", "scale")
    match = _BLOCK_KEY.fullmatch(key)
    if match is None:
        return None
    block, attn, attn_norm, ffn, ffn_norm = (match.group(i) for i in (1, 3, 4, 5, 6))
    if attn == "relative_attention_bias":  # only the first layer has one
        return ("relative_attention_bias", "embedding") if block == "0" else None
    if attn_norm or ffn_norm:
        return (f"block_{block}", "attn_norm" if attn_norm else "ffn_norm", "scale")
    return (f"block_{block}", attn or ffn, "kernel")


def convert_t5_state_dict(tensors: Mapping, expected: dict, dtype, source: str) -> dict:
    """transformers-named tensors -> T5Encoder params shaped like `expected`; errors name unused keys,
    missing parameters and shape mismatches. `shared.weight` and `encoder.embed_tokens.weight` are the
    same tied embedding: either (or both) may be present."""
    expected_flat = traverse_util.flatten_dict(expected)
    by_path, unused = {}, []
    for key in sorted(tensors):
        path = _flax_path(key)
        if path is None or path not in expected_flat:
            unused.append(key)
        elif path not in by_path or key == "shared.weight":
            by_path[path] = key
    # Linear [out, in] -> Dense [in, out].
    layout = lambda array, path: dense_kernel(array) if path[-1] == "kernel" else array  # noqa: E731
    return assemble_params(tensors, by_path, unused, expected, layout, dtype, source, "T5 encoder")


def preprocess(text: str, lowercase: bool = True) -> str:
    """IFPipeline._text_preprocessing with clean_caption=False: lower-case and strip. (threestudio's SDS
    prompt processor, which the release trained with, passes the text unchanged: lowercase=False.)"""
    return text.lower().strip() if lowercase else text


def resolve_t5_dirs(model_dir: str | None, text_encoder_dir: str | None = None,
                    tokenizer_dir: str | None = None) -> tuple[str, str]:
    """(text_encoder_dir, tokenizer_dir): explicit paths, else `model_dir/text_encoder` and `model_dir/tokenizer`."""
    enc = text_encoder_dir or os.path.join(model_dir or "", "text_encoder")
    tok = tokenizer_dir or os.path.join(model_dir or "", "tokenizer")
    if not os.path.isfile(os.path.join(enc, "config.json")):
        where = f"{model_dir!r} does not exist" if model_dir and not os.path.isdir(model_dir) else \
            f"{os.path.join(enc, 'config.json')!r} is missing"
        raise FileNotFoundError(f"T5 text encoder not found: {where}. {_LAYOUT} {_HOW_TO_GET}")
    if not os.path.isdir(tok):
        raise FileNotFoundError(f"T5 tokenizer folder {tok!r} is missing. {_LAYOUT} {_HOW_TO_GET}")
    return enc, tok


def t5_weights_file(text_encoder_dir: str, variant: str | None = None) -> str | None:
    """The encoder's safetensors file or index: of `variant`, else the float16 variant before the
    plain files (the float16 weights are half the bytes to read and to hold; see load_t5_weights)."""
    if variant:
        return find_checkpoint(text_encoder_dir, WEIGHTS_PREFIX, variant)
    return (find_checkpoint(text_encoder_dir, WEIGHTS_PREFIX, "fp16")
            or find_checkpoint(text_encoder_dir, WEIGHTS_PREFIX))


def t5_model_key(text_encoder_dir: str, dtype=jnp.float32, variant: str | None = None) -> str:
    """Identity of an encoder for caches: its absolute path, a hash of its config.json, the weights
    file load_t5_weights reads and the dtype."""
    with open(os.path.join(text_encoder_dir, "config.json"), "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:16]
    weights = t5_weights_file(text_encoder_dir, variant)
    return (f"{os.path.abspath(text_encoder_dir)}|config:{digest}|"
            f"{os.path.basename(weights) if weights else None}|{jnp.dtype(dtype).name}")


class T5TextEncoder:
    """Tokenizer + Flax encoder. encode(texts) -> (embeddings [N,77,d_model] float32 NumPy,
    attention_mask [N,77] int32 NumPy); padded to 77 tokens ("max_length"), longer texts truncated."""

    def __init__(self, module: T5Encoder, params, tokenizer, model_key: str, max_length: int = MAX_LENGTH):
        self.module, self.params, self.tokenizer = module, params, tokenizer
        self.model_key, self.max_length = model_key, max_length
        self._apply = jax.jit(module.apply)

    def tokenize(self, texts: list[str], lowercase: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Token ids and mask [N, max_length]; a text longer than max_length tokens is cut, with a
        warning naming it (IF sees only its first max_length tokens)."""
        processed = [preprocess(t, lowercase) for t in texts]
        for text, ids in zip(processed, self.tokenizer(processed, add_special_tokens=True)["input_ids"]):
            if len(ids) > self.max_length:
                print(f"[interfusion] warning: prompt {text!r} has {len(ids)} tokens; only its first "
                      f"{self.max_length} are used", file=sys.stderr)
        tok = self.tokenizer(processed, padding="max_length",
                             max_length=self.max_length, truncation=True, add_special_tokens=True, return_tensors="np")
        return tok["input_ids"].astype(np.int32), tok["attention_mask"].astype(np.int32)

    def encode_ids(self, input_ids, attention_mask) -> np.ndarray:
        return np.asarray(self._apply({"params": self.params}, input_ids, attention_mask), np.float32)

    def encode(self, texts: list[str], lowercase: bool = True, batch_size: int = 8) -> tuple[np.ndarray, np.ndarray]:
        ids, mask = self.tokenize(texts, lowercase)
        chunks = []
        # A fixed batch (the last one padded) keeps one compiled shape.
        for start in tqdm(range(0, len(texts), batch_size), desc="T5 encode", disable=len(texts) <= batch_size):
            i, m = ids[start:start + batch_size], mask[start:start + batch_size]
            pad = batch_size - len(i)
            out = self.encode_ids(np.pad(i, ((0, pad), (0, 0))), np.pad(m, ((0, pad), (0, 0)), constant_values=1))
            chunks.append(out[:len(i)])
        embeddings = np.concatenate(chunks) if chunks else np.zeros((0, self.max_length, self.module.config.d_model),
                                                                    np.float32)
        return embeddings, mask


def load_t5_weights(text_encoder_dir: str, dtype=jnp.float32, variant: str | None = None):
    """(T5Encoder, params) from `text_encoder_dir` (config.json and the safetensors of `variant`, as
    load_t5_encoder's)."""
    if jnp.dtype(dtype) == jnp.float16:
        raise ValueError("load_t5_encoder: dtype float16 overflows in T5 v1.1; use float32 or bfloat16.")
    config_path = os.path.join(text_encoder_dir, "config.json")
    with open(config_path) as f:
        try:
            config = T5Config.from_dict(json.load(f), config_path)
        except json.JSONDecodeError as e:
            raise ValueError(f"{config_path}: not valid JSON: {e}") from e
    weights = t5_weights_file(text_encoder_dir, variant)
    if weights is None:
        raise FileNotFoundError(f"No T5 weights in {text_encoder_dir} (found {sorted(os.listdir(text_encoder_dir))}). "
                                f"{_LAYOUT} {_HOW_TO_GET}")
    module = T5Encoder(config, dtype=dtype)
    dummy = jnp.zeros((1, MAX_LENGTH), jnp.int32)
    shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0), dummy, dummy)["params"]
    checkpoint = load_safetensors(weights)
    # float16 weights stay float16 on the device and each layer upcasts them, which gives the
    # float32 results of the float32 copy from half the memory: T5-XXL in float32 is 19 GB, more
    # than JAX's default share (75%) of a 24 GB card.
    stored = (jnp.float16 if jnp.dtype(dtype) == jnp.float32
              and all(checkpoint.dtype(k) == "F16" for k in checkpoint) else dtype)
    return module, convert_t5_state_dict(checkpoint, shapes, stored, weights)


def load_t5_encoder(model_dir: str | None, dtype=jnp.float32, text_encoder_dir: str | None = None,
                    tokenizer_dir: str | None = None, variant: str | None = None) -> T5TextEncoder:
    """T5 v1.1 encoder of an IF repository (`model_dir` with text_encoder/ and tokenizer/, or explicit
    folders). dtype: float32 or bfloat16 (T5 v1.1 overflows in float16), the dtype it computes in.
    variant: "fp16" reads the model.fp16*.safetensors files, None those if present, else the plain
    ones (t5_weights_file)."""
    from transformers import T5Tokenizer  # imported here: transformers is slow to import

    enc_dir, tok_dir = resolve_t5_dirs(model_dir, text_encoder_dir, tokenizer_dir)
    module, params = load_t5_weights(enc_dir, dtype, variant)
    try:
        tokenizer = T5Tokenizer.from_pretrained(tok_dir)
    except (OSError, TypeError, ValueError) as e:
        raise FileNotFoundError(f"Cannot read the T5 tokenizer in {tok_dir}: {e}. {_LAYOUT} {_HOW_TO_GET}") from e
    if len(tokenizer) > module.config.vocab_size:
        raise ValueError(f"{tok_dir}: the tokenizer has {len(tokenizer)} tokens but "
                         f"{os.path.join(enc_dir, 'config.json')} has vocab_size {module.config.vocab_size}.")
    return T5TextEncoder(module, params, tokenizer, t5_model_key(enc_dir, dtype, variant))
