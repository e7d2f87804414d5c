"""The analytic oracle against Monte Carlo, identities of NOTATION.md and normalisation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowjax import metrics, paths
from flowjax.testing import GaussianMixtureFlow, gaussian_flow


def _oracle(path=None):
    return GaussianMixtureFlow(
        jnp.array([[-2.0, 0.0], [2.0, 1.0], [0.0, -2.0]]), jnp.array([0.5, 0.3, 0.6]), jnp.array([0.3, 0.5, 0.2]),
        path=path or paths.linear_path(),
    )


@pytest.mark.parametrize("path", [paths.linear_path(), paths.cosine_path()], ids=lambda p: p.name)
def test_velocity_and_score_match_monte_carlo(path):
    """v(x, t) = E[dx_t | x_t = x] and score = Tweedie, estimated by self-normalised importance weights."""
    oracle = _oracle(path)
    t = 0.6
    x = jnp.array([[0.5, 0.2], [-1.0, 0.0]])
    n = 400_000
    k0, k1 = jax.random.split(jax.random.key(0))
    x1 = oracle.sample_data(k1, n)
    a, s, da, ds = path.alpha(t), path.sigma(t), path.d_alpha(t), path.d_sigma(t)
    for i in range(x.shape[0]):
        # p(x_t = x | x1) = N(x; a x1, s^2): posterior weights over data samples.
        logw = -0.5 * jnp.sum((x[i][None, :] - a * x1) ** 2, -1) / s**2
        w = jax.nn.softmax(logw)
        x0_post = (x[i][None, :] - a * x1) / s
        v_mc = jnp.sum(w[:, None] * (da * x1 + ds * x0_post), 0)
        score_mc = -jnp.sum(w[:, None] * x0_post, 0) / s
        np.testing.assert_allclose(oracle.velocity(x[i : i + 1], t)[0], v_mc, atol=0.03)
        np.testing.assert_allclose(oracle.score(x[i : i + 1], t)[0], score_mc, atol=0.03)


def test_velocity_is_not_trivially_matched():
    """Guard: the MC comparison above would fail for a wrong sign of the velocity."""
    oracle = _oracle()
    x = jnp.array([[0.5, 0.2]])
    assert float(jnp.linalg.norm(oracle.velocity(x, 0.6))) > 0.1


def test_flow_map_semigroup_and_inverse():
    oracle = _oracle()
    x = oracle.sample_source(jax.random.key(1), 6)
    x_half = oracle.flow_map(x, 0.0, 0.45)
    x_one = oracle.flow_map(x, 0.0, 1.0)
    np.testing.assert_allclose(oracle.flow_map(x_half, 0.45, 1.0), x_one, atol=1e-8)
    np.testing.assert_allclose(oracle.flow_map(x_one, 1.0, 0.0), x, atol=1e-8)
    # Lagrangian identity d/dt X_{s,t}(x) = v(X_{s,t}(x), t).
    h = 1e-4
    dxdt = (oracle.flow_map(x, 0.2, 0.5 + h) - oracle.flow_map(x, 0.2, 0.5 - h)) / (2 * h)
    np.testing.assert_allclose(dxdt, oracle.velocity(oracle.flow_map(x, 0.2, 0.5), 0.5), atol=1e-6)


def test_average_velocity_definition_and_diagonal():
    oracle = _oracle()
    x = oracle.sample_marginal(jax.random.key(2), 5, 0.2)
    s = jnp.full((5,), 0.2)
    t = jnp.array([0.2, 0.4, 0.6, 0.8, 1.0])
    u = oracle.average_velocity(x, s, t)
    np.testing.assert_allclose(u[0], oracle.velocity(x[:1], 0.2)[0], atol=1e-12)
    np.testing.assert_allclose(x[1:] + (t - s)[1:, None] * u[1:], oracle.flow_map(x[1:], s[1:], t[1:]), atol=1e-9)


def test_pushforward_matches_data():
    """MMD(pushforward, data) lies in the null range of MMD between independent data samples."""
    oracle = _oracle()
    n = 1500
    pushed = oracle.flow_map(oracle.sample_source(jax.random.key(3), n), 0.0, 1.0)
    data = oracle.sample_data(jax.random.key(4), n)
    null = np.array([float(metrics.mmd(oracle.sample_data(jax.random.key(10 + i), n), data)) for i in range(6)])
    threshold = null.mean() + 4 * null.std(ddof=1) + 1e-4
    assert float(metrics.mmd(pushed, data)) < threshold
    assert float(metrics.mmd(data + 0.3, data)) > 5 * threshold  # the test can fail


@pytest.mark.parametrize("t", [0.0, 0.5, 1.0])
def test_log_prob_integrates_to_one_in_1d(t):
    oracle = GaussianMixtureFlow(jnp.array([[-1.0], [1.5]]), jnp.array([0.3, 0.5]), jnp.array([0.4, 0.6]))
    grid = jnp.linspace(-8, 8, 8001)[:, None]
    density = jnp.exp(oracle.log_prob(grid, t))
    np.testing.assert_allclose(jnp.trapezoid(density, grid[:, 0]), 1.0, atol=1e-6)


def test_score_is_gradient_of_log_prob():
    oracle = _oracle(paths.vp_path())
    x = oracle.sample_marginal(jax.random.key(6), 4, 0.7)
    grad = jax.vmap(jax.grad(lambda xi: oracle.log_prob(xi[None], 0.7)[0]))(x)
    np.testing.assert_allclose(oracle.score(x, 0.7), grad, rtol=1e-8, atol=1e-10)


def test_single_gaussian_velocity_closed_form():
    """For data N(m, s^2) on the linear path the velocity is affine in x with known coefficients."""
    m, s = 1.5, 0.5
    oracle = gaussian_flow(jnp.array([m]), s)
    x = jnp.array([[0.3], [-0.4]])
    t = 0.3
    var = t**2 * s**2 + (1 - t) ** 2
    expected = m + (t * s**2 - (1 - t)) / var * (x - t * m)
    np.testing.assert_allclose(oracle.velocity(x, t), expected, rtol=1e-10)


def test_bad_parameters():
    with pytest.raises(ValueError, match="means"):
        GaussianMixtureFlow(jnp.ones(3), jnp.ones(3), jnp.ones(3))
    with pytest.raises(ValueError, match="stds"):
        GaussianMixtureFlow(jnp.ones((2, 3)), jnp.ones(3), jnp.ones(2))
