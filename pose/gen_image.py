"""Step 1: images of people interacting, from text, with DeepFloyd IF (stage I 64 px -> stage II 256 px).

Prompt per phrase: "a photo of a person {phrase}, full body"; duplicate phrases are dropped; phrase j
uses seed `--seed + j`. Images are named `{phrase_with_underscores}_{index}.png`; those already
written are skipped, so an interrupted job resumes where it stopped.
"""
import argparse
import os

from tqdm import tqdm

from pose import codebook as cb
from pose.atomic_io import save_png

PROMPT_TEMPLATE = "a photo of a person {}, full body"
DEFAULT_PROMPTS = os.path.join(os.path.dirname(__file__), "data", "interaction_phrases.txt")


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m pose.gen_image", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prompts", default=DEFAULT_PROMPTS,
                   help="text file, one interaction phrase a line (default: the release's 245 phrases)")
    p.add_argument("--out", default="results/images", help="output folder")
    p.add_argument("--num_images_per_text", type=int, default=3, help="images per phrase")
    p.add_argument("--if_stage1", default="weights/IF-I-XL-v1.0", help="DeepFloyd IF-I-XL-v1.0 folder")
    p.add_argument("--if_stage2", default="weights/IF-II-L-v1.0", help="DeepFloyd IF-II-L-v1.0 folder")
    p.add_argument("--seed", type=int, default=0, help="seed of phrase 0 (phrase j uses seed + j)")
    return p.parse_args(argv)


def read_phrases(path):
    """Non-empty stripped lines, duplicates dropped (first occurrence kept)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--prompts {path!r} not found")
    with open(path) as f:
        phrases = list(dict.fromkeys(line.strip() for line in f if line.strip()))
    if not phrases:
        raise cb.PoseStageError(f"--prompts {path}: no phrases (empty file)")
    return phrases


def image_name(phrase, index):
    return f"{'_'.join(phrase.replace(os.sep, ' ').split())}_{index}.png"


def main(argv=None):
    from guidance import sampling

    a = parse_args(argv)
    if a.num_images_per_text < 1:
        raise cb.PoseStageError(f"--num_images_per_text {a.num_images_per_text}: must be at least 1")
    phrases = read_phrases(a.prompts)
    n = a.num_images_per_text
    todo = []
    for j, phrase in enumerate(phrases):
        paths = [os.path.join(a.out, image_name(phrase, i)) for i in range(n)]
        missing = [i for i, p in enumerate(paths) if not os.path.isfile(p)]
        if missing:  # the whole phrase is regenerated with its seed, so the images are the same
            todo.append((j, phrase, paths, missing))
    written = 0
    with tqdm(total=len(phrases) * n, initial=(len(phrases) - len(todo)) * n, desc="images",
              unit="img") as bar:
        if todo:
            generated = sampling.iter_images(
                a.if_stage1, a.if_stage2, [PROMPT_TEMPLATE.format(t[1]) for t in todo],
                num_images_per_prompt=n, prompt_seeds=[a.seed + t[0] for t in todo], progress=False)
            for (_, _, paths, missing), images in zip(todo, generated):
                if images.shape[0] != n:
                    raise RuntimeError(f"iter_images returned {images.shape[0]} images for {n} requested")
                for i in missing:
                    save_png(paths[i], images[i])
                written += len(missing)
                bar.update(n)
    print(f"{len(phrases)} phrases, {written} images written, {len(phrases) * n - written} already there; in {a.out}")


if __name__ == "__main__":
    cb.run_cli(main)
