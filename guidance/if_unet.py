"""DeepFloyd IF UNet (stages I and II) in Flax, built from a diffusers `unet/config.json`.

The maths follows diffusers 0.39.0's PyTorch `UNet2DConditionModel` for the blocks IF uses
(ResnetDownsampleBlock2D, SimpleCrossAttnDownBlock2D, UNetMidBlock2DSimpleCrossAttn,
SimpleCrossAttnUpBlock2D, ResnetUpsampleBlock2D). diffusers' own Flax blocks cannot be reused: they
have no scale-shift time conditioning, no added-KV attention and no resnet up/down sampling.

The text enters either as T5 embeddings or as their `TextContext` (`encode_text`): every part of
the UNet that reads only the text (the pooled text embedding, the text projection, each attention
layer's added keys and values), computed once per prompt, which a run with fixed prompts can do
instead of at every call.

Layout is NHWC; convolution kernels are stored [out, kh, kw, in] (`Conv`). Submodule names mirror
the diffusers state-dict keys (`down_blocks.0.resnets.1` is `down_blocks_0/resnets_1`), so
`unet_weights.py` converts keys mechanically. Group/layer-norm statistics and attention softmax run
in float32 whatever the parameter dtype.
"""

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

_ACTIVATIONS = {
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),  # torch.nn.GELU() is the erf form
    "mish": lambda x: x * jnp.tanh(jax.nn.softplus(x)),
    "relu": jax.nn.relu,
}
_DOWN_BLOCKS = ("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D")
_UP_BLOCKS = ("ResnetUpsampleBlock2D", "SimpleCrossAttnUpBlock2D")
_MID_BLOCKS = ("UNetMidBlock2DSimpleCrossAttn",)


def kernel_fan_in(shape):
    """The fan-in of an IFUNet kernel of `shape`: convolutions [out, kh, kw, in], dense [in, out]."""
    return math.prod(shape[1:]) if len(shape) == 4 else math.prod(shape[:-1])


