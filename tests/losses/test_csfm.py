"""Tests for the CSFM loss (2602.05951) and the class-conditional source net."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowjax import losses
from flowjax.losses.csfm import csfm, csfm_time_sampler, csfm_time_shift, directional_alignment, variance_kl
from flowjax.nets import ClassConditionalSource


def _linear_field(a, b):
    return lambda x, t: x @ a.T + t[:, None] * b[None]


def test_reduces_to_fm_with_zero_mean_unit_std():
    key = jax.random.key(0)
    a = jax.random.normal(jax.random.key(1), (3, 3), jnp.float64)
    b = jnp.array([0.5, -1.0, 2.0])
    v = _linear_field(a, b)
    x1 = jax.random.normal(jax.random.key(2), (32, 3), jnp.float64) + 2.0
    l_csfm, aux = csfm(v, key, x1, mu=jnp.zeros_like(x1), lambda_align=0.0)
    l_fm, _ = losses.cfm(v, key, x1)
    assert float(l_csfm) == pytest.approx(float(l_fm), rel=1e-12)
    assert float(aux["kl"]) == 0.0 and float(aux["source_std"]) == 1.0


def test_gradient_through_x_t_and_target_matches_analytic():
    n, d = 16, 3
    a = jax.random.normal(jax.random.key(3), (d, d), jnp.float64)
    b = jnp.array([0.1, 0.2, 0.3])
    v = _linear_field(a, b)
    x1 = jax.random.normal(jax.random.key(4), (n, d), jnp.float64)
    mu = jax.random.normal(jax.random.key(5), (n, d), jnp.float64)
    key = jax.random.key(6)
    g = jax.grad(lambda m: csfm(v, key, x1, mu=m, lambda_align=0.0)[0])(mu)
    # reconstruct eps and t exactly as the loss draws them
    k0, _, kt = jax.random.split(key, 3)
    eps = jax.random.normal(k0, (n, d), jnp.float64)
    t = jax.random.uniform(kt, (n,), jnp.float64)
    x0 = mu + eps
    xt = t[:, None] * x1 + (1 - t[:, None]) * x0
    r = v(xt, t) - (x1 - x0)
    expect = (2.0 / (n * d)) * ((1 - t[:, None]) * (r @ a) + r)
    np.testing.assert_allclose(np.asarray(g), np.asarray(expect), rtol=1e-10, atol=1e-14)
    # the detached ablation has no FM gradient into the source
    g0 = jax.grad(lambda m: csfm(v, key, x1, mu=m, lambda_align=0.0, detach_target=True)[0])(mu)
    assert float(jnp.max(jnp.abs(g0))) == 0.0


def test_variance_kl_value_and_gradient():
    lv = jnp.array([[0.0, 0.5], [-1.0, 2.0]])
    assert float(variance_kl(jnp.zeros((4, 2)))) == 0.0
    g = jax.grad(variance_kl)(lv)
    np.testing.assert_allclose(np.asarray(g), np.asarray(0.5 * (jnp.exp(lv) - 1) / lv.size), rtol=1e-12)
    # with a learned logvar the KL enters the loss with weight lambda_kl
    x1 = jnp.ones((4, 2))
    v = lambda x, t: jnp.zeros_like(x)
    l5, aux = csfm(v, jax.random.key(0), x1, mu=jnp.zeros_like(x1), logvar=jnp.full((4, 2), 1.0), fixed_std=None,
                   lambda_align=0.0)
    l0, _ = csfm(v, jax.random.key(0), x1, mu=jnp.zeros_like(x1), logvar=jnp.full((4, 2), 1.0), fixed_std=None,
                 lambda_align=0.0, lambda_kl=0.0)
    kl = -0.5 * (2.0 - math.e)
    assert float(aux["kl"]) == pytest.approx(kl, rel=1e-12)
    assert float(l5 - l0) == pytest.approx(5.0 * kl, rel=1e-10)
    assert float(aux["source_std"]) == pytest.approx(math.exp(0.5), rel=1e-12)


def test_directional_alignment_is_two_minus_two_cos_over_channels():
    mu = jax.random.normal(jax.random.key(7), (2, 3, 4, 5), jnp.float64)  # (B, H, W, C)
    x1 = jax.random.normal(jax.random.key(8), (2, 3, 4, 5), jnp.float64)
    cos = jnp.sum(mu * x1, -1) / (jnp.linalg.norm(mu, axis=-1) * jnp.linalg.norm(x1, axis=-1))
    assert float(directional_alignment(mu, x1)) == pytest.approx(float(jnp.mean(2 - 2 * cos)), rel=1e-12)
    assert float(directional_alignment(mu, x1, reduction="mean")) == pytest.approx(float(jnp.mean(2 - 2 * cos)) / 5,
                                                                                   rel=1e-12)
    # the code's W-axis normalisation is a different quantity
    assert abs(float(directional_alignment(mu, x1, axis=2)) - float(jnp.mean(2 - 2 * cos))) > 1e-3
    assert float(directional_alignment(3.0 * x1, x1)) == pytest.approx(0.0, abs=1e-12)
    # finite gradient at mu = 0 (zero-initialised source tables)
    g = jax.grad(lambda m: directional_alignment(m, x1))(jnp.zeros_like(x1))
    assert bool(jnp.all(jnp.isfinite(g)))


def test_time_shift_properties():
    assert csfm_time_shift(768 * 16 * 16) == pytest.approx(math.sqrt(48), rel=1e-12)
    s = csfm_time_shift(768 * 16 * 16)
    tp = jnp.linspace(0.0, 1.0, 101)
    tau = s * tp / (1 + (s - 1) * tp)
    assert float(tau[0]) == 0.0 and float(tau[-1]) == pytest.approx(1.0, abs=1e-12)
    assert bool(jnp.all(jnp.diff(tau) > 0))
    t = csfm_time_sampler(768 * 16 * 16)(jax.random.key(9), 20000)
    assert float(jnp.mean(t < 0.5)) > 0.5
    # exact: P(t < 1/2) = P(tau > 1/2) = P(t' > 1/(s+1)) = s/(s+1)
    assert float(jnp.mean(t < 0.5)) == pytest.approx(s / (s + 1), abs=0.015)


def test_class_conditional_source_net():
    net = ClassConditionalSource(num_classes=8, shape=(2,), learn_logvar=True)
    c = jnp.array([0, 3, 3, 7])
    params = net.init(jax.random.key(0), c)
    mu, lv = net.apply(params, c)
    assert mu.shape == (4, 2) and lv.shape == (4, 2)
    assert float(jnp.max(jnp.abs(mu))) == 0.0 and float(jnp.min(lv)) == 1.0
    # gradients reach the table rows of the classes used, through the FM term
    x1 = jnp.ones((4, 2))
    v = lambda x, t: 0.5 * x

    def loss(p):
        m, l = net.apply(p, c)
        return csfm(v, jax.random.key(1), x1, mu=m, logvar=l, fixed_std=None, lambda_align=0.0)[0]

    g = jax.grad(loss)(params)["params"]["mean"]["embedding"]
    used = np.zeros(8, bool)
    used[[0, 3, 7]] = True
    assert np.all(np.abs(np.asarray(g))[used].sum(-1) > 0) and np.all(np.asarray(g)[~used] == 0)


def test_input_validation():
    x1 = jnp.ones((4, 2))
    with pytest.raises(ValueError, match="mu"):
        csfm(lambda x, t: x, jax.random.key(0), x1, mu=jnp.ones((4, 3)))
    with pytest.raises(ValueError, match="logvar"):
        csfm(lambda x, t: x, jax.random.key(0), x1, mu=x1, fixed_std=None)
