"""SplitMeanFlow: interval-splitting target on exact flows, boundary = FM, stop-gradient placement."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _fewstep_analytic import AnalyticGaussian

from flowjax.losses import cfm, splitmeanflow
from flowjax.losses._fewstep import split_fractions
from flowjax.losses.splitmeanflow import splitmeanflow_target
from flowjax.testing import GaussianMixtureFlow
from test_meanflow import fixed_pairs, tiny_model

GAUSS = AnalyticGaussian([1.0, -0.5], [0.5, 0.8])


def test_split_target_with_exact_u_equals_u_on_a_mixture():
    gm = GaussianMixtureFlow(jnp.array([[-1.0, 0.5], [1.5, -0.5]]), jnp.array([0.3, 0.4]), jnp.array([0.4, 0.6]))
    av = jax.jit(gm.average_velocity)  # one compile of the diffrax solve, reused by every call
    n = 6
    x = jax.random.normal(jax.random.key(0), (n, 2), jnp.float64)
    s = jnp.linspace(0.0, 0.4, n)
    t = s + 0.5
    for k, num in ((1, 2), (2, 3)):
        fr = split_fractions(jax.random.key(k), n, num, jnp.float64)
        np.testing.assert_allclose(jnp.sum(fr, axis=0), 1.0, atol=1e-12)
        tgt = splitmeanflow_target(av, x, s, t, fr)
        np.testing.assert_allclose(tgt, av(x, s, t), atol=1e-7)


def test_split_loss_vanishes_at_exact_u_and_perturbation_raises_it():
    x1 = GAUSS.sample_data(jax.random.key(1), 512)
    for k in (2, 4):
        loss, aux = splitmeanflow(GAUSS.u, jax.random.key(2), x1, fm_fraction=0.0, num_splits=k)
        assert float(loss) < 1e-20, float(loss)
        bad = lambda x, s, t: GAUSS.u(x, s, t) + 0.1 * jnp.sin(3 * x) * (t - s)[:, None]  # noqa: E731
        loss_bad, _ = splitmeanflow(bad, jax.random.key(2), x1, fm_fraction=0.0, num_splits=k)
        assert float(loss_bad) > 1e-5


def test_lambda_zero_or_one_gives_the_model_itself():
    params, apply = tiny_model(jax.random.key(3), 2)
    u_fn = lambda x, s, t: apply(params, x, s, t)  # noqa: E731
    x = jax.random.normal(jax.random.key(4), (5, 2), jnp.float64)
    s, t = jnp.full((5,), 0.1), jnp.full((5,), 0.9)
    for lam in (0.0, 1.0):
        fr = jnp.stack([jnp.full((5,), lam), jnp.full((5,), 1 - lam)])
        np.testing.assert_allclose(splitmeanflow_target(u_fn, x, s, t, fr), u_fn(x, s, t), atol=1e-14)


def test_boundary_branch_is_flow_matching():
    params, apply = tiny_model(jax.random.key(5), 2)
    u_fn = lambda x, s, t: apply(params, x, s, t)  # noqa: E731
    n = 32
    x1 = jax.random.normal(jax.random.key(6), (n, 2), jnp.float64)
    x0 = jax.random.normal(jax.random.key(7), (n, 2), jnp.float64)
    t = jax.random.uniform(jax.random.key(8), (n,), jnp.float64)
    loss, _ = splitmeanflow(u_fn, jax.random.key(9), x1, x0=x0, fm_fraction=1.0, fm_sampler=lambda k, m: t)
    ref, _ = cfm(lambda x, tt: u_fn(x, tt, tt), jax.random.key(9), x1, x0=x0, time_sampler=lambda k, m: t)
    np.testing.assert_allclose(loss, ref, rtol=1e-12)
    # a teacher velocity replaces x1 - x0; the exact marginal teacher with the exact u gives 0
    loss_t, _ = splitmeanflow(GAUSS.u, jax.random.key(9), GAUSS.sample_data(jax.random.key(1), 64), fm_fraction=1.0,
                              teacher_fn=GAUSS.velocity)
    assert float(loss_t) < 1e-24


def test_stop_gradient_target():
    params, apply = tiny_model(jax.random.key(10), 2)
    n = 16
    x1 = jax.random.normal(jax.random.key(11), (n, 2), jnp.float64)
    x0 = jax.random.normal(jax.random.key(12), (n, 2), jnp.float64)
    s = jnp.linspace(0.0, 0.5, n)
    t = s + 0.4
    key = jax.random.key(13)

    def loss(p):
        return splitmeanflow(lambda x, a, b: apply(p, x, a, b), key, x1, x0=x0, fm_fraction=0.0,
                             time_sampler=fixed_pairs(s, t))[0]

    # the same lam draw as inside the loss (key split order: noise, times, lam)
    fr = split_fractions(jax.random.split(key, 3)[2], n, 2, jnp.float64)
    xs = (1 - s)[:, None] * x0 + s[:, None] * x1
    const = splitmeanflow_target(lambda x, a, b: apply(params, x, a, b), xs, s, t, fr)
    np.testing.assert_allclose(loss(params), jnp.mean((apply(params, xs, s, t) - const) ** 2), rtol=1e-12)
    g = jax.grad(loss)(params)
    g_ref = jax.grad(lambda p: jnp.mean((apply(p, xs, s, t) - const) ** 2))(params)
    for k in g:
        np.testing.assert_allclose(g[k], g_ref[k], rtol=1e-10, atol=1e-14)


def test_interpolant_negative_control_breaks_the_identity():
    x1 = GAUSS.sample_data(jax.random.key(14), 512)
    loss, _ = splitmeanflow(GAUSS.u, jax.random.key(15), x1, fm_fraction=0.0, inner_point="interpolant")
    assert float(loss) > 1e-3


def test_validation_and_jit():
    u = lambda x, s, t: x  # noqa: E731
    with pytest.raises(ValueError, match="inner_point"):
        splitmeanflow(u, jax.random.key(0), jnp.ones((4, 2)), inner_point="bad")
    with pytest.raises(ValueError, match="num_splits"):
        splitmeanflow(u, jax.random.key(0), jnp.ones((4, 2)), num_splits=1)
    loss, aux = jax.jit(lambda k, x: splitmeanflow(u, k, x))(jax.random.key(0), jnp.ones((8, 2)))
    assert jnp.isfinite(loss) and {"mse_boundary", "mse_split"} <= set(aux)