class Conv(nn.Module):
    """Same-padded, stride-1 convolution of NHWC inputs with its kernel stored [out, kh, kw, in]
    (OHWI). That is the layout XLA's GPU layout assignment gives the filter of cuDNN's NHWC
    convolutions: a kernel stored as Flax's nn.Conv keeps it (HWIO) is transposed on every call
    of a jitted function that takes the weights as arguments, which for IF-I-XL means its 3.15 B
    convolution weights at every UNet call."""
    features: int
    kernel_size: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        """x [B,H,W,C] -> [B,H,W,features]."""
        k = self.kernel_size
        kernel = self.param("kernel", nn.initializers.lecun_normal(in_axis=-1, out_axis=0),
                            (self.features, k, k, x.shape[-1]))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        y = jax.lax.conv_general_dilated(x, kernel, (1, 1), [(k // 2, k // 2)] * 2,
                                         dimension_numbers=("NHWC", "OHWI", "NHWC"))
        return y + bias

# Keys of diffusers' UNet2DConditionModel config. Value None: any value is accepted because the key has
# no effect on the blocks IF uses (diffusers ignores it there too). Otherwise a predicate the value
# must satisfy, and a description of what is supported.
_is_int = lambda v: isinstance(v, int) and not isinstance(v, bool)
_is_ints = lambda v: _is_int(v) or (isinstance(v, (list, tuple)) and all(_is_int(x) for x in v))
_is_bools = lambda v: isinstance(v, bool) or (isinstance(v, (list, tuple)) and all(isinstance(x, bool) for x in v))
_is_num = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
_SUPPORTED_KEYS = {
    "sample_size": None,
    "in_channels": (_is_int, "an integer"),
    "out_channels": (_is_int, "an integer"),
    "center_input_sample": (lambda v: isinstance(v, bool), "true or false"),
    "flip_sin_to_cos": (lambda v: isinstance(v, bool), "true or false"),
    "freq_shift": (_is_num, "a number"),
    "down_block_types": (lambda v: all(b in _DOWN_BLOCKS for b in v), f"a list of {_DOWN_BLOCKS}"),
    "mid_block_type": (lambda v: v in _MID_BLOCKS, f"one of {_MID_BLOCKS}"),
    "up_block_types": (lambda v: all(b in _UP_BLOCKS for b in v), f"a list of {_UP_BLOCKS}"),
    "only_cross_attention": (_is_bools, "a boolean or a list of booleans"),
    "block_out_channels": (lambda v: isinstance(v, (list, tuple)) and all(_is_int(x) for x in v), "a list of ints"),
    "layers_per_block": (_is_ints, "an integer or a list of integers"),
    "downsample_padding": None,
    "mid_block_scale_factor": (_is_num, "a number"),
    "dropout": None,
    "act_fn": (lambda v: v in _ACTIVATIONS, f"one of {sorted(_ACTIVATIONS)}"),
    "norm_num_groups": (_is_int, "an integer (null is not supported)"),
    "norm_eps": (_is_num, "a number"),
    "cross_attention_dim": (_is_int, "an integer (one text width for all blocks)"),
    "transformer_layers_per_block": None,
    "reverse_transformer_layers_per_block": None,
    "encoder_hid_dim": (lambda v: v is None or _is_int(v), "null or an integer"),
    "encoder_hid_dim_type": (lambda v: v in (None, "text_proj"), 'null or "text_proj"'),
    "attention_head_dim": (_is_ints, "an integer or a list of integers"),
    "num_attention_heads": (lambda v: v is None, "null"),
    "dual_cross_attention": None,
    "use_linear_projection": None,
    "class_embed_type": (lambda v: v in (None, "timestep"), 'null or "timestep"'),
    "addition_embed_type": (lambda v: v in (None, "text"), 'null or "text"'),
    "addition_time_embed_dim": (lambda v: v is None, "null"),
    "num_class_embeds": (lambda v: v is None, "null"),
    "upcast_attention": None,  # the simple cross-attention blocks always upcast the softmax
    "resnet_time_scale_shift": (lambda v: v in ("default", "scale_shift"), '"default" or "scale_shift"'),
    "resnet_skip_time_act": (lambda v: isinstance(v, bool), "true or false"),
    "resnet_out_scale_factor": (_is_num, "a number"),
    "time_embedding_type": (lambda v: v == "positional", '"positional"'),
    "time_embedding_dim": (lambda v: v is None or _is_int(v), "null or an integer"),
    "time_embedding_act_fn": (lambda v: v is None or v in _ACTIVATIONS, f"null or one of {sorted(_ACTIVATIONS)}"),
    "timestep_post_act": (lambda v: v is None or v in _ACTIVATIONS, f"null or one of {sorted(_ACTIVATIONS)}"),
    "time_cond_proj_dim": (lambda v: v is None, "null"),
    "conv_in_kernel": (lambda v: _is_int(v) and v % 2 == 1, "an odd integer"),
    "conv_out_kernel": (lambda v: _is_int(v) and v % 2 == 1, "an odd integer"),
    "projection_class_embeddings_input_dim": (lambda v: v is None, "null"),
    "attention_type": (lambda v: v == "default", '"default"'),
    "class_embeddings_concat": (lambda v: v is False, "false"),
    "mid_block_only_cross_attention": (lambda v: v is None or isinstance(v, bool), "null or a boolean"),
    "cross_attention_norm": (lambda v: v in (None, "group_norm"), 'null or "group_norm"'),
    "addition_embed_type_num_heads": (_is_int, "an integer"),
}
# diffusers' defaults for keys a config.json may leave out.
_DEFAULTS = {
    "center_input_sample": False, "flip_sin_to_cos": True, "freq_shift": 0, "only_cross_attention": False,
    "mid_block_scale_factor": 1.0, "act_fn": "silu", "norm_num_groups": 32, "norm_eps": 1e-5,
    "cross_attention_dim": 1280, "encoder_hid_dim": None, "encoder_hid_dim_type": None,
    "attention_head_dim": 8, "class_embed_type": None, "addition_embed_type": None,
    "resnet_time_scale_shift": "default", "resnet_skip_time_act": False, "resnet_out_scale_factor": 1.0,
    "time_embedding_dim": None, "time_embedding_act_fn": None, "timestep_post_act": None,
    "conv_in_kernel": 3, "conv_out_kernel": 3, "mid_block_only_cross_attention": None,
    "cross_attention_norm": None, "addition_embed_type_num_heads": 64, "layers_per_block": 2,
}
_REQUIRED = ("in_channels", "out_channels", "down_block_types", "up_block_types", "block_out_channels",
             "mid_block_type")


def _per_block(value, n, key, source):
    values = tuple(value) if isinstance(value, (list, tuple)) else (value,) * n
    if len(values) != n:
        raise ValueError(f"{source}: UNet config key {key!r} has {len(values)} entries; expected one per "
                         f"block ({n}).")
    return values


@dataclasses.dataclass(frozen=True)
class IFUNetConfig:
    """The parsed, validated subset of a diffusers UNet2DConditionModel config that IF uses."""
    in_channels: int
    out_channels: int
    down_block_types: tuple
    mid_block_type: str
    up_block_types: tuple
    block_out_channels: tuple
    layers_per_block: tuple
    attention_head_dim: tuple
    cross_attention_dim: int
    only_cross_attention: tuple
    mid_block_only_cross_attention: bool
    center_input_sample: bool
    flip_sin_to_cos: bool
    freq_shift: float
    mid_block_scale_factor: float
    act_fn: str
    norm_num_groups: int
    norm_eps: float
    encoder_hid_dim: int | None
    class_embed_type: str | None
    addition_embed_type: str | None
    addition_embed_type_num_heads: int
    resnet_time_scale_shift: str
    resnet_skip_time_act: bool
    resnet_out_scale_factor: float
    time_embedding_dim: int | None
    time_embedding_act_fn: str | None
    timestep_post_act: str | None
    conv_in_kernel: int
    conv_out_kernel: int
    cross_attention_norm: str | None

    @property
    def time_dim(self) -> int:
        """Width of the time embedding."""
        return self.time_embedding_dim or self.block_out_channels[0] * 4

    @classmethod
    def from_dict(cls, config: dict, source: str = "config") -> "IFUNetConfig":
        """Validates a parsed config.json; an unknown key or unsupported value raises naming the key."""
        cfg = dict(_DEFAULTS)
        for key, value in config.items():
            if key.startswith("_"):  # _class_name, _diffusers_version, _name_or_path: metadata
                continue
            if key not in _SUPPORTED_KEYS:
                raise ValueError(f"{source}: UNet config key {key!r} is not supported by the Flax IF UNet.")
            rule = _SUPPORTED_KEYS[key]
            if rule is not None and not rule[0](value):
                raise ValueError(f"{source}: UNet config key {key!r} = {value!r} is not supported; "
                                 f"expected {rule[1]}.")
            cfg[key] = value
        class_name = config.get("_class_name", "UNet2DConditionModel")
        if class_name != "UNet2DConditionModel":
            raise ValueError(f"{source}: '_class_name' is {class_name!r}; expected 'UNet2DConditionModel'.")
        missing = [k for k in _REQUIRED if k not in cfg]
        if missing:
            raise ValueError(f"{source}: UNet config lacks the keys {missing}.")
        n = len(cfg["block_out_channels"])
        for key in ("down_block_types", "up_block_types"):
            if len(cfg[key]) != n:
                raise ValueError(f"{source}: UNet config key {key!r} has {len(cfg[key])} entries; "
                                 f"expected one per entry of 'block_out_channels' ({n}).")
        if cfg["encoder_hid_dim_type"] is not None and cfg["encoder_hid_dim"] is None:
            raise ValueError(f"{source}: 'encoder_hid_dim_type' is set but 'encoder_hid_dim' is null.")
        only_cross = cfg["only_cross_attention"]
        mid_only_cross = cfg["mid_block_only_cross_attention"]
        if mid_only_cross is None:  # diffusers: inherits a scalar only_cross_attention, else False
            mid_only_cross = only_cross if isinstance(only_cross, bool) else False
        return cls(
            in_channels=cfg["in_channels"], out_channels=cfg["out_channels"],
            down_block_types=tuple(cfg["down_block_types"]), mid_block_type=cfg["mid_block_type"],
            up_block_types=tuple(cfg["up_block_types"]),
            block_out_channels=tuple(cfg["block_out_channels"]),
            layers_per_block=_per_block(cfg["layers_per_block"], n, "layers_per_block", source),
            attention_head_dim=_per_block(cfg["attention_head_dim"], n, "attention_head_dim", source),
            cross_attention_dim=cfg["cross_attention_dim"],
            only_cross_attention=_per_block(only_cross, n, "only_cross_attention", source),
            mid_block_only_cross_attention=mid_only_cross,
            center_input_sample=cfg["center_input_sample"], flip_sin_to_cos=cfg["flip_sin_to_cos"],
            freq_shift=float(cfg["freq_shift"]), mid_block_scale_factor=float(cfg["mid_block_scale_factor"]),
            act_fn=cfg["act_fn"], norm_num_groups=cfg["norm_num_groups"], norm_eps=float(cfg["norm_eps"]),
            encoder_hid_dim=cfg["encoder_hid_dim"], class_embed_type=cfg["class_embed_type"],
            addition_embed_type=cfg["addition_embed_type"],
            addition_embed_type_num_heads=cfg["addition_embed_type_num_heads"],
            resnet_time_scale_shift=cfg["resnet_time_scale_shift"],
            resnet_skip_time_act=cfg["resnet_skip_time_act"],
            resnet_out_scale_factor=float(cfg["resnet_out_scale_factor"]),
            time_embedding_dim=cfg["time_embedding_dim"], time_embedding_act_fn=cfg["time_embedding_act_fn"],
            timestep_post_act=cfg["timestep_post_act"], conv_in_kernel=cfg["conv_in_kernel"],
            conv_out_kernel=cfg["conv_out_kernel"], cross_attention_norm=cfg["cross_attention_norm"])


class GroupNorm(nn.Module):
    """Group norm over channels (last axis); statistics over every axis after the first `batch_dims`.

    batch_dims=1 on [B, H, W, C] is torch's GroupNorm; num_groups=1 with batch_dims=x.ndim-1 is LayerNorm.
    Statistics in float32 (two-pass variance) whatever the input dtype. Each pass sums per channel
    over the positions first and then over a group's channels: on NHWC activations the positions
    are the major axes, a reduction XLA runs as one coalesced kernel, where reducing positions and
    a group's channels at once is not one.
    """
    num_groups: int
    epsilon: float
    batch_dims: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        if c % self.num_groups:
            raise ValueError(f"GroupNorm {self.name}: {c} channels do not split into {self.num_groups} groups.")
        scale = self.param("scale", nn.initializers.ones, (c,))
        bias = self.param("bias", nn.initializers.zeros, (c,))
        lead, positions = x.shape[:self.batch_dims], tuple(range(self.batch_dims, x.ndim - 1))
        per_group = c // self.num_groups

        def group_mean(t):  # [*lead, *positions, C] -> per group, broadcast back to its channels
            t = t.mean(axis=positions).reshape(lead + (self.num_groups, per_group)).mean(-1)
            return jnp.repeat(t, per_group, axis=-1).reshape(lead + (1,) * len(positions) + (c,))

        xf = x.astype(jnp.float32)
        centred = xf - group_mean(xf)
        y = centred * jax.lax.rsqrt(group_mean(jnp.square(centred)) + self.epsilon)
        return (y * scale.astype(jnp.float32) + bias.astype(jnp.float32)).astype(self.dtype)


def timestep_embedding(timesteps, dim: int, flip_sin_to_cos: bool, freq_shift: float, max_period: float = 10000.0):
    """Sinusoidal embedding [B] -> [B, dim] in float32, as diffusers' get_timestep_embedding."""
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / (half - freq_shift))
    args = jnp.asarray(timesteps, jnp.float32)[:, None] * freqs[None]
    sin, cos = jnp.sin(args), jnp.cos(args)
    emb = jnp.concatenate([cos, sin] if flip_sin_to_cos else [sin, cos], axis=-1)
    return jnp.pad(emb, ((0, 0), (0, dim % 2)))


class TimestepEmbedding(nn.Module):
    """linear_1 -> act -> linear_2 [-> post_act]."""
    features: int
    act_fn: str
    post_act_fn: str | None = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        x = nn.Dense(self.features, dtype=self.dtype, name="linear_1")(x.astype(self.dtype))
        x = nn.Dense(self.features, dtype=self.dtype, name="linear_2")(_ACTIVATIONS[self.act_fn](x))
        return x if self.post_act_fn is None else _ACTIVATIONS[self.post_act_fn](x)


def attend(q, k, v, implementation=None):
    """softmax(q kᵀ / sqrt(d_head)) v: q [B,T,N,H], k and v [B,S,N,H] -> [B,T,N,H] in v's dtype.

    implementation None: the fastest that works here, "cudnn" for 16-bit inputs on a GPU (13% off
    the IF-I-XL forward on an H100), else "xla". "cudnn": jax.nn.dot_product_attention's cuDNN
    kernel (16-bit inputs, GPU only). "xla": XLA
    einsums with float32 logits and softmax, as jax's XLA path computes them but without the dot
    algorithm it sets for 16-bit inputs: for float16 that is F16_F16_F32, which CPUs reject and on
    which XLA's GPU simplifier aborts when it turns a one-query product (the text pooling) into a
    multiply-reduce ("Unsupported dot precision algorithm: 4").
    """
    if implementation is None:
        cudnn = jax.default_backend() == "gpu" and q.dtype in (jnp.float16, jnp.bfloat16)
        implementation = "cudnn" if cudnn else "xla"
    if implementation == "cudnn":
        return jax.nn.dot_product_attention(q, k, v, implementation="cudnn")
    if implementation != "xla":
        raise ValueError(f"attention implementation {implementation!r}: expected None, 'xla' or "
                         "'cudnn'")
    logits = jnp.einsum("btnh,bsnh->bnts", q, k, preferred_element_type=jnp.float32)
    weights = jax.nn.softmax(logits / math.sqrt(q.shape[-1]), axis=-1)
    return jnp.einsum("bnts,bsnh->btnh", weights.astype(v.dtype), v)


class AttentionPooling(nn.Module):
    """IF's attention pooling of the text tokens into one vector: [B, L, D] -> [B, D]."""
    num_heads: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        b, _, d = x.shape
        if d % self.num_heads:
            raise ValueError(f"AttentionPooling: width {d} is not divisible by {self.num_heads} heads "
                             "('addition_embed_type_num_heads').")
        pos = self.param("positional_embedding", nn.initializers.normal(d ** -0.5), (1, d))
        class_token = x.mean(axis=1, keepdims=True) + pos.astype(x.dtype)
        tokens = jnp.concatenate([class_token, x], axis=1)
        dense = lambda name: nn.Dense(d, dtype=self.dtype, name=name)
        heads = lambda t: t.reshape(b, t.shape[1], self.num_heads, d // self.num_heads)
        q = heads(dense("q_proj")(class_token))
        k, v = heads(dense("k_proj")(tokens)), heads(dense("v_proj")(tokens))
        return attend(q, k, v).reshape(b, d)


class TextTimeEmbedding(nn.Module):
    """Pooled text embedding added to the time embedding (addition_embed_type "text")."""
    features: int
    num_heads: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, encoder_hidden_states):
        x = GroupNorm(1, 1e-5, batch_dims=2, dtype=self.dtype, name="norm1")(encoder_hidden_states)
        x = AttentionPooling(self.num_heads, dtype=self.dtype, name="pool")(x)
        x = nn.Dense(self.features, dtype=self.dtype, name="proj")(x)
        return GroupNorm(1, 1e-5, batch_dims=1, dtype=self.dtype, name="norm2")(x)


def _resample(x, up: bool, down: bool):
    if up:  # nearest-neighbour x2
        return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
    if down:  # 2x2 average pool, stride 2
        b, h, w, c = x.shape
        return x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4), dtype=jnp.float32).astype(x.dtype)
    return x


