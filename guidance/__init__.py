"""guidance."""
from guidance.if_unet import IFUNet, IFUNetConfig
from guidance.safetensors_io import load_safetensors, load_safetensors_dir
from guidance.unet_weights import load_if_unet
