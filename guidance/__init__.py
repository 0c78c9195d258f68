"""guidance."""
from guidance.if_unet import IFUNet, IFUNetConfig, TextContext, encode_text, kernel_fan_in
from guidance.safetensors_io import check_safetensors, find_checkpoint, load_safetensors, load_safetensors_dir
from guidance.unet_weights import load_if_unet
from guidance.sds import (SDSConfig, ddpm_alphas_cumprod, ideal_denoiser, sds_from_noise, sds_loss, to_model_space,
                          view_index, view_prompts)
from guidance.t5 import MAX_LENGTH, T5Encoder, T5TextEncoder, load_t5_encoder
from guidance.prompt_cache import PromptCache, embed_prompts
from guidance.sampling import (SchedulerConfig, UNetApply, ddpm_step, ddpm_timesteps, generate_images, iter_images,
                               resize_align_corners, sample_stage1, sample_stage2)