class ResnetBlock(nn.Module):
    """diffusers ResnetBlock2D (pre-norm; optional nearest-up / avg-pool-down; scale-shift time conditioning)."""
    features: int
    cfg: IFUNetConfig
    output_scale_factor: float
    up: bool = False
    down: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, temb):
        cfg = self.cfg
        act = _ACTIVATIONS[cfg.act_fn]
        norm = lambda name: GroupNorm(cfg.norm_num_groups, cfg.norm_eps, dtype=self.dtype, name=name)
        conv = lambda k, name: Conv(self.features, k, dtype=self.dtype, name=name)
        h = act(norm("norm1")(x))
        h = _resample(h, self.up, self.down)
        x = _resample(x, self.up, self.down)
        h = conv(3, "conv1")(h)
        scale_shift = cfg.resnet_time_scale_shift == "scale_shift"
        temb = temb if cfg.resnet_skip_time_act else act(temb)
        temb = nn.Dense(self.features * (2 if scale_shift else 1), dtype=self.dtype,
                        name="time_emb_proj")(temb)[:, None, None, :]
        if scale_shift:
            scale, shift = jnp.split(temb, 2, axis=-1)
            h = norm("norm2")(h) * (1 + scale) + shift
        else:
            h = norm("norm2")(h + temb)
        h = conv(3, "conv2")(act(h))
        if x.shape[-1] != self.features:
            x = conv(1, "conv_shortcut")(x)
        out = x + h
        return out if self.output_scale_factor == 1 else out / self.output_scale_factor


