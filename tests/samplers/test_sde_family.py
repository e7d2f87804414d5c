"""Marginal-preserving SDE family and PF-ODE likelihood on the analytic oracle (spec tests 10-11)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowjax import schedules
from flowjax.paths import linear_path, vp_path
from flowjax.samplers import sde_family as F
from flowjax.samplers import solvers as S
from flowjax.testing import GaussianMixtureFlow, gaussian_flow

N = 4000


def _mixture_moments(flow, t):
    """Exact mean and per-coordinate second moment of p_t for a mixture."""
    a, s = flow.path.alpha(jnp.asarray(t)), flow.path.sigma(jnp.asarray(t))
    w = flow.weights[:, None]
    mean = a * jnp.sum(w * flow.means, 0)
    second = jnp.sum(w * (a**2 * (flow.means**2 + flow.stds**2)), 0) + s**2
    return mean, second


DIFFUSIONS = {
    "ode": lambda p: F.zero_diffusion(),
    "quarter_g2": lambda p: F.reverse_sde_diffusion(p, eta=0.5),
    "reverse": lambda p: F.reverse_sde_diffusion(p),
    "flow_grpo": lambda p: F.flow_grpo_diffusion(p, a=0.7),
    "dance_grpo": lambda p: F.dance_grpo_diffusion(0.5),
}


CASES = [(name, "exp_em") for name in DIFFUSIONS] + [("reverse", "em"), ("dance_grpo", "em")] + [
    pytest.param(name, "em", marks=pytest.mark.slow) for name in ("ode", "quarter_g2", "flow_grpo")]


@pytest.mark.parametrize("name,method", CASES)
def test_sde_family_keeps_the_ode_marginals(name, method):
    """Start from exact samples of p_{0.05}; at several t the moments match p_t within 4 standard
    errors (plus a small allowance for the O(h) weak error of the scheme)."""
    path = linear_path()
    flow = GaussianMixtureFlow(jnp.array([[1.0, -0.5], [-1.0, 1.0]]), jnp.array([0.5, 0.8]), jnp.array([0.6, 0.4]), path=path)
    t0, t1, steps = 0.05, 0.95, 200
    x = flow.sample_marginal(jax.random.key(0), N, t0)
    grid = (schedules.log_snr_grid(path, steps, t_min=t0, t_max=t1) if method == "exp_em"
            else schedules.uniform_grid(steps, t_min=t0, t_max=t1))
    run = jax.jit(lambda k, x: F.sample_sde(flow.velocity, k, x, times=grid, path=path,
                                            diffusion=DIFFUSIONS[name](path), method=method, return_trajectory=True))
    traj = run(jax.random.key(1), x)
    for idx in (steps // 4, steps // 2, steps):
        t = float(grid[idx])
        mean, second = _mixture_moments(flow, t)
        xs = traj[idx]
        m_hat, s_hat = jnp.mean(xs, 0), jnp.mean(xs**2, 0)
        se_m = jnp.std(xs, 0) / np.sqrt(N)
        se_s = jnp.std(xs**2, 0) / np.sqrt(N)
        assert np.all(np.abs(m_hat - mean) < 4 * se_m + 0.01), (name, method, t, m_hat, mean)
        assert np.all(np.abs(s_hat - second) < 4 * se_s + 0.02), (name, method, t, s_hat, second)


def test_noise_changes_paths_but_not_marginals():
    """Sanity: the SDEs are really stochastic (samples differ from the ODE's) while moments agree."""
    path = linear_path()
    flow = gaussian_flow(jnp.array([1.0, -1.0]), jnp.array([0.5, 1.5]), path=path)
    x = flow.sample_marginal(jax.random.key(0), 512, 0.1)
    grid = schedules.log_snr_grid(path, 50, t_min=0.1, t_max=0.9)
    ode = F.sample_sde(flow.velocity, jax.random.key(1), x, times=grid, diffusion=F.zero_diffusion(), method="exp_em")
    sde = F.sample_sde(flow.velocity, jax.random.key(1), x, times=grid, method="exp_em")
    assert float(jnp.mean(jnp.abs(ode - sde))) > 0.1


def test_diffusion_choices_and_coefficients():
    path = linear_path()
    t = jnp.linspace(0.1, 0.9, 9)
    np.testing.assert_allclose(F.reverse_sde_g2(path, t), 2 * (1 - t) / t, rtol=1e-12)
    np.testing.assert_allclose(F.flow_grpo_diffusion(path, a=0.7)(t), 0.7 * jnp.sqrt((1 - t) / t), rtol=1e-12)
    np.testing.assert_allclose(F.dance_grpo_diffusion(0.3)(t), 0.3)
    f, g2 = F.forward_sde_coefficients(vp_path(), t)
    # VP: f = -beta/2, g^2 = beta (beta(tau) = 0.1 + 19.9 tau, tau = 1 - t)
    beta = 0.1 + 19.9 * (1 - t)
    np.testing.assert_allclose(f, -beta / 2, rtol=1e-9)
    np.testing.assert_allclose(g2, beta, rtol=1e-9)


def test_em_transition_log_prob():
    path = linear_path()
    flow = gaussian_flow(jnp.array([1.0, -1.0]), jnp.array([0.5, 1.5]), path=path)
    model = S.PredictionModel(flow.velocity, path)
    x = flow.sample_marginal(jax.random.key(0), 5, 0.3)
    mean, std = F.em_transition(model, x, 0.3, 0.35, diffusion=F.flow_grpo_diffusion(path))
    x_next = F.em_step(model, jax.random.key(4), x, 0.3, 0.35, diffusion=F.flow_grpo_diffusion(path))
    lp = F.transition_log_prob(x_next, mean, std)
    ref = jax.scipy.stats.norm.logpdf(x_next, mean, std).sum(-1)
    np.testing.assert_allclose(lp, ref, rtol=1e-12)
    # drift = v + (eps^2/2) s
    eps = F.flow_grpo_diffusion(path)(jnp.asarray(0.3))
    np.testing.assert_allclose(F.sde_drift(model, x, 0.3, eps), flow.velocity(x, 0.3) + 0.5 * eps**2 * flow.score(x, 0.3), rtol=1e-10)


@pytest.mark.parametrize("prediction", ["velocity", "noise"])
def test_pf_ode_likelihood_matches_oracle_density(prediction):
    """VP path (alpha_0 > 0, so both end points are regular for a noise model); p_0 is the oracle's."""
    path = vp_path()
    flow = GaussianMixtureFlow(jnp.array([[1.0, -0.5], [-1.0, 1.0]]), jnp.array([0.5, 0.8]), jnp.array([0.6, 0.4]), path=path)
    fn = flow.velocity if prediction == "velocity" else (lambda x, t: flow.posterior_means(x, t)[1])
    x1 = flow.sample_data(jax.random.key(0), 8)
    ll = F.pf_ode_log_likelihood(fn, x1, path=path, prediction=prediction, rtol=1e-8, atol=1e-8,
                                 source_log_prob=lambda z: flow.log_prob(z, 0.0))
    np.testing.assert_allclose(ll, flow.log_prob(x1, 1.0), atol=1e-4)
