"""interfusion-jax: text-driven 3D human-object interaction (InterFusion) in JAX."""
from setuptools import setup

setup(
    name="interfusion-jax",
    version="0.1.0",
    description="InterFusion (ECCV 2024) reimplemented in JAX/Flax",
    python_requires=">=3.10",
    # The data folders are listed as packages so that setuptools installs them without warning.
    packages=["interfusion_jax", "interfusion_jax.report_assets", "body", "pose", "pose.data",
              "nerf", "guidance", "configs", "ifcommon"],
    package_data={"pose.data": ["*.txt"], "interfusion_jax.report_assets": ["*"]},
    install_requires=[
        "numpy>=1.26",
        "scipy>=1.11",
        "jax>=0.7",
        "flax>=0.10",
        "optax>=0.2",
        "orbax-checkpoint>=0.11",
        "ml_collections>=1.0",
        "absl-py>=2.0",
        "transformers>=4.45,<5",
        "safetensors>=0.4",
        "sentencepiece>=0.2",
        "scikit-learn>=1.3",
        "trimesh>=4.0",
        "scikit-image>=0.22",
        "pillow>=10",
        "imageio>=2.31",
        "imageio-ffmpeg>=0.5",
        "tqdm>=4.66",
        "tensorboardX>=2.6",
    ],
    extras_require={
        "cuda": ["jax[cuda12]>=0.7"],
        "test": ["pytest>=8", "pytest-xdist>=3.5", "playwright>=1.40"],
    },
)
