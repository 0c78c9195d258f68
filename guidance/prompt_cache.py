"""On-disk cache of prompt embeddings, keyed by model and text, so the T5 encoder runs once per prompt.

Layout: `<cache_dir>/<sha256(model_key)[:16]>/<sha256(text)[:32]>.npz` holding the embedding, the text and
the model key (checked on read). Files are written atomically (temporary name, then os.replace).
"""

import gc
import hashlib
import os
from typing import Callable

import jax.numpy as jnp
import numpy as np

from ifcommon import atomic_write


def _digest(text: str, n: int) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:n]


class PromptCache:
    def __init__(self, cache_dir: str):
        self.cache_dir = cache_dir

    def path(self, model_key: str, text: str) -> str:
        return os.path.join(self.cache_dir, _digest(model_key, 16), _digest(text, 32) + ".npz")

    def load(self, model_key: str, text: str) -> np.ndarray | None:
        """The cached embedding, or None if absent."""
        path = self.path(model_key, text)
        if not os.path.isfile(path):
            return None
        with np.load(path) as f:
            if str(f["text"]) != text or str(f["model_key"]) != model_key:
                raise ValueError(f"{path}: cache entry is for text {str(f['text'])!r} of model "
                                 f"{str(f['model_key'])!r}, not {text!r} of {model_key!r}; delete the file.")
            return f["embedding"]

    def store(self, model_key: str, text: str, embedding: np.ndarray) -> None:
        path = self.path(model_key, text)
        atomic_write(path, lambda tmp: np.savez(tmp, embedding=np.asarray(embedding), text=np.array(text),
                                                model_key=np.array(model_key)), ".npz")

    def get_or_compute(self, model_key: str, texts: list[str], encode_fn: Callable[[list[str]], np.ndarray]
                       ) -> np.ndarray:
        """[N, ...] embeddings of `texts`; encode_fn(missing texts) -> [M, ...] is called once, only for texts
        not cached yet (each distinct text once), and its results are stored."""
        found = {t: self.load(model_key, t) for t in dict.fromkeys(texts)}
        missing = [t for t, e in found.items() if e is None]
        if missing:
            computed = np.asarray(encode_fn(missing))
            if computed.shape[0] != len(missing):
                raise ValueError(f"PromptCache: encode_fn returned {computed.shape[0]} embeddings for "
                                 f"{len(missing)} texts.")
            for text, embedding in zip(missing, computed):
                self.store(model_key, text, embedding)
                found[text] = embedding
        return np.stack([found[t] for t in texts])


def embed_prompts(model_dir: str | None, texts: list[str], cache_dir: str, dtype=jnp.float32, lowercase: bool = True,
                  text_encoder_dir: str | None = None, tokenizer_dir: str | None = None) -> np.ndarray:
    """T5 embeddings [N,77,D] float32 (NumPy) of `texts`, from the cache or computed with the IF repository's
    encoder (see load_t5_encoder), which is loaded only if some text is missing and dropped before returning,
    so no device memory stays held. lowercase: IFPipeline's preprocessing (see t5.preprocess)."""
    from guidance.t5 import load_t5_encoder, preprocess, resolve_t5_dirs, t5_model_key

    enc_dir, _ = resolve_t5_dirs(model_dir, text_encoder_dir, tokenizer_dir)
    processed = [preprocess(t, lowercase) for t in texts]

    def encode(missing):
        encoder = load_t5_encoder(model_dir, dtype, text_encoder_dir, tokenizer_dir)
        embeddings, _ = encoder.encode(missing, lowercase=False)  # already preprocessed
        del encoder
        gc.collect()  # frees the encoder's device buffers now rather than at some later collection
        return embeddings

    return PromptCache(cache_dir).get_or_compute(t5_model_key(enc_dir, dtype), processed, encode)