def _text_keys_values(enc, features, cross_attention_norm, dtype):
    """The added keys and values of one attention layer from the projected text enc [B,L,D]:
    ([B,L,features], [B,L,features]). Called inside a compact method, whose scope gets the
    submodules norm_cross, add_k_proj and add_v_proj."""
    if cross_attention_norm == "group_norm":
        enc = GroupNorm(32, 1e-5, dtype=dtype, name="norm_cross")(enc)
    return (nn.Dense(features, dtype=dtype, name="add_k_proj")(enc),
            nn.Dense(features, dtype=dtype, name="add_v_proj")(enc))


class TextKeysValues(nn.Module):
    """An AddedKVAttention layer's text part alone, on that layer's parameters (encode_text)."""
    features: int
    cross_attention_norm: str | None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, enc):
        return _text_keys_values(enc, self.features, self.cross_attention_norm, self.dtype)


class AddedKVAttention(nn.Module):
    """diffusers Attention with AttnAddedKVProcessor: the projected text tokens (add_k/add_v) are
    prepended to the image tokens' own keys/values (dropped when only_cross_attention). `text` is
    the projected text [B,L,D] or its keys and values ([B,L,inner], [B,L,inner])."""
    heads: int
    head_dim: int
    norm_groups: int
    only_cross_attention: bool
    cross_attention_norm: str | None
    attention_impl: str | None = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, text):
        b, hgt, wid, c = x.shape
        inner = self.heads * self.head_dim
        dense = lambda features, name: nn.Dense(features, dtype=self.dtype, name=name)
        split = lambda t: t.reshape(b, t.shape[1], self.heads, self.head_dim)
        if not isinstance(text, tuple):
            text = _text_keys_values(text, inner, self.cross_attention_norm, self.dtype)
        h = GroupNorm(self.norm_groups, 1e-5, dtype=self.dtype, name="group_norm")(x.reshape(b, hgt * wid, c))
        q = split(dense(inner, "to_q")(h))
        k, v = map(split, text)
        if not self.only_cross_attention:
            k = jnp.concatenate([k, split(dense(inner, "to_k")(h))], axis=1)
            v = jnp.concatenate([v, split(dense(inner, "to_v")(h))], axis=1)
        out = attend(q, k, v, self.attention_impl)
        out = dense(c, "to_out_0")(out.reshape(b, hgt * wid, inner))
        return out.reshape(x.shape) + x


