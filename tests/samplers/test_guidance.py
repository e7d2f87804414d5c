"""CFG and manifold-projection CFG (spec cfg-manifold.md §6) against exact answers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowjax import samplers
from flowjax.samplers import guidance
from flowjax.testing import GaussianMixtureFlow


def _ring_flows(c=0):
    ang = 2 * np.pi * np.arange(6) / 6
    means = 2.0 * np.stack([np.cos(ang), np.sin(ang)], -1)
    full = GaussianMixtureFlow(means, np.full(6, 0.15), np.ones(6))
    cond = GaussianMixtureFlow(means[2 * c : 2 * c + 2], np.full(2, 0.15), np.ones(2))
    return full, cond


def test_scale_one_equals_conditional_euler():
    full, cond = _ring_flows()
    x0 = jax.random.normal(jax.random.key(0), (64, 2))
    x_cfg = guidance.cfg_sample(cond.velocity, full.velocity, x0, scale=1.0, steps=10)
    x_ode = samplers.ode(cond.velocity, x0, solver="euler", steps=10)
    np.testing.assert_allclose(x_cfg, x_ode, atol=1e-10)


def test_no_gate_equals_plain_cfg():
    full, cond = _ring_flows()
    x0 = jax.random.normal(jax.random.key(1), (32, 2))
    w = 3.0
    x_mp = guidance.cfg_sample(cond.velocity, full.velocity, x0, scale=w, steps=8, projection="anderson", gate_t=0.0)
    x_cfg = guidance.cfg_sample(cond.velocity, full.velocity, x0, scale=w, steps=8)
    v_w = lambda x, t: full.velocity(x, t) + w * (cond.velocity(x, t) - full.velocity(x, t))
    x_ref = samplers.ode(v_w, x0, solver="euler", steps=8)
    np.testing.assert_allclose(x_mp, x_cfg, atol=1e-12)
    np.testing.assert_allclose(x_cfg, x_ref, atol=1e-10)


def test_interval_scale_gates_guidance():
    w = guidance.interval_scale(4.0, t_lo=0.2, t_hi=0.7)
    np.testing.assert_allclose(w(jnp.array([0.1, 0.2, 0.5, 0.7, 0.9])), [1.0, 4.0, 4.0, 4.0, 1.0])
    full, cond = _ring_flows()
    x0 = jax.random.normal(jax.random.key(2), (16, 2))
    # guidance interval empty of grid points -> conditional sampler
    x_gated = guidance.cfg_sample(cond.velocity, full.velocity, x0, scale=guidance.interval_scale(5.0, t_lo=0.95, t_hi=0.96), steps=10)
    x_cond = guidance.cfg_sample(cond.velocity, full.velocity, x0, scale=1.0, steps=10)
    np.testing.assert_allclose(x_gated, x_cond, atol=1e-12)
    with pytest.raises(ValueError, match="t_lo"):
        guidance.interval_scale(2.0, t_lo=0.8, t_hi=0.2)


def test_operator_identity_for_equal_constant_fields():
    const = lambda x, t: jnp.ones_like(x) * jnp.array([[0.3, -1.2]])
    x = jax.random.normal(jax.random.key(3), (5, 2))
    t = jnp.full((5,), 0.3)
    for op in ("G", "H"):
        g = guidance.projection_operator(const, const, t, 0.05, operator=op)
        np.testing.assert_allclose(g(x), x, atol=1e-14)


def test_anderson_exact_on_affine_map():
    a, b = 0.5, 1.5  # fixed point 3; residuals f_0 = b - (1 - a) x_0 are O(1) for these starts
    g = lambda x: a * x + b
    x0 = jnp.array([[0.0], [6.0], [-2.0]])
    x2, alpha = guidance.anderson(g, x0, iterations=2, window=1, ridge=1e-4, return_weights=True)
    np.testing.assert_allclose(x2, b / (1 - a), rtol=1e-3)
    np.testing.assert_allclose(guidance.anderson(g, x0, iterations=2, window=1, ridge=1e-12), b / (1 - a), rtol=1e-8)
    np.testing.assert_allclose(alpha.sum(-1), 1.0, atol=1e-12)
    # Picard needs many more iterations for the same accuracy
    assert float(jnp.max(jnp.abs(guidance.picard(g, x0, iterations=2) - b / (1 - a)))) > 0.1


def test_anderson_converges_to_picard_fixed_point():
    full, cond = _ring_flows()
    x = jax.random.normal(jax.random.key(4), (8, 2))
    for t0 in (0.1, 0.3, 0.5):
        t = jnp.full((8,), t0)
        g = guidance.projection_operator(cond.velocity, full.velocity, t, 0.05)
        x_p = guidance.picard(g, x, iterations=4000)
        res_p = jnp.linalg.norm(g(x_p) - x_p, axis=-1)
        assert float(res_p.max()) < 1e-6
        # AA(2) (three residuals span the 2-D space: a secant method) with a negligible ridge; the
        # absolute ridge 1e-4 of the paper's code would dominate the Gram matrix at these residuals.
        x_a = guidance.anderson(g, x, iterations=100, window=2, ridge=1e-16)
        res_a = jnp.linalg.norm(g(x_a) - x_a, axis=-1)
        assert float(res_a.max()) < 1e-7
        np.testing.assert_allclose(x_a, x_p, atol=1e-5)


def test_gap_identity_posterior_class_gradient():
    full, cond = _ring_flows(c=1)
    x = jax.random.normal(jax.random.key(5), (6, 2)) * 1.3
    for t0 in (0.2, 0.5, 0.8):
        t = jnp.full((6,), t0)
        log_post = lambda y: jnp.sum(jnp.log(1 / 3) + cond.log_prob(y, t) - full.log_prob(y, t))
        grad = jax.grad(log_post)(x)
        gap = cond.velocity(x, t) - full.velocity(x, t)
        np.testing.assert_allclose(gap, (1 - t0) / t0 * grad, atol=1e-9)


def test_nfe_and_info_jit():
    full, cond = _ring_flows()
    x0 = jax.random.normal(jax.random.key(6), (16, 2))
    f = jax.jit(lambda x: guidance.cfg_sample(cond.velocity, full.velocity, x, scale=2.0, steps=10,
                                              projection="picard", t_eval_min=1e-3, return_info=True))
    x, info = f(x0)
    assert info["nfe"] == 2 * 10 + 2 * 2 * 6  # t_i in {0,..,0.5} gated (< 0.6)
    assert np.all(np.isfinite(np.asarray(x)))
    assert np.all(np.isnan(np.asarray(info["residual"])[6:])) and np.all(np.isfinite(np.asarray(info["residual"])[:6]))
    with pytest.raises(ValueError, match="projection"):
        guidance.cfg_sample(cond.velocity, full.velocity, x0, projection="newton")
