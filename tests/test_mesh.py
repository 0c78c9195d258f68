"""Marching cubes on analytic densities (the threshold rules of docs/method.md §2.6) and trimesh exports."""
import jax.numpy as jnp
import numpy as np
import pytest
import trimesh

from nerf.mesh import export_mesh, extract_mesh, remove_small_components

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


def ball_grid(radius, lo, hi, res):
    """The ball density on res³ vertices spanning the cube [lo, hi]³, in NumPy."""
    axis = np.linspace(lo, hi, res)
    g = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1)
    return PEAK / (1 + np.exp(SHARPNESS * (np.linalg.norm(g, axis=-1) - radius)))


def test_sphere_radius_volume_and_colours():
    mesh = extract_mesh(ball(0.8), colour, bound=2.0, resolution=64, threshold=25.0)
    want = level_radius(0.8, 25.0)
    r = np.linalg.norm(mesh.vertices, axis=-1)
    np.testing.assert_allclose(r, want, atol=0.01)
    assert mesh.is_watertight
    np.testing.assert_allclose(mesh.volume, 4 / 3 * np.pi * want**3, rtol=0.02)  # > 0: outward
    expected = np.round(np.clip(mesh.vertices * 0.5 + 0.5, 0, 1) * 255)
    np.testing.assert_allclose(mesh.visual.vertex_colors[:, :3], expected, atol=1)


def test_release_threshold_is_the_mean_above_1e5_coarse_to_fine():
    bound, res = 2.0, 48
    mesh = extract_mesh(ball(0.5), None, bound=bound, resolution=res)  # "release" by default
    coarse = ball_grid(0.5, -bound, bound, res)
    coarse_radius = level_radius(0.5, coarse[coarse > 1e-5].mean())
    # Second pass: the coarse sphere's box grown by 10% of its size on each side.
    fine = ball_grid(0.5, -1.2 * coarse_radius, 1.2 * coarse_radius, res)
    level = fine[fine > 1e-5].mean()
    assert level > 1.3 * coarse[coarse > 1e-5].mean()  # the two passes' levels differ
    np.testing.assert_allclose(mesh.metadata["threshold"], level, rtol=0.03)
    np.testing.assert_allclose(np.linalg.norm(mesh.vertices, axis=-1), level_radius(0.5, level),
                               atol=0.005)
    assert mesh.is_watertight


def test_release_drops_small_components_before_the_tight_box():
    # A speck of 32 faces beside a ball of 5372: under 1% of the largest component.
    speck = lambda x: ball(0.06)(x - jnp.array([1.6, 1.6, 1.6]))  # noqa: E731
    mesh = extract_mesh(lambda x: ball(1.0)(x) + speck(x), None, bound=2.0, resolution=48)
    assert len(mesh.split(only_watertight=False)) == 1
    np.testing.assert_allclose(np.linalg.norm(mesh.vertices, axis=-1), 1.0, atol=0.02)
    with_speck = extract_mesh(lambda x: ball(1.0)(x) + speck(x), None, bound=2.0, resolution=48,
                              threshold="auto")
    assert len(with_speck.split(only_watertight=False)) == 2


def test_remove_small_components_keeps_one_percent_of_the_largest():
    big = trimesh.creation.icosphere(subdivisions=4)  # 5120 faces: the bar is 51
    kept = trimesh.creation.icosphere(subdivisions=3).apply_translation((3.0, 0.0, 0.0))
    dropped = trimesh.creation.icosphere(subdivisions=0).apply_translation((0.0, 3.0, 0.0))
    out = remove_small_components(trimesh.util.concatenate([big, kept, dropped]))
    assert sorted(len(p.faces) for p in out.split(only_watertight=False)) == [1280, 5120]


def test_threshold_numbers_as_text_and_unknown_rules():
    by_text = extract_mesh(ball(0.8), None, bound=2.0, resolution=32, threshold="25")
    by_number = extract_mesh(ball(0.8), None, bound=2.0, resolution=32, threshold=25.0)
    np.testing.assert_array_equal(by_text.vertices, by_number.vertices)
    assert by_text.metadata["threshold"] == 25.0
    with pytest.raises(ValueError, match="'relase' is neither one of release, auto nor a number"):
        extract_mesh(ball(0.8), None, bound=2.0, resolution=16, threshold="relase")


def test_auto_threshold_is_mean_plus_five_std():
    bound, res = 2.0, 48
    mesh = extract_mesh(ball(0.5), None, bound=bound, resolution=res, threshold="auto")
    dens = ball_grid(0.5, -bound, bound, res)
    want = level_radius(0.5, dens.mean() + 5 * dens.std())
    np.testing.assert_allclose(np.linalg.norm(mesh.vertices, axis=-1), want, atol=0.02)


def test_auto_threshold_falls_back_to_half_opaque_steps_for_large_objects():
    bound, res = 2.0, 48  # a ball of radius 1.4 fills a third of the box: mean + 5 std > peak
    mesh = extract_mesh(ball(1.4), None, bound=bound, resolution=res, threshold="auto")
    want = level_radius(1.4, np.log(2.0) / (2 * bound / (res - 1)))
    np.testing.assert_allclose(np.linalg.norm(mesh.vertices, axis=-1), want, atol=0.05)


def test_empty_full_and_nan_grids_are_errors():
    with pytest.raises(ValueError, match="empty"):
        extract_mesh(ball(0.5), None, bound=2.0, resolution=16, threshold=1e4)
    with pytest.raises(ValueError, match="full"):
        extract_mesh(lambda x: jnp.ones(x.shape[0]), None, bound=2.0, resolution=16, threshold=0.5)
    with pytest.raises(ValueError, match="non-finite"):
        extract_mesh(lambda x: jnp.full(x.shape[0], jnp.nan), None, bound=2.0, resolution=16)
    with pytest.raises(ValueError, match="empty at the release threshold"):
        extract_mesh(lambda x: jnp.zeros(x.shape[0]), None, bound=2.0, resolution=16)


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