def _attention(cfg: IFUNetConfig, head_dim: int, only_cross: bool, channels: int, impl, dtype, name):
    return AddedKVAttention(channels // head_dim, head_dim, cfg.norm_num_groups, only_cross,
                            cfg.cross_attention_norm, impl, dtype, name=name)


class UNetBlock(nn.Module):
    """One down, mid or up block of the IF UNet; `kind` is the diffusers block type.

    Down blocks return (x, skips they produce); up blocks take the skips they consume, last first.
    `text`: the projected text [B,L,D], or per attention layer name its keys and values.
    """
    kind: str
    features: int
    num_layers: int
    head_dim: int
    only_cross_attention: bool
    resample: bool  # down blocks: downsampler after; up blocks: upsampler after
    cfg: IFUNetConfig
    attention_impl: str | None = None
    dtype: Any = jnp.float32

    def _resnet(self, name, scale=None, up=False, down=False):
        scale = self.cfg.resnet_out_scale_factor if scale is None else scale
        return ResnetBlock(self.features, self.cfg, scale, up, down, self.dtype, name=name)

    def _attn(self, name, x, text):
        layer = _attention(self.cfg, self.head_dim, self.only_cross_attention, self.features,
                           self.attention_impl, self.dtype, name)
        return layer(x, text[name] if isinstance(text, dict) else text)

    @nn.compact
    def __call__(self, x, temb, text, skips=()):
        has_attention = "CrossAttn" in self.kind
        if self.kind == "UNetMidBlock2DSimpleCrossAttn":
            scale = self.cfg.mid_block_scale_factor
            x = self._resnet("resnets_0", scale)(x, temb)
            x = self._attn("attentions_0", x, text)
            return self._resnet("resnets_1", scale)(x, temb)
        if self.kind in _DOWN_BLOCKS:
            produced = []
            for j in range(self.num_layers):
                x = self._resnet(f"resnets_{j}")(x, temb)
                if has_attention:
                    x = self._attn(f"attentions_{j}", x, text)
                produced.append(x)
            if self.resample:
                x = self._resnet("downsamplers_0", down=True)(x, temb)
                produced.append(x)
            return x, produced
        for j in range(self.num_layers):
            x = jnp.concatenate([x, skips[j]], axis=-1)
            x = self._resnet(f"resnets_{j}")(x, temb)
            if has_attention:
                x = self._attn(f"attentions_{j}", x, text)
        if self.resample:
            x = self._resnet("upsamplers_0", up=True)(x, temb)
        return x


