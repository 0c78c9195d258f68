"""Writes the IF UNet parity fixtures (run with the PyTorch reference venv):

    .venv-ref/bin/python scripts/parity_unet.py

For a tiny stage-I and a tiny stage-II config (the keys of IF-I-XL's and IF-II-L's unet/config.json,
every block type IF uses), builds diffusers' PyTorch UNet2DConditionModel with a fixed seed, gives every
parameter random non-trivial values (norm scales and biases included), saves it with save_pretrained
into tests/fixtures/if_unet/<stage>/unet/ and writes inputs and fp32 outputs to <stage>/reference.npz.
Stage I is saved as the sharded fp16 variant (weights rounded to fp16 first, so the fp32 reference is
exact for them); stage II as a single fp32 file.
"""

import argparse
import os
import shutil
import tempfile

import torch
from diffusers import UNet2DConditionModel

from ifcommon import atomic_savez

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "if_unet")

_COMMON = {
    "act_fn": "gelu",
    "addition_embed_type": "text",
    "addition_embed_type_num_heads": 4,
    "attention_head_dim": 8,
    "center_input_sample": False,
    "class_embeddings_concat": False,
    "conv_in_kernel": 3,
    "conv_out_kernel": 3,
    "cross_attention_dim": 32,  # the encoder states' group norm has 32 groups
    "cross_attention_norm": "group_norm",
    "downsample_padding": 1,
    "dual_cross_attention": False,
    "encoder_hid_dim": 24,
    "encoder_hid_dim_type": "text_proj",
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "mid_block_only_cross_attention": None,
    "mid_block_type": "UNetMidBlock2DSimpleCrossAttn",
    "norm_eps": 1e-05,
    "norm_num_groups": 4,
    "num_class_embeds": None,
    "projection_class_embeddings_input_dim": None,
    "resnet_skip_time_act": True,
    "resnet_time_scale_shift": "scale_shift",
    "time_cond_proj_dim": None,
    "time_embedding_act_fn": "gelu",
    "time_embedding_type": "positional",
    "timestep_post_act": None,
    "upcast_attention": False,
    "use_linear_projection": False,
}
CONFIGS = {
    # IF-I-XL layout: ResnetDownsample + SimpleCrossAttnDown..., 3 in / 6 out (learned variance).
    "stage1": dict(_COMMON,
                   block_out_channels=[8, 16, 16],
                   class_embed_type=None,
                   down_block_types=["ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D",
                                     "SimpleCrossAttnDownBlock2D"],
                   up_block_types=["SimpleCrossAttnUpBlock2D", "SimpleCrossAttnUpBlock2D",
                                   "ResnetUpsampleBlock2D"],
                   in_channels=3, out_channels=6, layers_per_block=2, mid_block_scale_factor=1,
                   only_cross_attention=False, resnet_out_scale_factor=1.0, sample_size=16),
    # IF-II-L layout (diffusers' convert_if.py): noise-level class embedding, 6 in (noisy + upsampled
    # low-res image), per-block layers, only cross-attention, explicit time_embedding_dim, 1/0.7071 scales.
    "stage2": dict(_COMMON,
                   block_out_channels=[8, 8, 16],
                   class_embed_type="timestep",
                   down_block_types=["ResnetDownsampleBlock2D", "ResnetDownsampleBlock2D",
                                     "SimpleCrossAttnDownBlock2D"],
                   up_block_types=["SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D",
                                   "ResnetUpsampleBlock2D"],
                   in_channels=6, out_channels=6, layers_per_block=[1, 2, 1],
                   mid_block_scale_factor=1 / 0.7071, only_cross_attention=True,
                   resnet_out_scale_factor=1 / 0.7071, sample_size=16, time_embedding_dim=48),
}


def randomize_(model: torch.nn.Module, generator: torch.Generator):
    """Every parameter random and non-trivial (diffusers' init leaves norms at 1/0 and some biases 0).
    The generator must live on the parameters' device."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=generator, device=p.device, dtype=p.dtype)
            if name.endswith("bias"):
                p.copy_(0.1 * noise)
            elif p.ndim == 1:  # norm scales
                p.copy_(1.0 + 0.2 * noise)
            elif name.endswith("positional_embedding"):
                p.copy_(noise / p.shape[-1] ** 0.5)
            else:
                fan_in = p[0].numel()
                p.copy_(noise / fan_in ** 0.5)


def make_inputs(config: dict, generator: torch.Generator, batch: int = 2, tokens: int = 7):
    size = config["sample_size"]
    inputs = {
        "sample": torch.randn(batch, config["in_channels"], size, size, generator=generator),
        "timestep": torch.tensor([17, 903][:batch]),
        "encoder_hidden_states": torch.randn(batch, tokens, config["encoder_hid_dim"], generator=generator),
    }
    if config["class_embed_type"] == "timestep":
        inputs["class_labels"] = torch.tensor([250, 0][:batch])
    return inputs


def write_fixture(stage: str, seed: int):
    config = CONFIGS[stage]
    generator = torch.Generator().manual_seed(seed)
    model = UNet2DConditionModel(**config).eval()
    randomize_(model, generator)
    fp16 = stage == "stage1"
    if fp16:  # round to fp16 so the fp16 file holds exactly the weights of the fp32 reference
        model = model.half().float()
    inputs = make_inputs(config, generator)
    with torch.no_grad():
        out = model(**inputs).sample
    ref = {
        "sample_nhwc": inputs["sample"].permute(0, 2, 3, 1).numpy(),
        "timesteps": inputs["timestep"].numpy(),
        "encoder_hidden_states": inputs["encoder_hidden_states"].numpy(),
        "output_nhwc": out.permute(0, 2, 3, 1).numpy(),
    }
    if "class_labels" in inputs:
        ref["class_labels"] = inputs["class_labels"].numpy()

    stage_dir = os.path.join(FIXTURES, stage)
    os.makedirs(stage_dir, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=stage_dir, prefix=".unet-")
    if fp16:
        model.half().save_pretrained(tmp, safe_serialization=True, variant="fp16", max_shard_size="100KB")
    else:
        model.save_pretrained(tmp, safe_serialization=True)
    unet_dir = os.path.join(stage_dir, "unet")
    if os.path.exists(unet_dir):
        shutil.rmtree(unet_dir)
    os.replace(tmp, unet_dir)
    atomic_savez(os.path.join(stage_dir, "reference.npz"), **ref)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{stage}: {n_params} parameters, output |mean| {out.abs().mean():.4f}, files {sorted(os.listdir(unet_dir))}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    for i, stage in enumerate(CONFIGS):
        write_fixture(stage, args.seed + i)


if __name__ == "__main__":
    main()
