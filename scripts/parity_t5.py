"""Reference fixture for the Flax T5 v1.1 encoder: run with `.venv-ref/bin/python scripts/parity_t5.py`.

Writes tests/fixtures/t5/ in the IF repository's layout: tokenizer/ (a tiny sentencepiece model trained
here on the interaction phrases, saved by transformers' T5Tokenizer) and text_encoder/ (a tiny random
T5 v1.1 T5EncoderModel saved as SHARDED safetensors with an index), plus reference.npz with the
PyTorch encoder's outputs for random token ids and for real prompts through the tokenizer.
"""

import os
import shutil
import tempfile

import numpy as np
import sentencepiece as spm
import torch
from transformers import T5Config, T5EncoderModel, T5Tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "t5")
PHRASES = "/work/shared/data/interaction_phrases.txt"
PROMPTS = ["a photo of a person riding a bike, full body", "A photo of a chair, 8K, HD, side view", "",
           "  a photo of head of a person in a military uniform, 8K, HD, overhead view "]
MAX_LENGTH = 77


def build_tokenizer(folder):
    with tempfile.TemporaryDirectory() as tmp:
        # T5's special ids: pad 0, eos 1, unk 2, no bos.
        spm.SentencePieceTrainer.train(input=PHRASES, model_prefix=os.path.join(tmp, "spiece"), vocab_size=160,
                                       model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
                                       character_coverage=1.0, minloglevel=2)
        tokenizer = T5Tokenizer(os.path.join(tmp, "spiece.model"), model_max_length=MAX_LENGTH, legacy=True)
        tokenizer.save_pretrained(folder)
    return T5Tokenizer.from_pretrained(folder)


def main():
    torch.manual_seed(0)
    shutil.rmtree(OUT, ignore_errors=True)
    tokenizer = build_tokenizer(os.path.join(OUT, "tokenizer"))
    config = T5Config(vocab_size=len(tokenizer), d_model=32, d_kv=8, num_heads=4, num_layers=2, d_ff=64,
                      feed_forward_proj="gated-gelu", relative_attention_num_buckets=32,
                      relative_attention_max_distance=128, dropout_rate=0.0, tie_word_embeddings=False)
    model = T5EncoderModel(config).eval()
    with torch.no_grad():  # default init leaves some weights tiny; make every block matter
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    model.save_pretrained(os.path.join(OUT, "text_encoder"), safe_serialization=True, max_shard_size="40KB")

    rng = np.random.default_rng(0)
    ids = rng.integers(0, len(tokenizer), size=(3, MAX_LENGTH)).astype(np.int64)
    mask = np.ones_like(ids)
    for row, length in enumerate([MAX_LENGTH, 40, 5]):
        mask[row, length:] = 0
    texts = [p.lower().strip() for p in PROMPTS]  # IFPipeline._text_preprocessing with clean_caption=False
    tok = tokenizer(texts, padding="max_length", max_length=MAX_LENGTH, truncation=True, add_special_tokens=True,
                    return_tensors="np")
    with torch.no_grad():
        run = lambda i, m: model(input_ids=torch.from_numpy(i), attention_mask=torch.from_numpy(m))[0].numpy()
        random_out = run(ids, mask)
        prompt_out = run(tok["input_ids"].astype(np.int64), tok["attention_mask"].astype(np.int64))
    np.savez_compressed(os.path.join(OUT, "reference.npz"), random_ids=ids, random_mask=mask, random_out=random_out,
                        prompts=np.array(PROMPTS), prompt_ids=tok["input_ids"], prompt_mask=tok["attention_mask"],
                        prompt_out=prompt_out)
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(OUT) for f in fs)
    print(f"wrote {OUT}: {sorted(os.listdir(os.path.join(OUT, 'text_encoder')))}, {size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