class TextContext(NamedTuple):
    """What an IFUNet reads of a text, computed once by encode_text: pooled [B, time_dim], the
    pooled text embedding added to the time embedding (None without addition_embed_type "text"),
    and layers, per block and attention layer name, that layer's added keys and values
    ([B,L,inner], [B,L,inner]). Rows are prompts, as in the embeddings it came from."""
    pooled: Any
    layers: dict


class IFUNet(nn.Module):
    """IF UNet: (sample [B,H,W,C], timesteps [B], text, class_labels [B]|None) -> [B,H,W,out_channels];
    text: T5 embeddings encoder_hidden_states [B,L,D] or their TextContext (encode_text). class_labels
    is stage II's noise-augmentation level (class_embed_type "timestep"). attention_impl is `attend`'s
    implementation (None, "xla" or "cudnn")."""
    config: IFUNetConfig
    dtype: Any = jnp.float32
    attention_impl: str | None = None

    @classmethod
    def from_config(cls, config: dict, dtype=jnp.float32, attention_impl=None, source: str = "config"):
        return cls(IFUNetConfig.from_dict(config, source), dtype=dtype, attention_impl=attention_impl)

    @nn.compact
    def __call__(self, sample, timesteps, encoder_hidden_states, class_labels=None):
        cfg = self.config
        dt = self.dtype
        chans = cfg.block_out_channels
        n = len(chans)
        batch, hgt, wid, in_ch = sample.shape
        if in_ch != cfg.in_channels:
            raise ValueError(f"IFUNet: sample has {in_ch} channels (NHWC); the config's in_channels is "
                             f"{cfg.in_channels}.")
        factor = 2 ** (n - 1)
        if hgt % factor or wid % factor:
            raise ValueError(f"IFUNet: sample size {hgt}x{wid} must be divisible by {factor}.")
        if cfg.center_input_sample:
            sample = 2 * sample - 1.0

        time_dim = cfg.time_dim
        sinusoid = lambda t: timestep_embedding(jnp.broadcast_to(jnp.asarray(t), (batch,)), chans[0],
                                                cfg.flip_sin_to_cos, cfg.freq_shift)
        emb = TimestepEmbedding(time_dim, cfg.act_fn, cfg.timestep_post_act, dt, name="time_embedding")(
            sinusoid(timesteps))
        if cfg.class_embed_type == "timestep":
            if class_labels is None:
                raise ValueError("IFUNet: this UNet has class_embed_type 'timestep' (IF stage II); pass "
                                 "class_labels (the noise-augmentation level, shape [B]).")
            emb = emb + TimestepEmbedding(time_dim, cfg.act_fn, dtype=dt, name="class_embedding")(
                sinusoid(class_labels))
        elif class_labels is not None:
            raise ValueError("IFUNet: class_labels given but the config has no class embedding.")
        if isinstance(encoder_hidden_states, TextContext):
            context = encoder_hidden_states
            if context.pooled is not None:
                emb = emb + context.pooled
            text = lambda block: context.layers.get(block, {})  # noqa: E731
        else:
            encoder_hidden_states = encoder_hidden_states.astype(dt)
            if cfg.addition_embed_type == "text":
                emb = emb + TextTimeEmbedding(time_dim, cfg.addition_embed_type_num_heads, dt,
                                              name="add_embedding")(encoder_hidden_states)
            if cfg.encoder_hid_dim is not None:
                encoder_hidden_states = nn.Dense(cfg.cross_attention_dim, dtype=dt,
                                                 name="encoder_hid_proj")(encoder_hidden_states)
            text = lambda block: encoder_hidden_states  # noqa: E731
        if cfg.time_embedding_act_fn is not None:
            emb = _ACTIVATIONS[cfg.time_embedding_act_fn](emb)

        block = lambda kind, i, layers, head_dim, only_cross, resample, name: UNetBlock(
            kind, chans[i], layers, head_dim, only_cross, resample, cfg, self.attention_impl, dt, name=name)
        k = cfg.conv_in_kernel
        x = Conv(chans[0], k, dtype=dt, name="conv_in")(sample.astype(dt))
        skips = [x]
        for i, kind in enumerate(cfg.down_block_types):
            x, produced = block(kind, i, cfg.layers_per_block[i], cfg.attention_head_dim[i],
                                cfg.only_cross_attention[i], i < n - 1, f"down_blocks_{i}")(
                x, emb, text(f"down_blocks_{i}"))
            skips.extend(produced)
        x = block(cfg.mid_block_type, n - 1, 1, cfg.attention_head_dim[-1], cfg.mid_block_only_cross_attention,
                  False, "mid_block")(x, emb, text("mid_block"))
        for i, kind in enumerate(cfg.up_block_types):
            r = n - 1 - i  # the matching down block
            layers = cfg.layers_per_block[r] + 1
            used, skips = skips[-layers:][::-1], skips[:-layers]
            # diffusers indexes attention_head_dim by the up-block index, unreversed (a quirk kept here)
            x = block(kind, r, layers, cfg.attention_head_dim[i], cfg.only_cross_attention[r], i < n - 1,
                      f"up_blocks_{i}")(x, emb, text(f"up_blocks_{i}"), used)

        x = _ACTIVATIONS[cfg.act_fn](GroupNorm(cfg.norm_num_groups, cfg.norm_eps, dtype=dt,
                                               name="conv_norm_out")(x))
        k = cfg.conv_out_kernel
        return Conv(cfg.out_channels, k, dtype=dt, name="conv_out")(x)


