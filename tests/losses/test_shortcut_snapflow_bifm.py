"""Shortcut models, SnapFlow and BiFM on exact flows; samplers, stop-gradients, conventions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _fewstep_analytic import AnalyticGaussian

from flowjax.losses import bifm, bifm_time_pairs, shortcut, snapflow
from flowjax.losses.bifm import to_bifm_sign
from flowjax.losses.shortcut import shortcut_times
from flowjax.losses.snapflow import from_vla_time, snapflow_model
from flowjax.samplers import flowmap
from flowjax.timesteps import beta
from test_meanflow import tiny_model

GAUSS = AnalyticGaussian([1.0, -0.5], [0.5, 0.8])
POINT = AnalyticGaussian([1.0, -0.5], [0.0, 0.0])  # point mass: straight flow, conditional == marginal v


def _bad(u):
    return lambda x, s, t: u(x, s, t) + 0.1 * jnp.sin(2 * x) * (1.0 + t - s)[:, None]


# ------------------------------------------------------------------------------------- shortcut
def test_shortcut_midpoint_identity_and_zero_loss_at_exact_u():
    x = jax.random.normal(jax.random.key(0), (16, 2), jnp.float64)
    t, d = shortcut_times(jax.random.key(1), 16, dtype=jnp.float64)
    mid = GAUSS.flow_map(x, t, t + d)
    np.testing.assert_allclose(GAUSS.u(x, t, t + 2 * d), 0.5 * (GAUSS.u(x, t, t + d) + GAUSS.u(mid, t + d, t + 2 * d)),
                               atol=1e-12)
    x1 = GAUSS.sample_data(jax.random.key(2), 256)
    for grid in ("continuous", "dyadic"):
        loss, _ = shortcut(GAUSS.u, jax.random.key(3), x1, bootstrap_fraction=1.0, grid=grid)
        assert float(loss) < 1e-20
        loss_bad, _ = shortcut(_bad(GAUSS.u), jax.random.key(3), x1, bootstrap_fraction=1.0, grid=grid)
        assert float(loss_bad) > 1e-5
    # FM rows (d0 = 0) on a point mass: the conditional target is the exact velocity, loss 0
    xp = jnp.broadcast_to(POINT.mu, (64, 2))
    assert float(shortcut(POINT.u, jax.random.key(4), xp, bootstrap_fraction=0.0)[0]) < 1e-20


def test_shortcut_time_samplers():
    t, d = shortcut_times(jax.random.key(5), 7 * 300, grid="dyadic", dtype=jnp.float64)
    assert bool(jnp.all(t + 2 * d <= 1.0 + 1e-12))
    np.testing.assert_allclose(jnp.mod(t / (2 * d), 1.0), 0.0, atol=1e-9)  # t on the grid of its step
    counts = np.bincount(np.asarray(jnp.round(-jnp.log2(2 * d))).astype(int))
    assert counts.max() - counts.min() <= 1 and len(counts) == 7
    t, d = shortcut_times(jax.random.key(6), 7 * 300, grid="continuous", time_sampler=beta(2.0, 1.2), dtype=jnp.float64)
    assert bool(jnp.all(t + 2 * d <= 1.0 + 1e-12)) and bool(jnp.any(2 * d == 1.0))
    draws = beta(2.0, 1.2)(jax.random.key(7), 100_000)
    np.testing.assert_allclose(float(jnp.mean(draws)), 0.625, atol=0.01)


def test_shortcut_stop_gradient():
    params, apply = tiny_model(jax.random.key(8), 2)
    x1 = jax.random.normal(jax.random.key(9), (14, 2), jnp.float64)
    x0 = jax.random.normal(jax.random.key(10), (14, 2), jnp.float64)
    key = jax.random.key(11)

    def loss(ps, pt):
        return shortcut(lambda x, a, b: apply(ps, x, a, b), key, x1, x0=x0, bootstrap_fraction=1.0,
                        teacher_fn=lambda x, a, b: apply(pt, x, a, b))[0]

    gs, gt = jax.grad(loss, argnums=(0, 1))(params, params)
    assert all(float(jnp.max(jnp.abs(v))) == 0.0 for v in jax.tree.leaves(gt))
    t, d = shortcut_times(jax.random.split(key, 3)[2], 14, dtype=jnp.float64)
    xt = (1 - t)[:, None] * x0 + t[:, None] * x1
    w1 = apply(params, xt, t, t + d)
    w2 = apply(params, xt + d[:, None] * w1, t + d, t + 2 * d)
    const = 0.5 * (w1 + w2)
    g_ref = jax.grad(lambda p: jnp.mean((apply(p, xt, t, t + 2 * d) - const) ** 2))(params)
    for k in g_ref:
        np.testing.assert_allclose(gs[k], g_ref[k], rtol=1e-10, atol=1e-14)


# ------------------------------------------------------------------------------------- snapflow
def test_snapflow_target_is_two_step_euler_for_a_linear_field():
    A = jnp.array([[-0.5, 0.2], [0.1, -0.3]], jnp.float64)
    b = jnp.array([[0.3, -0.1]], jnp.float64)
    x0 = jax.random.normal(jax.random.key(12), (8, 2), jnp.float64)
    x1 = jnp.zeros((8, 2), jnp.float64)
    # model: u(x, s, t) = v(x, s) = A x + b except the one-step call u(x0, 0, 1) := C (a constant)
    C = jnp.array([[0.7, 0.4]])
    u_fn = lambda x, s, t: jnp.where((t - s == 1.0)[:, None], C, x @ A.T + b)  # noqa: E731
    _, aux = snapflow(u_fn, jax.random.key(13), x1, x0=x0)
    w0 = x0 @ A.T + b
    xm = x0 + 0.5 * w0
    x2 = xm + 0.5 * (xm @ A.T + b)  # two Euler steps by hand
    np.testing.assert_allclose(aux["mse_sc"], jnp.mean((C - (x2 - x0)) ** 2), rtol=1e-12)


def test_snapflow_straight_flow_and_composition():
    xp = jnp.broadcast_to(POINT.mu, (64, 2))
    loss, aux = snapflow(POINT.u, jax.random.key(14), xp)
    assert float(aux["mse_sc"]) < 1e-24 and float(aux["mse_fm"]) < 1e-24
    params, apply = tiny_model(jax.random.key(15), 2)
    u_fn = lambda x, a, b: apply(params, x, a, b)  # noqa: E731
    x1 = jax.random.normal(jax.random.key(16), (16, 2), jnp.float64)
    loss, aux = snapflow(u_fn, jax.random.key(17), x1, alpha=0.3, lam=0.2)
    np.testing.assert_allclose(loss, 0.3 * aux["mse_fm"] + 0.7 * 0.2 * aux["mse_sc"], rtol=1e-12)
    # conditional-target ablation differs
    _, aux_c = snapflow(u_fn, jax.random.key(17), x1, conditional_target=True)
    assert not np.allclose(aux_c["mse_sc"], aux["mse_sc"])


def test_snapflow_stop_gradient():
    params, apply = tiny_model(jax.random.key(18), 2)
    x1 = jax.random.normal(jax.random.key(19), (8, 2), jnp.float64)
    x0 = jax.random.normal(jax.random.key(20), (8, 2), jnp.float64)

    def loss(p):
        return snapflow(lambda x, a, b: apply(p, x, a, b), jax.random.key(21), x1, x0=x0, alpha=0.0, lam=1.0)[0]

    z, h, o = jnp.zeros(8), jnp.full(8, 0.5), jnp.ones(8)
    w0 = apply(params, x0, z, z)
    const = 0.5 * (w0 + apply(params, x0 + 0.5 * w0, h, h))
    g, g_ref = jax.grad(loss)(params), jax.grad(lambda p: jnp.mean((apply(p, x0, z, o) - const) ** 2))(params)
    for k in g:
        np.testing.assert_allclose(g[k], g_ref[k], rtol=1e-10, atol=1e-14)


def test_snapflow_zero_init_target_time_and_vla_convention():
    from flowjax.nets import MLP, init_params

    net = MLP(hidden=16, depth=2, time_dim=8, two_times=True, zero_init_second_time=True)
    params = init_params(net, jax.random.key(22), jnp.zeros((3, 2)))
    u = snapflow_model(net, params)
    x = jax.random.normal(jax.random.key(23), (3, 2))
    s = jnp.array([0.1, 0.4, 0.7])
    np.testing.assert_allclose(u(x, s, jnp.ones(3)), u(x, s, s), atol=1e-6)  # independent of the target time
    assert not np.allclose(u(x, s, s), u(x, s + 0.2, s + 0.2))
    F = to_vla = lambda x, s_tgt, tau: -GAUSS.u(x, 1 - tau, 1 - s_tgt)  # noqa: E731,F841
    xx = jax.random.normal(jax.random.key(24), (4, 2), jnp.float64)
    np.testing.assert_allclose(from_vla_time(F)(xx, jnp.zeros(4), jnp.ones(4)), GAUSS.u(xx, jnp.zeros(4), jnp.ones(4)))
    # one-step action from either convention: a = eps - F(eps, 0, 1) = x0 + u(x0, 0, 1)
    np.testing.assert_allclose(xx - F(xx, jnp.zeros(4), jnp.ones(4)), flowmap(GAUSS.u, xx, (0.0, 1.0)), atol=1e-12)


# ------------------------------------------------------------------------------------- BiFM
def test_bidirectional_identity_and_sign_converter():
    x = jax.random.normal(jax.random.key(25), (8, 2), jnp.float64)
    t = jnp.linspace(0.05, 0.9, 8)
    tp = jnp.linspace(0.95, 0.1, 8)  # both orders
    X = GAUSS.flow_map(x, t, tp)
    np.testing.assert_allclose(GAUSS.u(x, t, tp), GAUSS.u(X, tp, t), atol=1e-12)
    ub = to_bifm_sign(GAUSS.u)
    np.testing.assert_allclose(ub(x, t, tp), -ub(X, tp, t), atol=1e-12)


def test_bifm_loss_vanishes_on_exact_straight_flow_and_rises_when_perturbed():
    xp = jnp.broadcast_to(POINT.mu, (256, 2))
    loss, aux = bifm(POINT.u, jax.random.key(26), xp, norm_p=0.0)
    assert float(loss) < 1e-18
    loss_bad, aux_bad = bifm(_bad(POINT.u), jax.random.key(26), xp, norm_p=0.0)
    assert float(aux_bad["mse_mf"]) > 1e-5 and float(aux_bad["mse_bi"]) > 1e-5


def test_bifm_mf_target_is_exact_for_both_orders_and_diagonal():
    from flowjax.losses.meanflow import meanflow_target

    x = jax.random.normal(jax.random.key(27), (8, 2), jnp.float64)
    t = jnp.linspace(0.1, 0.8, 8)
    for tp in (jnp.clip(t + 0.15, 0, 1), jnp.clip(t - 0.1, 0, 1)):
        u, tgt = meanflow_target(GAUSS.u, x, t, tp, GAUSS.velocity(x, t), clip=False)
        np.testing.assert_allclose(tgt, u, atol=1e-9)
    # t' = t: L_Bi == 0 identically (x_hat = x_t) for any model
    params, apply = tiny_model(jax.random.key(28), 2)
    diag = lambda k, n: (jnp.linspace(0, 1, n), jnp.linspace(0, 1, n))  # noqa: E731
    _, aux = bifm(lambda x, a, b: apply(params, x, a, b), jax.random.key(29), x, time_sampler=diag)
    assert float(aux["mse_bi"]) == 0.0


def test_bifm_inversion_then_generation_recovers_data():
    x1 = GAUSS.sample_data(jax.random.key(30), 8)
    x0_hat = flowmap(GAUSS.u, x1, (1.0, 0.0))
    np.testing.assert_allclose(flowmap(GAUSS.u, x0_hat, (0.0, 1.0)), x1, atol=1e-12)


def test_bifm_stop_gradient_of_the_meanflow_term_and_sampler():
    params, apply = tiny_model(jax.random.key(31), 2)
    x1 = jax.random.normal(jax.random.key(32), (10, 2), jnp.float64)
    x0 = jax.random.normal(jax.random.key(33), (10, 2), jnp.float64)
    t = jnp.linspace(0.0, 0.9, 10)
    tp = 1.0 - t
    pairs = lambda k, n: (t, tp)  # noqa: E731
    from flowjax.losses.meanflow import meanflow_target

    def loss(p):
        return bifm(lambda x, a, b: apply(p, x, a, b), jax.random.key(0), x1, x0=x0, time_sampler=pairs,
                    consistency_weight=0.0, norm_p=0.0)[0]

    xt = (1 - t)[:, None] * x0 + t[:, None] * x1
    _, const = meanflow_target(lambda x, a, b: apply(params, x, a, b), xt, t, tp, x1 - x0, clip=False)
    g_ref = jax.grad(lambda p: jnp.mean(jnp.sum((apply(p, xt, t, tp) - const) ** 2, axis=1)))(params)
    g = jax.grad(loss)(params)
    for k in g:
        np.testing.assert_allclose(g[k], g_ref[k], rtol=1e-10, atol=1e-14)
    a, b = bifm_time_pairs(swap_prob=0.5, diag_fraction=0.5)(jax.random.key(34), 10_000)
    np.testing.assert_allclose(float(jnp.mean(a == b)), 0.5, atol=1e-3)
    off = a != b
    np.testing.assert_allclose(float(jnp.mean((a > b)[off])), 0.5, atol=0.03)


def test_validation():
    u = lambda x, s, t: x  # noqa: E731
    with pytest.raises(ValueError, match="grid"):
        shortcut(u, jax.random.key(0), jnp.ones((4, 2)), grid="bad")
    with pytest.raises(ValueError, match="alpha"):
        snapflow(u, jax.random.key(0), jnp.ones((4, 2)), alpha=2.0)
    with pytest.raises(ValueError, match="swap_prob"):
        bifm_time_pairs(swap_prob=-0.1)
