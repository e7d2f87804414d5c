"""Samplers on the analytic flow: convergence orders, likelihood, inversion, SDE marginals."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowjax import paths, samplers
from flowjax.testing import GaussianMixtureFlow


@pytest.fixture(scope="module")
def oracle():
    return GaussianMixtureFlow(jnp.array([[-2.0, 0.0], [2.0, 1.0]]), jnp.array([0.5, 0.3]), jnp.array([0.3, 0.7]))


@pytest.fixture(scope="module")
def reference(oracle):
    x0 = oracle.sample_source(jax.random.key(0), 16)
    return x0, oracle.flow_map(x0, 0.0, 1.0)


@pytest.mark.parametrize("solver,order", [("euler", 1), ("midpoint", 2), ("heun", 2), ("rk4", 4)])
def test_convergence_order(oracle, reference, solver, order):
    x0, x1 = reference
    errs = [float(jnp.max(jnp.abs(samplers.ode(oracle.velocity, x0, solver=solver, steps=n) - x1))) for n in (32, 64, 128)]
    measured = np.log2(errs[1] / errs[2])
    assert abs(measured - order) < 0.3, (errs, measured)


def test_adaptive_and_grid(oracle, reference):
    x0, x1 = reference
    np.testing.assert_allclose(samplers.ode(oracle.velocity, x0, solver="tsit5", rtol=1e-9, atol=1e-9), x1, atol=1e-6)
    grid = jnp.linspace(0.0, 1.0, 65) ** 1.5
    fine = samplers.ode(oracle.velocity, x0, solver="rk4", times=grid)
    np.testing.assert_allclose(fine, x1, atol=1e-4)
    traj = samplers.ode(oracle.velocity, x0, solver="rk4", steps=64, save_at=jnp.array([0.0, 0.5, 1.0]))
    assert traj.shape == (3,) + x0.shape
    np.testing.assert_allclose(traj[0], x0)
    np.testing.assert_allclose(traj[1], oracle.flow_map(x0, 0.0, 0.5), atol=1e-5)


def test_inversion_round_trip(oracle, reference):
    x0, x1 = reference
    back = samplers.ode(oracle.velocity, x1, t0=1.0, t1=0.0, solver="rk4", steps=128)
    np.testing.assert_allclose(back, x0, atol=1e-5)


def test_log_likelihood_matches_oracle_both_directions(oracle):
    x1 = oracle.sample_data(jax.random.key(1), 8)
    ll = samplers.log_likelihood(oracle.velocity, x1, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(ll, oracle.log_prob(x1), atol=1e-6)
    x0 = samplers.ode(oracle.velocity, x1, t0=1.0, t1=0.0, solver="tsit5", rtol=1e-9, atol=1e-9)
    x1_fwd, ll_fwd = samplers.sample_with_log_likelihood(oracle.velocity, x0, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(x1_fwd, x1, atol=1e-6)
    np.testing.assert_allclose(ll_fwd, ll, atol=1e-6)


def test_hutchinson_is_unbiased(oracle):
    x1 = oracle.sample_data(jax.random.key(2), 4)
    exact = oracle.log_prob(x1)
    estimate = lambda k: samplers.log_likelihood(oracle.velocity, x1, divergence="hutchinson", key=k, solver="rk4", steps=32)
    draws = jax.jit(jax.vmap(estimate))(jax.random.split(jax.random.key(9), 24))
    se = draws.std(0) / np.sqrt(draws.shape[0])
    assert bool(jnp.all(jnp.abs(draws.mean(0) - exact) < 4 * se + 2e-3))


@pytest.mark.parametrize("path", [paths.linear_path(), paths.cosine_path()], ids=lambda p: p.name)
def test_sde_keeps_the_marginals(path):
    oracle = GaussianMixtureFlow(jnp.array([[-2.0, 0.0], [2.0, 1.0]]), jnp.array([0.5, 0.3]), jnp.array([0.3, 0.7]), path=path)
    n = 20000
    x0 = oracle.sample_source(jax.random.key(3), n)
    xs = samplers.sde(oracle.velocity, jax.random.key(4), x0, path=path, diffusion=1.0, steps=400)
    data = oracle.sample_data(jax.random.key(5), n)
    np.testing.assert_allclose(xs.mean(0), data.mean(0), atol=0.05)
    np.testing.assert_allclose(xs.std(0), data.std(0), atol=0.05)
    # Intermediate marginal: stop at t = 0.5 and compare moments with the path's marginal.
    xh = samplers.sde(oracle.velocity, jax.random.key(6), x0, path=path, diffusion=1.0, steps=200, t1=0.5)
    ref = oracle.sample_marginal(jax.random.key(7), n, 0.5)
    np.testing.assert_allclose(xh.mean(0), ref.mean(0), atol=0.05)
    np.testing.assert_allclose(xh.std(0), ref.std(0), atol=0.05)


def test_sde_with_wrong_score_sign_breaks_marginals(oracle):
    """Guard: a drift without the score correction would not keep the marginals."""
    n = 20000
    x0 = oracle.sample_source(jax.random.key(3), n)
    wrong = lambda x, t: oracle.velocity(x, t) - 0.5 * oracle.score(x, t) * 0.0 + 0.5 * (1 - t[:, None]) ** 2 * oracle.score(x, t)
    xs = samplers.sde(wrong, jax.random.key(4), x0, diffusion=1.0, steps=200)
    data = oracle.sample_data(jax.random.key(5), n)
    assert float(jnp.max(jnp.abs(xs.std(0) - data.std(0)))) > 0.05


def test_conditioning_is_passed(oracle):
    x0 = jnp.ones((4, 2))
    out = samplers.ode(lambda x, t, c: jnp.broadcast_to(c[:, None], x.shape), x0, steps=4, c=jnp.arange(4.0))
    np.testing.assert_allclose(out, x0 + jnp.arange(4.0)[:, None])


def test_jit_vmap_contract(oracle):
    f = jax.jit(lambda x: samplers.ode(oracle.velocity, x, solver="heun", steps=8))
    out = jax.vmap(f)(jnp.ones((3, 5, 2)))
    assert out.shape == (3, 5, 2) and bool(jnp.all(jnp.isfinite(out)))


def test_bad_inputs():
    v = lambda x, t: x
    with pytest.raises(ValueError, match="solver"):
        samplers.ode(v, jnp.ones((2, 2)), solver="rk45")
    with pytest.raises(ValueError, match="steps"):
        samplers.ode(v, jnp.ones((2, 2)), steps=0)
    with pytest.raises(ValueError, match="t1"):
        samplers.ode(v, jnp.ones((2, 2)), t1=1.5)
    with pytest.raises(TypeError, match="x0"):
        samplers.ode(v, jnp.ones((2, 2), jnp.int32))
    with pytest.raises(ValueError, match="key"):
        samplers.log_likelihood(v, jnp.ones((2, 2)), divergence="hutchinson")
