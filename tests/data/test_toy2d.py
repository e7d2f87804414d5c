"""Toy 2D sets: shapes, dtype, determinism, and the documented scale (E x = 0, E|x|^2/2 = 1)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowjax.data import TOY2D_NAMES, sample_toy2d, toy2d_raw_scale

N = 100_000  # one compiled size per set; standard errors of the moments ~ 0.005


@functools.lru_cache(maxsize=None)
def _draw(name, seed):
    return sample_toy2d(name, jax.random.key(seed), N)


@pytest.mark.parametrize("name", TOY2D_NAMES)
def test_shape_dtype_determinism(name):
    x = _draw(name, 0)
    assert x.shape == (N, 2) and x.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(x)))
    np.testing.assert_array_equal(x, sample_toy2d(name, jax.random.key(0), N))
    assert not np.allclose(x[:100], _draw(name, 1)[:100])


@pytest.mark.parametrize("name", TOY2D_NAMES)
def test_documented_scale(name):
    # Monte Carlo check of the closed-form moments of the module docstring.
    x = np.asarray(_draw(name, 0), dtype=np.float64)
    np.testing.assert_allclose(x.mean(0), 0.0, atol=0.02)
    np.testing.assert_allclose((x**2).sum(1).mean() / 2, 1.0, atol=0.02)


def test_specific_geometry():
    # 8gaussians: every point lies within 6 component stds of one of the 8 centres.
    c = toy2d_raw_scale("8gaussians")
    x = np.asarray(_draw("8gaussians", 0)) * c
    ang = np.arange(8) * np.pi / 4
    centres = 4.0 * np.stack([np.cos(ang), np.sin(ang)], -1)
    d = np.linalg.norm(x[:, None, :] - centres[None], axis=-1).min(1)
    assert d.max() < 6 * 0.5
    # checkerboard: raw points lie in the black cells ((floor(x) + floor(y)) even) of [-2, 2]^2.
    cb = np.asarray(_draw("checkerboard", 0)) * toy2d_raw_scale("checkerboard")
    assert np.all(np.abs(cb) <= 2.0 + 1e-5)
    cells = np.floor(cb + 2.0).astype(int)
    assert np.all(cells.sum(1) % 2 == 0)
    # rings: raw radii cluster at the 4 radii (noise std 0.08).
    r = np.linalg.norm(np.asarray(_draw("rings", 0)), axis=1) * toy2d_raw_scale("rings")
    nearest = np.abs(r[:, None] - np.array([3.0, 2.25, 1.5, 0.75])[None]).min(1)
    assert nearest.max() < 6 * 0.08
    # moons: raw points lie near the two unit half circles (noise std 0.1).
    m = np.asarray(_draw("moons", 0)) * toy2d_raw_scale("moons") + np.array([0.5, 0.25])
    d_upper = np.abs(np.linalg.norm(m, axis=1) - 1.0)
    d_lower = np.abs(np.linalg.norm(m - np.array([1.0, 0.5]), axis=1) - 1.0)
    assert np.minimum(d_upper, d_lower).max() < 6 * 0.1


def test_jit_inside_user_code():
    f = jax.jit(lambda k: sample_toy2d("spirals", k, 64).sum())
    assert np.isfinite(float(f(jax.random.key(0))))


def test_bad_args():
    with pytest.raises(ValueError, match="name"):
        sample_toy2d("swissroll", jax.random.key(0), 10)
    with pytest.raises(ValueError, match="n"):
        sample_toy2d("moons", jax.random.key(0), 0)
