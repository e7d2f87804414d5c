"""LeapAlign (spec leapalign.md §6)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowjax.align import leapalign


def _field(theta):
    w, b = theta
    return lambda x, t: jnp.tanh(x @ w + b[None] * t[:, None])


def _theta(key):
    k1, k2 = jax.random.split(key)
    return (0.5 * jax.random.normal(k1, (2, 2)), jax.random.normal(k2, (2,)))


def test_alpha_one_equals_full_backprop_on_two_step_trajectory():
    theta = _theta(jax.random.key(0))
    x0 = jax.random.normal(jax.random.key(1), (6, 2))
    times = np.array([0.0, 0.4, 1.0])
    c = jnp.array([0.7, -1.3])
    reward = lambda x: -jnp.sum((x - c[None]) ** 2)

    def full(th):
        return reward(leapalign.euler_rollout(_field(th), x0, times)[-1])

    def leap(th):
        xs = leapalign.euler_rollout(_field(jax.lax.stop_gradient(th)), x0, times)
        xc1, aux = leapalign.two_leap(_field(th), xs, times, jnp.zeros(6, int), jnp.ones(6, int), alpha=1.0)
        return reward(xc1), aux

    g_full = jax.grad(full)(theta)
    g_leap, aux = jax.grad(leap, has_aux=True)(theta)
    for a, b in zip(g_full, g_leap):
        np.testing.assert_allclose(a, b, atol=1e-12)
    np.testing.assert_allclose(aux["d_j"], 0.0, atol=1e-14)  # leaps coincide with the Euler steps
    # alpha = 0 drops the nested term: the gradients differ
    g0 = jax.grad(lambda th: reward(leapalign.two_leap(_field(th), leapalign.euler_rollout(_field(theta), x0, times), times,
                                                       jnp.zeros(6, int), jnp.ones(6, int), alpha=0.0)[0]))(theta)
    assert float(jnp.max(jnp.abs(g0[0] - g_full[0]))) > 1e-6


def test_connector_values_and_three_term_gradient():
    theta = _theta(jax.random.key(2))
    x0 = jax.random.normal(jax.random.key(3), (5, 2))
    times = np.linspace(0, 1, 9)
    xs = leapalign.euler_rollout(_field(theta), x0, times)
    k, j = jnp.array([0, 1, 2, 3, 5]), jnp.array([4, 6, 3, 7, 7])
    grid = jnp.asarray(times)
    ar = jnp.arange(5)
    delta = _theta(jax.random.key(4))
    for alpha in (0.0, 0.3, 1.0):
        xc1, _ = leapalign.two_leap(_field(theta), xs, times, k, j, alpha=alpha)
        np.testing.assert_array_equal(xc1, xs[-1])
        _, tangent = jax.jvp(lambda th: leapalign.two_leap(_field(th), xs, times, k, j, alpha=alpha)[0], (theta,), (delta,))
        tk, tj = grid[k][:, None], grid[j][:, None]
        xk, xj = xs[k, ar], xs[j, ar]
        dvk = jax.jvp(lambda th: _field(th)(xk, grid[k]), (theta,), (delta,))[1]
        dvj = jax.jvp(lambda th: _field(th)(xj, grid[j]), (theta,), (delta,))[1]
        nested = jax.jvp(lambda y: _field(theta)(y, grid[j]), (xj,), ((tj - tk) * dvk,))[1]
        expected = (tj - tk) * dvk + (1 - tj) * dvj + alpha * (1 - tj) * nested
        np.testing.assert_allclose(tangent, expected, atol=1e-12)


def test_exact_straight_flow_weights():
    target = jnp.array([1.5, -0.5])
    v = lambda x, t: (target[None] - x) / (1 - t)[:, None]  # data = one point: straight paths
    times = np.linspace(0, 1, 6)
    x0 = jax.random.normal(jax.random.key(5), (4, 2))
    xs = leapalign.euler_rollout(v, x0, times)
    _, aux = leapalign.two_leap(v, xs, times, jnp.array([0, 1, 0, 2]), jnp.array([2, 4, 1, 3]))
    np.testing.assert_allclose(aux["d_j"], 0.0, atol=1e-12)
    np.testing.assert_allclose(aux["d_1"], 0.0, atol=1e-12)
    np.testing.assert_allclose(leapalign.similarity_weights(aux["d_j"], aux["d_1"], tau=0.1), 5.0)


def test_leap_index_sampler():
    k, j = leapalign.sample_leap_indices(jax.random.key(6), 25, 20000)
    k, j = np.asarray(k), np.asarray(j)
    assert np.all(k < j) and k.min() >= 0 and j.max() <= 24
    counts = np.bincount(k * 25 + j, minlength=625)
    nz = counts[counts > 0]
    assert nz.size == 300  # all 25*24/2 pairs
    assert nz.std() / nz.mean() < 0.2


def test_leapalign_loss_runs_and_last_step_gradient():
    theta = _theta(jax.random.key(7))
    x0 = jax.random.normal(jax.random.key(8), (16, 2))
    times = np.linspace(0, 1, 11)
    reward = lambda x: -jnp.sum(x**2, -1)
    f = jax.jit(jax.value_and_grad(lambda th, key: leapalign.leapalign_loss(_field(th), key, x0, reward_fn=reward, times=times, ceiling=0.0)[0]))
    val, g = f(theta, jax.random.key(9))
    assert np.isfinite(float(val)) and all(np.all(np.isfinite(np.asarray(a))) for a in g)
    last = jax.grad(lambda th: leapalign.leapalign_loss(_field(th), None, x0, reward_fn=reward, times=times, ceiling=0.0,
                                                        leap="last", weighting=False)[0])(theta)
    assert all(np.all(np.isfinite(np.asarray(a))) for a in last)


def test_loss_two_leap_alpha_one_equals_full_backprop_loss_on_two_steps():
    # on a 2-step grid the only pair is (k, j) = (0, 1), so LeapAlign with alpha = 1 and no weights is full backprop
    theta = _theta(jax.random.key(10))
    x0 = jax.random.normal(jax.random.key(11), (8, 2))
    times = np.array([0.0, 0.3, 1.0])
    reward = lambda x: -jnp.sum((x - jnp.array([0.5, 1.0])[None]) ** 2, -1)
    kw = dict(reward_fn=reward, times=times, ceiling=0.0, weighting=False)
    g_two = jax.grad(lambda th: leapalign.leapalign_loss(_field(th), jax.random.key(12), x0, alpha=1.0, leap="two", **kw)[0])(theta)
    g_full = jax.grad(lambda th: leapalign.leapalign_loss(_field(th), None, x0, leap="full", **kw)[0])(theta)
    g_ref = jax.grad(lambda th: jnp.mean(-reward(leapalign.euler_rollout(_field(th), x0, times)[-1])))(theta)
    for a, b, c in zip(g_two, g_full, g_ref):
        np.testing.assert_allclose(a, c, atol=1e-12)
        np.testing.assert_allclose(b, c, atol=1e-12)


def test_velocity_deviation_is_unbiased_on_a_nonuniform_grid():
    times = np.array([0.0, 0.1, 0.5, 1.0])
    v = lambda x, t: jnp.zeros_like(x)
    ref = lambda x, t: jnp.stack([t, jnp.zeros_like(t)], -1)  # |dv|^2 = t^2
    xs = jnp.zeros((4, 200_000, 2))
    d = leapalign.velocity_deviation(v, ref, jax.random.key(13), xs, times)
    exact = 0.1 * 0.0 + 0.4 * 0.1**2 + 0.5 * 0.5**2  # sum_i dt_i t_i^2
    assert set(np.unique(np.round(np.asarray(d), 12))) <= {0.0, 0.01, 0.25}
    np.testing.assert_allclose(float(jnp.mean(d)), exact, atol=2e-3)


def test_velocity_deviation_zero_at_reference_and_loss_validation():
    theta = _theta(jax.random.key(14))
    x0 = jax.random.normal(jax.random.key(15), (6, 2))
    times = np.linspace(0, 1, 6)
    reward = lambda x: -jnp.sum(x**2, -1)
    frozen = _field(theta)
    f = lambda th: leapalign.leapalign_loss(_field(th), jax.random.key(16), x0, reward_fn=reward, times=times, ceiling=0.0,
                                            weighting=False, ref_fn=frozen, kl_weight=1.0)
    g_kl = jax.grad(lambda th: f(th)[0])(theta)
    g_plain = jax.grad(lambda th: leapalign.leapalign_loss(_field(th), jax.random.key(16), x0, reward_fn=reward, times=times,
                                                           ceiling=0.0, weighting=False)[0])(theta)
    assert float(f(theta)[1]["deviation"]) == 0.0
    for a, b in zip(g_kl, g_plain):  # the regulariser's gradient vanishes at the reference; the reward path is unchanged
        np.testing.assert_allclose(a, b, atol=1e-12)
    with pytest.raises(ValueError, match="ref_fn"):
        leapalign.leapalign_loss(frozen, jax.random.key(0), x0, reward_fn=reward, times=times, kl_weight=1.0)
    with pytest.raises(ValueError, match="PRNG key"):
        leapalign.leapalign_loss(frozen, None, x0, reward_fn=reward, times=times)
