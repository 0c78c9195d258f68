"""Step 1: images of people interacting, from text, with DeepFloyd IF (stage I 64 px -> stage II 256 px).

Prompt per phrase: "a photo of a person {phrase}, full body"; duplicate phrases are dropped; phrase j
uses seed `--seed + j`, and its image i comes from (that seed, i) alone, so the images are the same
whatever the batch size or number of devices (up to float rounding: kernels change with the batch
shape). Images are named `{phrase_with_underscores}_{index}.png`; a phrase whose images are all
written is skipped, one with some missing is drawn again and only the missing ones written, so an
interrupted job resumes where it stopped.

Devices: each batch is split over all of this process's devices (jax.local_devices()), `--batch_size`
images on each, the UNets replicated. Hosts: under a launcher that jax.distributed.initialize() detects,
started with more than one process (`srun` under SLURM: SLURM_JOB_ID, SLURM_STEP_NODELIST, SLURM_NTASKS,
SLURM_PROCID, SLURM_LOCALID set; Open MPI's `mpirun`: OMPI_MCA_orte_hnp_uri, OMPI_COMM_WORLD_SIZE), it is
called and process k of K takes phrases k, k + K, ...: no two processes write the same file. Each
process samples on its own devices only: the sampling needs no communication, and no process waits on
another until the end, where all wait for the last. JAX gives each process the one GPU of its local
rank: start one process per GPU, or one per host with JAX_LOCAL_DEVICE_IDS=0,1,... (JAX_COORDINATOR_ADDRESS
and JAX_COORDINATOR_PORT override the coordinator address JAX derives from the launcher).
"""
import argparse
import os

from ifcommon import command_line, save_png
from pose import codebook as cb

PROMPT_TEMPLATE = "a photo of a person {}, full body"
DEFAULT_PROMPTS = os.path.join(os.path.dirname(__file__), "data", "interaction_phrases.txt")
# How long a process that is done waits at exit for the others: process 0 hosts the coordination service
# whose loss ends every other process, so none leaves before all are done, however uneven their work.
WAIT_FOR_OTHERS_S = 7 * 24 * 3600


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
    p.add_argument("--batch_size", type=int, default=8,
                   help="images per device in a batch (fewer when a phrase has fewer images per device)")
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


def _launched_as_several_processes():
    """Whether a launcher that jax.distributed.initialize() detects started this as one of several processes."""
    slurm = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")
    if all(v in os.environ for v in slurm):
        return int(os.environ["SLURM_NTASKS"]) > 1
    if "OMPI_MCA_orte_hnp_uri" in os.environ:
        return int(os.environ.get("OMPI_COMM_WORLD_SIZE", "1")) > 1
    return False


@command_line
def main(argv=None):
    a = parse_args(argv)
    if a.num_images_per_text < 1:
        raise cb.PoseStageError(f"--num_images_per_text {a.num_images_per_text}: must be at least 1")
    if a.batch_size < 1:
        raise cb.PoseStageError(f"--batch_size {a.batch_size}: must be at least 1")
    phrases = read_phrases(a.prompts)
    import jax  # after the checks: a user error is reported without loading JAX

    from guidance import sampling

    several = _launched_as_several_processes()
    if several:
        jax.distributed.initialize(shutdown_timeout_seconds=WAIT_FOR_OTHERS_S)
    process, processes = jax.process_index(), jax.process_count()
    n = a.num_images_per_text
    todo = []
    owned = range(process, len(phrases), processes)
    for j in owned:
        paths = [os.path.join(a.out, image_name(phrases[j], i)) for i in range(n)]
        missing = [i for i, p in enumerate(paths) if not os.path.isfile(p)]
        if missing:  # the whole phrase is drawn again with its seed, so the images are the same
            todo.append((j, paths, missing))
    written = 0
    if todo:
        generated = sampling.iter_images(
            a.if_stage1, a.if_stage2, [PROMPT_TEMPLATE.format(phrases[t[0]]) for t in todo],
            num_images_per_prompt=n, prompt_seeds=[a.seed + t[0] for t in todo], batch_size=a.batch_size)
        for (_, paths, missing), images in zip(todo, generated):
            if images.shape[0] != n:
                raise RuntimeError(f"iter_images returned {images.shape[0]} images for {n} requested")
            for i in missing:
                save_png(paths[i], images[i])
            written += len(missing)
    who = f"process {process} of {processes}: " if processes > 1 else ""
    print(f"{who}{len(owned)} phrases, {written} images written, {len(owned) * n - written} already there; "
          f"in {a.out}", flush=True)
    if several:
        jax.distributed.shutdown()  # waits for every process to get here


if __name__ == "__main__":
    main()