def encode_text(module: IFUNet, params, encoder_hidden_states) -> TextContext:
    """The TextContext of T5 embeddings [B,L,D] for `module` with `params`: the UNet's text-only
    parts, each applied to its own parameters, so that the UNet then gives what it gives on the
    embeddings themselves while computing none of that per call."""
    cfg, dt = module.config, module.dtype
    encoder_hidden_states = jnp.asarray(encoder_hidden_states).astype(dt)
    pooled = None
    if cfg.addition_embed_type == "text":
        pooled = TextTimeEmbedding(cfg.time_dim, cfg.addition_embed_type_num_heads, dt).apply(
            {"params": params["add_embedding"]}, encoder_hidden_states)
    enc = encoder_hidden_states
    if cfg.encoder_hid_dim is not None:
        enc = nn.Dense(cfg.cross_attention_dim, dtype=dt).apply(
            {"params": params["encoder_hid_proj"]}, enc)
    layers = {}
    for block, block_params in params.items():
        for name, layer in block_params.items():
            if isinstance(layer, Mapping) and "add_k_proj" in layer:
                features = layer["add_k_proj"]["kernel"].shape[-1]
                layers.setdefault(block, {})[name] = TextKeysValues(
                    features, cfg.cross_attention_norm, dt).apply({"params": layer}, enc)
    return TextContext(pooled, layers)
