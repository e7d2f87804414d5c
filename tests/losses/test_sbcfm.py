"""SB-CFM, VP-CFM, target CFM and I-CFM with smoothing (Tong et al. 2302.00482; torchcfm parity)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowjax import couplings
from flowjax.losses import cfm
from flowjax.losses.sbcfm import (
    brownian_bridge,
    gaussian_sb_cross_covariance,
    icfm,
    sbcfm,
    target_cfm,
    target_path,
    vpcfm,
)
from flowjax.paths import cosine_path


def _lin(x, t):
    return 0.3 * x + t[:, None]


def test_brownian_bridge_marginals_velocity_and_score():
    """Given a pair, x_t ~ N(mu_t, sigma^2 t(1-t)); u_t = mu_t' + (sigma_t'/sigma_t)(x_t - mu_t) (autodiff);
    the score is -(x_t - mu_t)/sigma_t^2; u_t equals torchcfm's form."""
    sigma, t = 0.7, 0.3
    x0 = jnp.array([[1.0, -2.0]])
    x1 = jnp.array([[3.0, 0.5]])
    eps = jax.random.normal(jax.random.key(0), (50_000, 2))
    xt, ut, score = brownian_bridge(jnp.repeat(x0, 50_000, 0), jnp.repeat(x1, 50_000, 0), jnp.full((50_000,), t), eps, sigma=sigma)
    mu = t * x1 + (1 - t) * x0
    np.testing.assert_allclose(jnp.mean(xt, 0), mu[0], atol=4 * sigma * np.sqrt(t * (1 - t) / 50_000))
    np.testing.assert_allclose(jnp.var(xt, 0), sigma**2 * t * (1 - t), rtol=0.01)
    sig = lambda s: sigma * jnp.sqrt(s * (1 - s))
    dlog = jax.grad(sig)(t) / sig(t)
    np.testing.assert_allclose(ut, (x1 - x0) + dlog * (xt - mu), rtol=1e-10, atol=1e-10)
    torchcfm = (1 - 2 * t) / (2 * t * (1 - t)) * (xt - mu) + (x1 - x0)
    np.testing.assert_allclose(ut, torchcfm, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(score, -(xt - mu) / sig(t) ** 2, rtol=1e-9)


def test_entropic_plan_matches_gaussian_sb_closed_form_and_sb_marginal_variance():
    """The reg = 2 sigma^2 plan between 1-D Gaussians has the closed-form cross-covariance, and the
    SB-CFM path built on it has the SB marginal variance (1-t)^2 a^2 + t^2 b^2 + 2t(1-t)C + sigma^2 t(1-t)."""
    n, a, b, sigma = 400, 1.0, 2.0, 0.8
    q = (jnp.arange(n) + 0.5) / n
    z = jax.scipy.special.ndtri(q)[:, None]  # quantile grid: deterministic, moments very close to N(0,1)
    x0, x1 = a * z, b * jax.random.permutation(jax.random.key(1), z)
    plan = couplings.entropic_plan(x0, x1, reg=2 * sigma**2)
    cross = float(jnp.sum(plan * (x0 @ x1.T)))
    c_exact = float(gaussian_sb_cross_covariance(jnp.var(x0), jnp.var(x1), sigma))
    np.testing.assert_allclose(cross, c_exact, rtol=0.02)
    # the path marginal from the plan (exact expectation over the plan and the bridge noise)
    for t in (0.25, 0.5, 0.8):
        mean_sq = float(jnp.sum(plan * ((1 - t) * x0 + t * x1.T) ** 2)) + sigma**2 * t * (1 - t)
        expected = (1 - t) ** 2 * a**2 + t**2 * b**2 + 2 * t * (1 - t) * c_exact + sigma**2 * t * (1 - t)
        np.testing.assert_allclose(mean_sq, expected, rtol=0.02)
    # pairs sampled from this plan (ot_entropic = entropic_plan + sample_plan) have this covariance:
    # 25,600 pairs, so the Monte Carlo standard error is ~1% of C (one batch of 400 has ~8%)
    i0, i1 = couplings.sample_plan(jax.random.key(2), plan, 64 * n)
    np.testing.assert_allclose(float(jnp.mean(x0[i0, 0] * x1[i1, 0])), c_exact, rtol=0.05)
    j0, j1 = couplings.ot_entropic(2 * sigma**2)(jax.random.key(2), x0, x1)
    assert j0.shape == j1.shape == (n,)


def test_sbcfm_minimiser_is_marginal_drift_for_independent_gaussians():
    """With Gaussian x0, x1 and an independent coupling, (x_t, u_t) are jointly Gaussian, so the SB-CFM
    minimiser is linear: v(x) = Cov(u, x)/Var(x) x. The loss gradient vanishes there."""
    sigma, t = 0.9, 0.35
    a, b = 1.0, 1.5
    var_x = (1 - t) ** 2 * a**2 + t**2 * b**2 + sigma**2 * t * (1 - t)
    # u = (x1 - x0) + sigma (1-2t)/(2 sqrt(t(1-t))) eps
    cov_ux = t * b**2 - (1 - t) * a**2 + sigma**2 * (1 - 2 * t) / 2
    slope = cov_ux / var_x
    n = 100_000
    k = jax.random.split(jax.random.key(3), 2)
    x1 = b * jax.random.normal(k[0], (n, 1))
    x0 = a * jax.random.normal(k[1], (n, 1))

    def loss(m):
        return sbcfm(lambda x, tt: m * x, jax.random.key(4), x1, x0=x0, sigma=sigma,
                     coupling=couplings.independent(), time_sampler=lambda kk, nn: jnp.full((nn,), t))[0]

    g = jax.grad(loss)(slope)
    g_off = jax.grad(loss)(slope + 0.2)
    assert abs(float(g)) < 0.05 * abs(float(g_off))


def test_sbcfm_score_head_minimiser_is_true_score():
    sigma, t = 0.6, 0.5
    x0 = jnp.zeros((40_000, 1))
    x1 = jnp.ones((40_000, 1))
    var = sigma**2 * t * (1 - t)
    true_slope = -1.0 / var  # score of N(t, var) at x: -(x - t)/var

    def loss(m):
        return sbcfm(lambda x, tt: jnp.zeros_like(x), jax.random.key(5), x1, x0=x0, sigma=sigma,
                     coupling=couplings.independent(), score_fn=lambda x, tt: m * (x - t),
                     time_sampler=lambda kk, nn: jnp.full((nn,), t))[1]["score_mse"]

    g = jax.grad(loss)(true_slope)
    g_off = jax.grad(loss)(true_slope * 1.2)
    assert abs(float(g)) < 0.05 * abs(float(g_off))


def test_sb_sde_with_exact_fields_keeps_gaussian_marginal():
    """Independent N(0,1) -> N(0,1) bridge: p_t = N(0, s_t^2), s_t^2 = (1-t)^2 + t^2 + sigma^2 t(1-t);
    v = (s_t'/s_t) x and score -x/s_t^2; the SDE must end at N(0, 1)."""
    sigma = 1.0
    s2 = lambda t: (1 - t) ** 2 + t**2 + sigma**2 * t * (1 - t)
    ds2 = lambda t: -2 * (1 - t) + 2 * t + sigma**2 * (1 - 2 * t)
    v = lambda x, t: (0.5 * ds2(t) / s2(t))[:, None] * x
    s = lambda x, t: -x / s2(t)[:, None]
    from flowjax.losses.sbcfm import sb_sde

    x = sb_sde(v, s, jax.random.key(6), jax.random.normal(jax.random.key(7), (20_000, 1)), sigma=sigma, steps=100)
    np.testing.assert_allclose(float(jnp.var(x)), 1.0, rtol=0.05)


def test_vpcfm_and_icfm_match_cfm_when_unsmoothed():
    key = jax.random.key(8)
    x1 = jax.random.normal(jax.random.key(9), (16, 2))
    x0 = jax.random.normal(jax.random.key(10), (16, 2))
    # same path, same pairs: identical values (the time draw uses a different key split, so compare
    # with an explicit fixed time)
    ts = lambda k, n: jnp.linspace(0.05, 0.95, n)
    l_vp = vpcfm(_lin, key, x1, x0=x0, time_sampler=ts)[0]
    l_ref = cfm(_lin, key, x1, x0=x0, path=cosine_path(), time_sampler=ts)[0]
    np.testing.assert_allclose(l_vp, l_ref, rtol=1e-12)
    l_i = icfm(_lin, key, x1, x0=x0, time_sampler=ts)[0]
    np.testing.assert_allclose(l_i, cfm(_lin, key, x1, x0=x0, time_sampler=ts)[0], rtol=1e-12)
    # torchcfm VP target: pi/2 (cos(pi t/2) x1 - sin(pi t/2) x0)
    t = ts(None, 16)
    xt, dx = cosine_path().sample(x0, x1, t)
    ref = jnp.pi / 2 * (jnp.cos(jnp.pi * t / 2)[:, None] * x1 - jnp.sin(jnp.pi * t / 2)[:, None] * x0)
    np.testing.assert_allclose(dx, ref, rtol=1e-12)


def test_target_path_matches_lipman_and_torchcfm():
    smin = 0.05
    p = target_path(smin)
    x0 = jax.random.normal(jax.random.key(11), (8, 3))
    x1 = jax.random.normal(jax.random.key(12), (8, 3))
    t = jnp.linspace(0.0, 1.0, 8)
    xt, dx = p.sample(x0, x1, t)
    np.testing.assert_allclose(dx, x1 - (1 - smin) * x0, rtol=1e-12)
    torch_u = (x1 - (1 - smin) * xt) / (1 - (1 - smin) * t)[:, None]
    np.testing.assert_allclose(dx, torch_u, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(xt[-1], x1[-1] + smin * x0[-1], rtol=1e-12)
    loss, _ = target_cfm(_lin, jax.random.key(0), x1, x0=x0, sigma_min=smin)
    assert np.isfinite(float(loss))
    with pytest.raises(ValueError, match="sigma_min"):
        target_path(1.0)


def test_pooled_pairing_batch_larger_than_training_batch():
    x1 = jax.random.normal(jax.random.key(13), (64, 2)) + 2.0
    x0 = jax.random.normal(jax.random.key(14), (64, 2))
    loss, _ = jax.jit(lambda k: icfm(_lin, k, x1, x0=x0, coupling=couplings.pooled(couplings.ot_exact(), 16)))(jax.random.key(0))
    assert np.isfinite(float(loss))
    loss2, aux = sbcfm(_lin, jax.random.key(0), x1, x0=x0, sigma=0.5,
                       coupling=couplings.pooled(couplings.ot_entropic(0.5), 16), score_fn=lambda x, t: -x)
    assert np.isfinite(float(loss2)) and set(aux) == {"flow_mse", "score_mse"}
    with pytest.raises(ValueError, match="sigma"):
        sbcfm(_lin, jax.random.key(0), x1, sigma=0.0)
