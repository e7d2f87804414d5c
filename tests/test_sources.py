"""Tests for flowjax.sources (2512.18184 source design; 2602.05951 conditional Gaussian source)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from flowjax import sources
from flowjax.testing import gaussian_flow


# ---------------------------------------------------------------- norm alignment (spec §6.1)
def test_expected_gaussian_norm_exact_values():
    assert sources.expected_gaussian_norm(1) == pytest.approx(math.sqrt(2 / math.pi), rel=1e-12)
    assert sources.expected_gaussian_norm(2) == pytest.approx(math.sqrt(math.pi / 2), rel=1e-12)
    # spec: 55.4211 at d = 3072 (the code's empirical constant is 55.4185), ~ sqrt(d - 1/2)
    assert sources.expected_gaussian_norm(3072) == pytest.approx(55.4211, abs=1e-4)
    assert sources.expected_gaussian_norm(3072) == pytest.approx(math.sqrt(3072 - 0.5), rel=1e-6)
    eps = jax.random.normal(jax.random.key(0), (40000, 64))
    mc = float(jnp.mean(jnp.linalg.norm(eps, axis=-1)))
    assert mc == pytest.approx(sources.expected_gaussian_norm(64), abs=4 * 0.71 / 200)


def test_norm_alignment_matches_data_norm():
    x1 = 0.3 * jax.random.normal(jax.random.key(1), (5000, 8, 8, 1)) + 0.1
    s = sources.norm_alignment_scale(x1)
    data_norm = float(jnp.mean(jnp.linalg.norm(x1.reshape(5000, -1), axis=-1)))
    assert s == pytest.approx(data_norm / sources.expected_gaussian_norm(64), rel=1e-10)
    x0 = sources.scaled_gaussian(jax.random.key(2), (40000, 8, 8, 1), scale=s, dtype=jnp.float64)
    assert float(jnp.mean(jnp.linalg.norm(x0.reshape(40000, -1), axis=-1))) == pytest.approx(data_norm, rel=3e-3)
    # the code's CIFAR constants give s = 0.49078
    assert sources.CIFAR10_DATA_NORM / sources.CIFAR10_GAUSSIAN_NORM_CODE == pytest.approx(0.49078, abs=1e-5)
    with pytest.raises(ValueError, match="x1"):
        sources.norm_alignment_scale(jnp.ones((4,)))


# ---------------------------------------------------------------- pruned sampler (spec §6.2, 6.3)
def _orthonormal_axes(key, d, r):
    q, _ = jnp.linalg.qr(jax.random.normal(key, (d, d), jnp.float64))
    return q[:, :r].T


def test_pruned_gaussian_hard_guarantee_and_shared_seeds():
    d, tau = 64, 2.5 / 8
    axes = _orthonormal_axes(jax.random.key(3), d, 20)
    eps = jax.random.normal(jax.random.key(4), (2000, d), jnp.float64)
    x, rate = jax.jit(lambda k, e: sources.pruned_gaussian(k, (2000, d), axes, tau=tau, x_init=e,
                                                           dtype=jnp.float64))(jax.random.key(5), eps)
    assert bool(jnp.all(jnp.isfinite(x)))
    cos = sources.max_axis_cosine(x, axes)
    assert float(jnp.max(cos)) <= tau
    ok0 = sources.max_axis_cosine(eps, axes) <= tau
    assert 0.5 < float(jnp.mean(ok0)) < 0.99  # the check is not vacuous
    np.testing.assert_array_equal(np.asarray(x)[np.asarray(ok0)], np.asarray(eps)[np.asarray(ok0)])
    assert not np.any(np.all(np.asarray(x)[~np.asarray(ok0)] == np.asarray(eps)[~np.asarray(ok0)], axis=1))
    # scaling is applied after pruning (norm-aligned source)
    xs, _ = sources.pruned_gaussian(jax.random.key(5), (2000, d), axes, tau=tau, x_init=eps, scale=0.5,
                                    dtype=jnp.float64)
    np.testing.assert_allclose(np.asarray(xs), 0.5 * np.asarray(x), rtol=1e-12)


def test_pruned_gaussian_empty_axes_is_standard_normal():
    d = 16
    x, rate = sources.pruned_gaussian(jax.random.key(6), (4000, d), jnp.zeros((0, d)), tau=0.0, dtype=jnp.float64)
    assert float(rate) == 1.0
    norms = np.asarray(jnp.linalg.norm(x, axis=-1))
    assert stats.kstest(norms, stats.chi(d).cdf).pvalue > 1e-3
    dirs = np.asarray(x) / norms[:, None]
    # uniform directions: mean ~ 0 (std 1/sqrt(n d)) and second moment I/d
    assert np.max(np.abs(dirs.mean(0))) < 5 / math.sqrt(4000 * d)
    np.testing.assert_allclose(dirs.T @ dirs / 4000, np.eye(d) / d, atol=0.012)


def test_acceptance_probability_exact_cases():
    # d = 3: Archimedes, <u, a> is uniform on [-1, 1], so P(<u,a> <= tau) = (1 + tau)/2
    for tau in (-0.5, 0.0, 0.3, 0.9):
        assert sources.acceptance_probability(3, tau, 1) == pytest.approx((1 + tau) / 2, rel=1e-10)
    assert sources.acceptance_probability(3, 0.3, 4) == pytest.approx(0.65**4, rel=1e-10)
    # d = 2: angle uniform, P(cos <= tau) = 1 - arccos(tau)/pi
    assert sources.acceptance_probability(2, 0.98, 1) == pytest.approx(1 - math.acos(0.98) / math.pi, rel=1e-10)


@pytest.mark.parametrize("d,tau,r", [(64, 2.5 / 8, 16), (64, 2.5 / 8, 30), (256, 2.5 / 16, 20)])
def test_acceptance_rate_matches_product_formula(d, tau, r):
    axes = _orthonormal_axes(jax.random.key(7), d, r)
    eps = jax.random.normal(jax.random.key(8), (100_000, d), jnp.float32)
    emp = float(jnp.mean(sources.max_axis_cosine(eps, axes.astype(jnp.float32)) <= tau))
    assert emp == pytest.approx(sources.acceptance_probability(d, tau, r), rel=0.02)
    _, rate = sources.pruned_gaussian(jax.random.key(9), (5000, d), axes, tau=tau)
    assert float(rate) == pytest.approx(sources.acceptance_probability(d, tau, r), rel=0.03)


def test_pruned_sample_gives_nan_when_it_cannot_fill():
    d = 4
    axes = jnp.eye(d)
    x, rate = sources.pruned_gaussian(jax.random.key(10), (50, d), jnp.concatenate([axes, -axes]), tau=-0.9,
                                      max_rounds=2)
    # max over +-e_k of the cosine is always >= 1/sqrt(d) > -0.9: nothing is ever accepted
    assert float(rate) == 0.0 and bool(jnp.all(jnp.isnan(x)))


# ---------------------------------------------------------------- axis selection (spec §6.4)
def test_data_sparse_axes_half_space():
    key = jax.random.key(11)
    x = jax.random.normal(key, (3000, 5), jnp.float64)
    x = x.at[:, 0].set(jnp.abs(x[:, 0]) + 0.05)  # data confined to the half-space x_0 > 0
    axes, max_cos = sources.data_sparse_axes(x, tau_axis=0.01, components=jnp.eye(5))
    np.testing.assert_allclose(np.asarray(axes), -np.eye(5)[:1])  # exactly -e_0
    assert float(max_cos[5]) < 0 and float(jnp.min(jnp.delete(max_cos, 5))) > 0.5
    # with PCA components: if the half-space axis is the leading one it is found the same way
    x2 = x.at[:, 0].multiply(10.0)
    u = sources.principal_directions(x2)
    np.testing.assert_allclose(np.asarray(u @ u.T), np.eye(5), atol=1e-10)
    axes2, _ = sources.data_sparse_axes(x2, tau_axis=0.01)
    assert axes2.shape[0] == 1 and abs(float(axes2[0, 0]) + 1.0) < 0.02


# ---------------------------------------------------------------- 2-D simulation (spec §6.5, 6.6)
def test_simulation_generators():
    assert sources.mode_counts(1024, sources.SIM_MODE_WEIGHTS) == (51, 307, 666)
    pts, lab, base = sources.simulation_target(jax.random.key(12))
    assert pts.shape == (1024, 2) and base.shape == (3,)
    np.testing.assert_array_equal(np.bincount(np.asarray(lab)), [51, 307, 666])
    r = jnp.linalg.norm(pts, axis=-1)
    assert float(jnp.mean(r)) == pytest.approx(sources.expected_gaussian_norm(625), abs=4 * 0.71 / 32)
    assert sources.expected_gaussian_norm(625) == pytest.approx(24.99, abs=0.01)
    ang = jnp.arctan2(pts[:, 1], pts[:, 0])
    dev = jnp.angle(jnp.exp(1j * (ang - base[lab])))
    assert float(jnp.max(jnp.abs(dev))) < math.radians(10 + 5)
    src = sources.circle_source(jax.random.key(13), 20000)
    assert float(jnp.mean(jnp.linalg.norm(src, axis=-1))) == pytest.approx(55.42, abs=0.03)
    d = sources.directional_source(jax.random.key(14), 5000, base, sources.SIM_MODE_WEIGHTS, min_cos=0.98)
    dh = d / jnp.linalg.norm(d, axis=-1, keepdims=True)
    bdir = jnp.stack([jnp.cos(base), jnp.sin(base)], -1)
    cos = jnp.max(dh @ bdir.T, axis=-1)
    assert float(jnp.min(cos)) >= 0.98 - 1e-5


def test_one_sided_rejection_2d():
    p2 = jnp.array([0.6, 0.8])
    x, rate = sources.pruned_sample(jax.random.key(15), lambda k, m: sources.circle_source(k, m), 4000,
                                    (-p2)[None], tau=0.98)
    dh = x / jnp.linalg.norm(x, axis=-1, keepdims=True)
    assert float(jnp.max(-(dh @ p2))) <= 0.98
    assert float(rate) == pytest.approx(1 - math.acos(0.98) / math.pi, abs=0.01)


def test_nearest_neighbour_metrics():
    tgt, _, _ = sources.simulation_target(jax.random.key(16), n=200)
    m = sources.nearest_neighbour_metrics(tgt, tgt)
    assert m["mean_nn"] == 0.0 and m["pct_bad"] == 0.0 and m["coverage"] == 1.0 and m["w2"] == 0.0
    m = sources.nearest_neighbour_metrics(tgt + 100.0, tgt)
    assert m["pct_bad"] == 100.0 and m["coverage"] == 0.0
    # W2 between a set and its translate by v is exactly |v|
    m = sources.nearest_neighbour_metrics(tgt + jnp.array([3.0, 4.0])[None], tgt)
    assert m["w2"] == pytest.approx(5.0, rel=1e-5)


# ---------------------------------------------------------------- conditional Gaussian source
def test_conditional_gaussian_source_and_bridge_velocity():
    mu = jnp.full((6, 3), 2.0)
    x0, lv = sources.conditional_gaussian_source(jax.random.key(17), mu)
    eps = jax.random.normal(jax.random.key(17), (6, 3))
    np.testing.assert_allclose(np.asarray(x0), np.asarray(mu + eps), rtol=1e-6)
    assert float(jnp.max(jnp.abs(lv))) == 0.0
    x0b, lvb = sources.conditional_gaussian_source(jax.random.key(17), mu, jnp.full((6, 3), 50.0), fixed_std=None)
    np.testing.assert_allclose(np.asarray(x0b), np.asarray(mu + math.exp(5.0) * eps), rtol=1e-5)  # clamp 10
    # oracle: N(0, I) -> N(m, s^2 I) against the library's Gaussian-mixture oracle
    m, s = jnp.array([1.0, -2.0]), 0.5
    flow = gaussian_flow(m, s)
    x = jax.random.normal(jax.random.key(18), (64, 2), jnp.float64)
    t = jnp.linspace(0.01, 0.99, 64)
    np.testing.assert_allclose(np.asarray(sources.gaussian_bridge_velocity(x, t, m0=0.0, s0=1.0, m1=m, s1=s)),
                               np.asarray(flow.velocity(x, t)), rtol=1e-8, atol=1e-10)
    # spec §6.3: a source centred at m1 with s0 = s1 gives v = ((2t - 1)/((1-t)^2 + t^2)) (x - m1)
    v = sources.gaussian_bridge_velocity(x, t, m0=m, s0=0.3, m1=m, s1=0.3)
    expect = ((2 * t - 1) / ((1 - t) ** 2 + t**2))[:, None] * (x - m[None])
    np.testing.assert_allclose(np.asarray(v), np.asarray(expect), rtol=1e-10, atol=1e-12)
