"""Paths: boundary values, autodiff derivatives, conversions round-trip and agree with the oracle."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowjax import paths
from flowjax.testing import GaussianMixtureFlow

PATHS = [paths.linear_path(), paths.cosine_path(), paths.vp_path(), paths.polynomial_path(2.0), paths.polynomial_path(3.0)]


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.name)
def test_boundary_values(path):
    if path.name == "vp":
        # VP reaches pure noise only in the limit: alpha_0 = exp(-(b_min + b_max)/4).
        np.testing.assert_allclose(path.alpha(jnp.array(0.0)), np.exp(-(0.1 + 20.0) / 4), rtol=1e-6)
    else:
        np.testing.assert_allclose(path.alpha(jnp.array(0.0)), 0.0, atol=1e-12)
        np.testing.assert_allclose(path.sigma(jnp.array(0.0)), 1.0, atol=1e-12)
    np.testing.assert_allclose(path.alpha(jnp.array(1.0)), 1.0, atol=1e-12)
    np.testing.assert_allclose(path.sigma(jnp.array(1.0)), 0.0, atol=1e-7)


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.name)
def test_derivatives_match_autodiff(path):
    ts = jnp.linspace(0.05, 0.95, 7)
    np.testing.assert_allclose(jax.vmap(jax.grad(path.alpha))(ts), path.d_alpha(ts), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(jax.vmap(jax.grad(path.sigma))(ts), path.d_sigma(ts), rtol=1e-8, atol=1e-10)
    lam = jax.vmap(jax.grad(path.log_snr))(ts)
    np.testing.assert_allclose(lam, path.d_log_snr(ts), rtol=1e-8)


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.name)
def test_sample_returns_point_and_velocity(path):
    key = jax.random.key(0)
    x0, x1 = jax.random.normal(key, (2, 5, 3))
    t = jnp.linspace(0.1, 0.9, 5)
    xt, dxt = path.sample(x0, x1, t)
    np.testing.assert_allclose(xt, path.alpha(t)[:, None] * x1 + path.sigma(t)[:, None] * x0, rtol=1e-12)
    # dx_t is the time derivative of x_t for fixed (x0, x1).
    fd = (path.sample(x0, x1, t + 1e-6)[0] - path.sample(x0, x1, t - 1e-6)[0]) / 2e-6
    np.testing.assert_allclose(dxt, fd, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.name)
@pytest.mark.parametrize("src", paths.PREDICTIONS)
def test_conversions_round_trip(path, src):
    key = jax.random.key(1)
    x, pred = jax.random.normal(key, (2, 6, 2))
    t = jnp.linspace(0.1, 0.9, 6)
    for dst in paths.PREDICTIONS:
        there = path.convert(pred, x, t, src=src, dst=dst)
        back = path.convert(there, x, t, src=dst, dst=src)
        np.testing.assert_allclose(back, pred, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("path", PATHS[:3], ids=lambda p: p.name)
def test_conversions_agree_with_oracle(path):
    oracle = GaussianMixtureFlow(jnp.array([[-1.5, 0.5], [1.0, -1.0]]), jnp.array([0.4, 0.7]), jnp.array([0.4, 0.6]), path=path)
    x = oracle.sample_marginal(jax.random.key(2), 8, 0.4)
    t = jnp.full((8,), 0.4)
    v = oracle.velocity(x, t)
    ex1, ex0 = oracle.posterior_means(x, t)
    np.testing.assert_allclose(path.convert(v, x, t, src="velocity", dst="data"), ex1, rtol=1e-8, atol=1e-9)
    np.testing.assert_allclose(path.convert(v, x, t, src="velocity", dst="noise"), ex0, rtol=1e-8, atol=1e-9)
    np.testing.assert_allclose(path.convert(v, x, t, src="velocity", dst="score"), oracle.score(x, t), rtol=1e-8, atol=1e-9)


def test_linear_path_notation_identities():
    path = paths.linear_path()
    x, v = jax.random.normal(jax.random.key(3), (2, 4, 2))
    t = jnp.full((4,), 0.3)
    np.testing.assert_allclose(path.convert(v, x, t, src="velocity", dst="data"), x + 0.7 * v, rtol=1e-10)
    np.testing.assert_allclose(path.convert(v, x, t, src="velocity", dst="noise"), x - 0.3 * v, rtol=1e-10)


def test_bad_inputs():
    with pytest.raises(ValueError, match="prediction"):
        paths.linear_path().convert(jnp.ones((2, 2)), jnp.ones((2, 2)), 0.5, src="eps", dst="velocity")
    with pytest.raises(ValueError, match="time"):
        paths.broadcast_time(jnp.ones((3,)), jnp.ones((2, 2)))
    with pytest.raises(ValueError, match="beta_min"):
        paths.vp_path(beta_min=5.0, beta_max=1.0)
    with pytest.raises(ValueError, match="unknown path"):
        paths.path_by_name("spline")
