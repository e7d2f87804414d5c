"""k-Diff (2601.21419): conversions, limits k = 1, 1/2, 0, loss identities, k*, gradient wiring, oracle."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowjax.losses import cfm
from flowjax.losses.kdiff import (
    kdiff,
    kdiff_convert,
    kdiff_delta,
    kdiff_from_velocity,
    kdiff_target,
    kdiff_velocity,
    optimal_k,
)
from flowjax.testing import GaussianMixtureFlow


def _draws(n=64, d=5, dtype=jnp.float64):
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    x1 = jax.random.normal(k1, (n, d), dtype) * 2 + 1
    x0 = jax.random.normal(k2, (n, d), dtype)
    t = jax.random.uniform(k3, (n,), dtype, 0.01, 0.99)
    return x0, x1, t


@pytest.mark.parametrize("k", [0.01, 0.3, 0.5, 0.9, 0.99])
def test_conversion_round_trip_float64(k):
    x0, x1, t = _draws()
    xt = t[:, None] * x1 + (1 - t[:, None]) * x0
    u = kdiff_target(x0, x1, k)
    a1, a0, v = kdiff_convert(u, xt, t, k)
    np.testing.assert_allclose(a1, x1, atol=1e-6)
    np.testing.assert_allclose(a0, x0, atol=1e-6)
    np.testing.assert_allclose(v, x1 - x0, atol=1e-6)


def test_conversion_float32_tolerance():
    x0, x1, t = _draws(dtype=jnp.float32)
    xt = t[:, None] * x1 + (1 - t[:, None]) * x0
    for k in (0.01, 0.99):
        _, _, v = kdiff_convert(kdiff_target(x0, x1, k), xt, t, k)
        np.testing.assert_allclose(v, x1 - x0, atol=1e-4)


def test_special_cases_recover_data_velocity_noise_prediction():
    x0, x1, t = _draws()
    xt = t[:, None] * x1 + (1 - t[:, None]) * x0
    # k = 1: target is the data; v = (u - x_t)/(1 - t) (JiT's x -> v)
    np.testing.assert_allclose(kdiff_target(x0, x1, 1.0), x1)
    u = jax.random.normal(jax.random.key(1), x1.shape, x1.dtype)
    np.testing.assert_allclose(kdiff_velocity(u, xt, t, 1.0, delta_min=0.0), (u - xt) / (1 - t[:, None]), rtol=1e-12)
    # k = 1/2: target v/2 and v = 2u
    np.testing.assert_allclose(kdiff_target(x0, x1, 0.5), 0.5 * (x1 - x0))
    np.testing.assert_allclose(kdiff_velocity(u, xt, t, 0.5, delta_min=0.0), 2 * u, rtol=1e-12)
    # k = 0: target is -noise; feeding u = -x0 returns v = x1 - x0
    np.testing.assert_allclose(kdiff_target(x0, x1, 0.0), -x0)
    np.testing.assert_allclose(kdiff_velocity(-x0, xt, t, 0.0, delta_min=0.0), x1 - x0, rtol=1e-9, atol=1e-9)


def test_loss_space_equivalence_and_positivity():
    x0, x1, t = _draws()
    xt = t[:, None] * x1 + (1 - t[:, None]) * x0
    u = jax.random.normal(jax.random.key(2), x1.shape, x1.dtype)
    for k in (0.2, 0.5, 0.8):
        lhs = jnp.sum((kdiff_velocity(u, xt, t, k, delta_min=0.0) - (x1 - x0)) ** 2, -1)
        rhs = jnp.sum((u - kdiff_target(x0, x1, k)) ** 2, -1) / kdiff_delta(k, t) ** 2
        np.testing.assert_allclose(lhs, rhs, rtol=1e-10)
    kg, tg = jnp.meshgrid(jnp.linspace(0, 1, 41), jnp.linspace(0, 1, 41))
    assert bool(jnp.all(kdiff_delta(kg, tg) >= jnp.minimum(kg, 1 - kg) - 1e-12))


def test_optimal_k_matches_energy_minimiser():
    """For d-dim unit-variance data on a subspace of R^D and N(0, I_D) noise, argmin_k E||u_k||^2 = D/(D+d)."""
    d = 2
    for D in (2, 8, 32):
        key = jax.random.key(D)
        k1, k2, k3 = jax.random.split(key, 3)
        P = jnp.linalg.qr(jax.random.normal(k1, (D, d)))[0]
        y = jax.random.normal(k2, (20000, d))
        x1 = y @ P.T
        x0 = jax.random.normal(k3, (20000, D))
        ks = jnp.linspace(0.0, 1.0, 2001)
        e1, e0, e10 = jnp.mean(jnp.sum(x1**2, -1)), jnp.mean(jnp.sum(x0**2, -1)), jnp.mean(jnp.sum(x1 * x0, -1))
        energy = ks**2 * e1 + (1 - ks) ** 2 * e0 - 2 * ks * (1 - ks) * e10  # = mean ||u_k||^2, expanded
        np.testing.assert_allclose(energy[700], jnp.mean(jnp.sum(kdiff_target(x0, x1, ks[700]) ** 2, -1)), rtol=1e-8)
        np.testing.assert_allclose(float(ks[jnp.argmin(energy)]), optimal_k(D, d), atol=0.01)


def test_fixed_k_equals_jit_and_v_prediction_losses():
    x1 = jax.random.normal(jax.random.key(3), (32, 4))
    key = jax.random.key(4)
    net = lambda x, t: jnp.tanh(x) * 0.7 + t[:, None]
    # k = 1/2: v_hat = 2u, so the loss equals v-prediction + v-loss with v_fn = 2 net (same draws)
    l_half, _ = kdiff(net, key, x1, k=0.5)
    k0, kt = jax.random.split(key)
    x0 = jax.random.normal(k0, x1.shape)
    from flowjax.timesteps import logit_normal

    tt = logit_normal(-0.8, 0.8)(kt, 32)
    ref = cfm(lambda x, s: 2 * net(x, s), key, x1, x0=x0, time_sampler=lambda _k, n: tt)[0]
    np.testing.assert_allclose(l_half, ref, rtol=1e-12)
    # k = 1: JiT's x-prediction + v-loss: v = (x_hat - x_t)/max(1 - t, 0.05)
    l_one, _ = kdiff(net, key, x1, k=1.0)
    xt = tt[:, None] * x1 + (1 - tt[:, None]) * x0
    v_jit = (net(xt, tt) - xt) / jnp.maximum(1 - tt, 0.05)[:, None]
    np.testing.assert_allclose(l_one, jnp.mean((v_jit - (x1 - x0)) ** 2), rtol=1e-12)


def test_learned_k_gradient_wiring():
    x1 = jax.random.normal(jax.random.key(5), (32, 4))
    net = lambda x, t: 0.5 * x
    for space in ("velocity", "target"):
        g = jax.grad(lambda w: kdiff(net, jax.random.key(6), x1, logit_k=w, loss_space=space)[0])(0.3)
        assert np.isfinite(float(g)) and abs(float(g)) > 1e-6
    _, aux = kdiff(net, jax.random.key(6), x1, logit_k=0.0)
    np.testing.assert_allclose(aux["k"], 0.5)
    with pytest.raises(ValueError, match="exactly one"):
        kdiff(net, jax.random.key(6), x1)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        kdiff(net, jax.random.key(6), x1, k=1.5)
    with pytest.raises(ValueError, match="loss_space"):
        kdiff(net, jax.random.key(6), x1, k=0.5, loss_space="x")


def test_analytic_flow_optimal_u_converts_back_to_true_velocity():
    flow = GaussianMixtureFlow(jnp.array([[2.0, 0.0], [-1.0, 1.5]]), jnp.array([0.3, 0.5]), jnp.array([0.4, 0.6]))
    x = flow.sample_marginal(jax.random.key(7), 256, 0.4)
    t = jnp.full((256,), 0.4)
    v_star = flow.velocity(x, t)
    for k in (0.1, 0.5, 0.97):
        u_star = kdiff_from_velocity(v_star, x, t, k)
        np.testing.assert_allclose(kdiff_velocity(u_star, x, t, k, delta_min=0.0), v_star, rtol=1e-10, atol=1e-12)
        # and u* is the posterior mean of u_k: k E[x1|x] - (1-k) E[x0|x]
        ex1, ex0 = flow.posterior_means(x, t)
        np.testing.assert_allclose(u_star, k * ex1 - (1 - k) * ex0, rtol=1e-9, atol=1e-10)
