"""Toy 2D sets: shapes, dtype, determinism, and the documented scale (E x = 0, E|x|^2/2 = 1)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowjax.data import TOY2D_NAMES, sample_toy2d, toy2d_raw_scale


@pytest.mark.parametrize("name", TOY2D_NAMES)
def test_shape_dtype_determinism(name):
    x = sample_toy2d(name, jax.random.key(0), 257)
    assert x.shape == (257, 2) and x.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(x)))
    np.testing.assert_array_equal(x, sample_toy2d(name, jax.random.key(0), 257))
    assert not np.allclose(x, sample_toy2d(name, jax.random.key(1), 257))


@pytest.mark.parametrize("name", TOY2D_NAMES)
def test_documented_scale(name):
    # Monte Carlo check of the closed-form moments; n = 2e5 gives standard errors ~ 0.005.
    x = np.asarray(sample_toy2d(name, jax.random.key(3), 200_000), dtype=np.float64)
    np.testing.assert_allclose(x.mean(0), 0.0, atol=0.02)
    np.testing.assert_allclose((x**2).sum(1).mean() / 2, 1.0, atol=0.02)


def test_specific_geometry():
    # 8gaussians: every point is near one of 8 centres on the radius 4/scale circle.
    x = np.asarray(sample_toy2d("8gaussians", jax.random.key(0), 2000))
    r_centre = 4.0 / toy2d_raw_scale("8gaussians")
    ang = np.arange(8) * np.pi / 4
    centres = r_centre * np.stack([np.cos(ang), np.sin(ang)], -1)
    d = np.linalg.norm(x[:, None, :] - centres[None], axis=-1).min(1)
    assert d.max() < 5 * 0.5 / toy2d_raw_scale("8gaussians") * 1.5
    # checkerboard: raw points lie in black cells only ((floor(x)+floor(y)) even on [-2,2]^2).
    c = np.asarray(sample_toy2d("checkerboard", jax.random.key(0), 5000)) * toy2d_raw_scale("checkerboard")
    cells = np.floor(c + 2.0).astype(int)
    assert np.all((cells.sum(1) % 2) == 0)
    assert np.all(np.abs(c) <= 2.0 + 1e-5)
    # rings: raw radii cluster at the 4 radii.
    r = np.linalg.norm(np.asarray(sample_toy2d("rings", jax.random.key(0), 4000)), axis=1) * toy2d_raw_scale("rings")
    nearest = np.abs(r[:, None] - np.array([3.0, 2.25, 1.5, 0.75])[None]).min(1)
    assert nearest.max() < 0.5


def test_jit_inside_user_code():
    f = jax.jit(lambda k: sample_toy2d("spirals", k, 64).sum())
    assert np.isfinite(float(f(jax.random.key(0))))


def test_bad_args():
    with pytest.raises(ValueError, match="name"):
        sample_toy2d("swissroll", jax.random.key(0), 10)
    with pytest.raises(ValueError, match="n"):
        sample_toy2d("moons", jax.random.key(0), 0)
