"""Build the tiny random CLIP fixture (tests/fixtures/clip/) with transformers' PyTorch CLIPModel.

Run with the reference environment: `.venv-ref/bin/python scripts/parity_clip.py`.
Writes the published openai/clip-vit-base-patch32 layout (config.json, model.safetensors, vocab.json,
merges.txt, tokenizer files) for a tiny random config, plus `reference.npz`: input images, texts,
token ids and PyTorch's projected (un-normalised) image and text features.
"""
import json
import os
import tempfile

import numpy as np
import torch
from transformers import CLIPConfig, CLIPModel, CLIPTokenizer
from transformers.models.clip.tokenization_clip import bytes_to_unicode

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "clip")
TEXTS = ["a rendered 3d man is riding a bike", "a photo of a person playing a drum, full body", "zebra"]
WORDS = ["a", "rendered", "3d", "man", "is", "riding", "bike", "photo", "of", "person", "playing", "drum",
         "full", "body"]
MAX_LEN = 77


def tiny_bpe(directory):
    """vocab.json/merges.txt in CLIP's byte-level BPE format: all bytes, bytes with </w>, merges that
    build WORDS left to right, then the two special tokens last (as in the real vocab, so the
    end-of-text token has the largest id, which CLIP's pooling relies on)."""
    chars = list(bytes_to_unicode().values())
    vocab = chars + [c + "</w>" for c in chars]
    merges = []
    for word in WORDS:
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        cur = parts[0]
        for nxt in parts[1:]:
            merges.append(f"{cur} {nxt}")
            cur = cur + nxt
            if cur not in vocab:
                vocab.append(cur)
    merges = list(dict.fromkeys(merges))
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    with open(os.path.join(directory, "vocab.json"), "w") as f:
        json.dump({t: i for i, t in enumerate(vocab)}, f)
    with open(os.path.join(directory, "merges.txt"), "w") as f:
        f.write("#version: 0.2\n" + "\n".join(merges) + "\n")
    return len(vocab)


def main():
    torch.manual_seed(0)
    os.makedirs(OUT, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        vocab_size = tiny_bpe(tmp)
        tok = CLIPTokenizer(os.path.join(tmp, "vocab.json"), os.path.join(tmp, "merges.txt"),
                            pad_token="<|endoftext|>", model_max_length=MAX_LEN)
    tok.save_pretrained(OUT)
    config = CLIPConfig(
        text_config=dict(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=MAX_LEN, hidden_act="quick_gelu",
                         bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8, hidden_act="quick_gelu"),
        projection_dim=16,
    )
    model = CLIPModel(config).eval()
    with torch.no_grad():  # random init leaves LayerNorms at identity: perturb them so the test sees them
        for name, p in model.named_parameters():
            if "layer_norm" in name or "layrnorm" in name:
                p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(OUT, safe_serialization=True)

    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, size=(2, 32, 32, 3)).astype(np.float32)
    mean = np.array([0.48145466, 0.4578275, 0.40821073], np.float32)
    std = np.array([0.26862954, 0.26130258, 0.27577711], np.float32)
    pixel_values = ((images - mean) / std).transpose(0, 3, 1, 2)
    ids = tok(TEXTS, padding="max_length", max_length=MAX_LEN, return_tensors="pt").input_ids
    with torch.no_grad():
        img_f = model.get_image_features(pixel_values=torch.from_numpy(pixel_values)).numpy()
        txt_f = model.get_text_features(input_ids=ids).numpy()
    np.savez(os.path.join(OUT, "reference.npz"), images=images, texts=np.array(TEXTS), input_ids=ids.numpy(),
             image_features=img_f, text_features=txt_f)
    print("wrote", OUT, "vocab", vocab_size, "image", img_f.shape, "text", txt_f.shape)


if __name__ == "__main__":
    main()
