"""nerf."""
