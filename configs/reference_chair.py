"""The reference scene at release sizes: sitting_on_a_chair guided by the ideal denoiser of a known
scene (the guide body on the built-in chair) instead of DeepFloyd IF. Every other number is the
release's, so this run shows the interaction stage end to end against a known right answer
(scripts/bench_reference.py runs it and scores it with interfusion_jax.metrics)."""
from configs import sitting_on_a_chair


def get_config():
    c = sitting_on_a_chair.get_config()
    c.name = "reference_chair"
    c.guidance.kind = "reference"
    c.reference.object_mesh = "builtin:chair"
    return c
