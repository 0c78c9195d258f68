"""CLIP (Flax, transformers' FlaxCLIPModel) loaded from the published openai/clip-vit-base-patch32 layout.

Image and text features are CLIP's projected embeddings, not normalised (OpenAI's `encode_image` /
`encode_text`, which the release averages over views and scores by cosine).
"""
import dataclasses
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_TOKENIZER_FILES = ("vocab.json", "merges.txt")


@dataclasses.dataclass(frozen=True)
class Clip:
    """A loaded CLIP: `module` is the FlaxCLIPModel (holding the config), `params` its weights."""

    module: object
    params: dict
    tokenizer: object
    path: str

    @property
    def embed_dim(self) -> int:
        return int(self.module.config.projection_dim)

    @property
    def image_size(self) -> int:
        return int(self.module.config.vision_config.image_size)

    @property
    def max_length(self) -> int:
        return int(self.module.config.text_config.max_position_embeddings)

    def tokenize(self, texts) -> np.ndarray:
        """list[str] -> int32 [B, max_length], padded with end-of-text as OpenAI's clip.tokenize
        effectively does (pooling reads the first end-of-text position)."""
        ids = self.tokenizer(list(texts), padding="max_length", max_length=self.max_length, truncation=True,
                             return_tensors="np").input_ids
        return ids.astype(np.int32)

    def text_features(self, texts) -> jax.Array:
        """list[str] -> [B, D]."""
        return _text_features(self.module, self.params, jnp.asarray(self.tokenize(texts)))

    def image_features(self, images) -> jax.Array:
        """images [B, H, W, 3] in [0, 1] (any square size; resized to the model's) -> [B, D]."""
        return image_features(self.module, self.params, images)


def preprocess(images, size: int) -> jax.Array:
    """[B, H, W, 3] in [0, 1] -> CLIP-normalised pixel values [B, 3, size, size] (NCHW, as the
    Flax CLIP module takes them). Square inputs only: renders are square, so no crop is needed."""
    b, h, w, _ = images.shape
    if h != w:
        raise ValueError(f"CLIP preprocessing expects square images, got {h}x{w}")
    if h != size:
        images = jax.image.resize(images, (b, size, size, 3), method="bicubic")
    x = (images - jnp.asarray(CLIP_MEAN)) / jnp.asarray(CLIP_STD)
    return jnp.transpose(x, (0, 3, 1, 2))


@functools.partial(jax.jit, static_argnums=0)
def image_features(module, params, images):
    """Pure image encoder: images [B, H, W, 3] in [0, 1] -> [B, D]. `module` is static (hashable by
    identity), so one compile per module and input shape."""
    pixel_values = preprocess(images, module.config.vision_config.image_size)
    return module.get_image_features(pixel_values, params=params)


@functools.partial(jax.jit, static_argnums=0)
def _text_features(module, params, input_ids):
    return module.get_text_features(input_ids, params=params)


def _missing_message(path, what):
    return (f"CLIP model folder {path!r}: {what}. Expected the transformers layout of "
            f"openai/clip-vit-base-patch32: config.json, model.safetensors, "
            f"vocab.json, merges.txt. Get it on a machine with hub access with "
            f"`huggingface-cli download openai/clip-vit-base-patch32 --local-dir {path}` and copy it here.")


def _params_from_safetensors(module, path):
    """PyTorch-named safetensors -> Flax param tree, checked key by key against the module's shapes
    (computed abstractly: no random init of the full model)."""
    from flax.traverse_util import flatten_dict, unflatten_dict
    from safetensors.numpy import load_file
    from transformers.modeling_flax_pytorch_utils import rename_key_and_reshape_tensor

    shapes = flatten_dict(jax.eval_shape(lambda: module.init_weights(jax.random.key(0), module.input_shape)))
    out = {}
    for pt_key, tensor in load_file(path).items():
        key, tensor = rename_key_and_reshape_tensor(tuple(pt_key.split(".")), tensor, shapes, "clip")
        if key not in shapes:
            if pt_key.endswith("position_ids"):  # a buffer older checkpoints store
                continue
            raise ValueError(f"{path}: tensor {pt_key!r} has no place in a CLIP model of this config.json")
        if tensor.shape != shapes[key].shape:
            raise ValueError(f"{path}: tensor {pt_key!r} has shape {tensor.shape}, config.json implies "
                             f"{shapes[key].shape}")
        out[key] = np.asarray(tensor, np.float32)
    missing = sorted(".".join(k) for k in shapes.keys() - out.keys())
    if missing:
        raise ValueError(f"{path}: missing tensors {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    return unflatten_dict(out)


def load_clip(path) -> Clip:
    """Load CLIP from a folder in the transformers layout, from safetensors without torch."""
    from transformers import CLIPConfig, CLIPTokenizer, FlaxCLIPModel
    from transformers.utils import logging as hf_logging

    if path is None or not os.path.isdir(path):
        raise FileNotFoundError(_missing_message(path, "not a folder"))
    missing = [f for f in ("config.json", "model.safetensors") + _TOKENIZER_FILES
               if not os.path.isfile(os.path.join(path, f))]
    if missing:
        raise FileNotFoundError(_missing_message(path, f"missing {', '.join(missing)}"))
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the deprecation notice of Flax classes is noise here
    try:
        config = CLIPConfig.from_pretrained(path)
        module = FlaxCLIPModel(config, _do_init=False, dtype=jnp.float32)
    finally:
        hf_logging.set_verbosity(verbosity)
    params = _params_from_safetensors(module, os.path.join(path, "model.safetensors"))
    tokenizer = CLIPTokenizer.from_pretrained(path)
    params = jax.tree.map(jnp.asarray, params)
    return Clip(module=module, params=params, tokenizer=tokenizer, path=os.path.abspath(path))
