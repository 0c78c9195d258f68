"""interfusion_jax."""
