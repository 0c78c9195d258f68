"""Marching cubes on analytic densities and exports through trimesh."""
import jax.numpy as jnp
import numpy as np
import pytest
import trimesh

from nerf.mesh import export_mesh, extract_mesh

PEAK, SHARPNESS = 100.0, 40.0


def ball(radius):
    """Smooth ball density: PEAK · sigmoid(−SHARPNESS (|x| − radius))."""
    return lambda x: PEAK * jax_sigmoid(-SHARPNESS * (jnp.linalg.norm(x, axis=-1) - radius))


def jax_sigmoid(v):
    return 1.0 / (1.0 + jnp.exp(-v))


def level_radius(radius, level):
    """Radius where the ball density equals `level` (inverse of the sigmoid)."""
    p = level / PEAK
    return radius + np.log((1 - p) / p) / SHARPNESS


def colour(x):
    return jnp.clip(x * 0.5 + 0.5, 0.0, 1.0)


def test_sphere_radius_volume_and_colours():
    mesh = extract_mesh(ball(0.8), colour, bound=2.0, resolution=64, threshold=25.0)
    want = level_radius(0.8, 25.0)
    r = np.linalg.norm(mesh.vertices, axis=-1)
    np.testing.assert_allclose(r, want, atol=0.01)
    assert mesh.is_watertight
    np.testing.assert_allclose(mesh.volume, 4 / 3 * np.pi * want**3, rtol=0.02)  # > 0: outward
    expected = np.round(np.clip(mesh.vertices * 0.5 + 0.5, 0, 1) * 255)
    np.testing.assert_allclose(mesh.visual.vertex_colors[:, :3], expected, atol=1)


def test_auto_threshold_is_mean_plus_five_std():
    bound, res = 2.0, 48
    mesh = extract_mesh(ball(0.5), None, bound=bound, resolution=res)
    axis = np.linspace(-bound, bound, res)
    g = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1)
    dens = PEAK / (1 + np.exp(SHARPNESS * (np.linalg.norm(g, axis=-1) - 0.5)))
    want = level_radius(0.5, dens.mean() + 5 * dens.std())
    np.testing.assert_allclose(np.linalg.norm(mesh.vertices, axis=-1), want, atol=0.02)


def test_auto_threshold_falls_back_to_half_opaque_steps_for_large_objects():
    bound, res = 2.0, 48  # a ball of radius 1.4 fills a third of the box: mean + 5 std > peak
    mesh = extract_mesh(ball(1.4), None, bound=bound, resolution=res)
    want = level_radius(1.4, np.log(2.0) / (2 * bound / (res - 1)))
    np.testing.assert_allclose(np.linalg.norm(mesh.vertices, axis=-1), want, atol=0.05)


def test_empty_full_and_nan_grids_are_errors():
    with pytest.raises(ValueError, match="empty"):
        extract_mesh(ball(0.5), None, bound=2.0, resolution=16, threshold=1e4)
    with pytest.raises(ValueError, match="full"):
        extract_mesh(lambda x: jnp.ones(x.shape[0]), None, bound=2.0, resolution=16, threshold=0.5)
    with pytest.raises(ValueError, match="non-finite"):
        extract_mesh(lambda x: jnp.full(x.shape[0], jnp.nan), None, bound=2.0, resolution=16)


@pytest.mark.parametrize("suffix", [".obj", ".ply", ".glb"])
def test_export_round_trip(tmp_path, suffix):
    mesh = extract_mesh(ball(0.7), colour, bound=1.0, resolution=24, threshold=50.0)
    path = export_mesh(mesh, tmp_path / f"mesh{suffix}")
    back = trimesh.load(path, force="mesh", process=False)
    np.testing.assert_allclose(back.vertices, mesh.vertices, atol=1e-5)
    np.testing.assert_array_equal(back.faces, mesh.faces)
    np.testing.assert_array_equal(back.visual.vertex_colors, mesh.visual.vertex_colors)
    assert [p.name for p in tmp_path.iterdir()] == [f"mesh{suffix}"]  # no temporary left over


def test_export_unknown_suffix_lists_formats(tmp_path):
    mesh = trimesh.creation.box()
    with pytest.raises(ValueError, match=r"\.obj, \.ply, \.glb"):
        export_mesh(mesh, tmp_path / "mesh.stl")
    assert not list(tmp_path.iterdir())
