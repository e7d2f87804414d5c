"""Metrics against exact answers: closed forms, independent exact solvers, identities."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
import scipy.optimize
from scipy.stats import norm

from flowjax import metrics


def _normal(seed, shape, loc=0.0, scale=1.0):
    return loc + scale * np.random.default_rng(seed).standard_normal(shape)


# ---------------------------------------------------------------------------- sliced W2
def test_sw_shift_is_exact():
    x = _normal(0, (200, 3))
    c = np.array([0.5, -1.0, 2.0])
    theta = _normal(1, (64, 3))
    theta /= np.linalg.norm(theta, axis=1, keepdims=True)
    sw2 = metrics.sliced_wasserstein(x, x + c, projections=theta, squared=True)
    # every sorted projection shifts by theta.c, so W2^2 per direction is (theta.c)^2 exactly
    assert float(sw2) == pytest.approx(float(np.mean((theta @ c) ** 2)), rel=1e-12)
    assert float(metrics.sliced_wasserstein(x, x[::-1], key=jax.random.key(0))) == pytest.approx(0.0, abs=1e-12)


def test_sw_1d_equals_exact_w2_also_for_unequal_sizes():
    # equal sizes: in 1D the sorted matching is optimal
    x, y = _normal(2, (30, 1)), _normal(3, (30, 1), loc=0.7, scale=1.5)
    sw = metrics.sliced_wasserstein(x, y, projections=np.ones((1, 1)), squared=True)
    assert float(sw) == pytest.approx(np.mean((np.sort(x[:, 0]) - np.sort(y[:, 0])) ** 2), rel=1e-12)
    # unequal sizes: quantile formula against the assignment on lcm replicas (independent exact solvers)
    x, y = _normal(2, (12, 1)), _normal(3, (8, 1), loc=0.7, scale=1.5)
    sw = metrics.sliced_wasserstein(x, y, projections=-np.ones((1, 1)))
    assert float(sw) == pytest.approx(float(metrics.wasserstein2_exact(x, y)), rel=1e-9)


def test_sw_between_gaussians_population_value():
    d, n = 3, 2000
    m1, m2, s1, s2 = np.zeros(d), np.array([1.0, 2.0, 0.0]), 1.0, 0.5
    x, y = _normal(4, (n, d), m1, s1), _normal(5, (n, d), m2, s2)
    sw2 = float(metrics.sliced_wasserstein(x, y, key=jax.random.key(1), num_projections=2000, squared=True))
    exact = np.sum((m1 - m2) ** 2) / d + (s1 - s2) ** 2
    assert sw2 == pytest.approx(exact, rel=0.06)


def test_sw_jit_and_grad():
    f = jax.jit(lambda a, b, k: metrics.sliced_wasserstein(a, b, key=k, num_projections=16))
    x, y = jnp.asarray(_normal(6, (32, 2)), jnp.float32), jnp.asarray(_normal(7, (24, 2)), jnp.float32)
    v = f(x, y, jax.random.key(0))
    assert v.dtype == jnp.float32 and np.isfinite(float(v))
    g = jax.grad(lambda a: metrics.sliced_wasserstein(a, y, key=jax.random.key(0), num_projections=16))(x)
    assert np.all(np.isfinite(np.asarray(g))) and float(jnp.abs(g).sum()) > 0


# ---------------------------------------------------------------------------- exact W2
def test_w2_translation_and_permutation():
    x = _normal(8, (40, 3))
    c = np.array([1.0, -2.0, 0.5])
    assert float(metrics.wasserstein2_exact(x, x + c, squared=True)) == pytest.approx(float(c @ c), rel=1e-10)
    perm = np.random.default_rng(0).permutation(40)
    assert float(metrics.wasserstein2_exact(x, x[perm])) == pytest.approx(0.0, abs=1e-10)


def test_w2_matches_scipy_assignment():
    x, y = _normal(9, (40, 3)), _normal(10, (40, 3), loc=0.5)
    cost = ((x[:, None] - y[None]) ** 2).sum(-1)
    r, c = scipy.optimize.linear_sum_assignment(cost)
    assert float(metrics.wasserstein2_exact(x, y, squared=True)) == pytest.approx(cost[r, c].mean(), rel=1e-10)


def test_w2_unequal_sizes_matches_linear_program():
    n, m = 10, 4  # lcm 20
    x, y = _normal(11, (n, 2)), _normal(12, (m, 2), loc=1.0)
    cost = ((x[:, None] - y[None]) ** 2).sum(-1)
    # LP over couplings with marginals 1/n and 1/m (HiGHS, exact vertex solution)
    a_eq = np.vstack([np.kron(np.eye(n), np.ones((1, m))), np.kron(np.ones((1, n)), np.eye(m))])
    b_eq = np.concatenate([np.full(n, 1 / n), np.full(m, 1 / m)])
    lp = scipy.optimize.linprog(cost.ravel(), A_eq=a_eq, b_eq=b_eq, bounds=(0, None), method="highs")
    assert float(metrics.wasserstein2_exact(x, y, squared=True)) == pytest.approx(lp.fun, rel=1e-8)
    with pytest.raises(ValueError, match="max_size"):
        metrics.wasserstein2_exact(_normal(0, (1000, 2)), _normal(1, (999, 2)))


# ---------------------------------------------------------------------------- MMD
def _gauss_rbf_expectation(delta2, var, d, h):
    # E exp(-|Z|^2 / (2 h^2)) for Z ~ N(delta, var I_d)
    return (h**2 / (h**2 + var)) ** (d / 2) * math.exp(-delta2 / (2 * (h**2 + var)))


def test_mmd_gaussians_closed_form():
    d, n = 2, 1500
    s1, s2, delta = 1.0, 0.7, np.array([0.8, 0.0])
    x, y = _normal(13, (n, d), 0.0, s1), _normal(14, (n, d), delta, s2)
    bws = (0.5, 1.0, 2.0)
    exact = np.mean(
        [
            _gauss_rbf_expectation(0.0, 2 * s1**2, d, h)
            + _gauss_rbf_expectation(0.0, 2 * s2**2, d, h)
            - 2 * _gauss_rbf_expectation(float(delta @ delta), s1**2 + s2**2, d, h)
            for h in bws
        ]
    )
    est = float(metrics.mmd(x, y, bandwidths=bws))
    assert est == pytest.approx(exact, abs=0.012)  # estimator s.d. ~ 0.004 at n = 1500
    assert exact > 0.05


def test_mmd_identities():
    x = _normal(15, (100, 3))
    assert float(metrics.mmd(x, x, unbiased=False)) == pytest.approx(0.0, abs=1e-12)
    same = float(metrics.mmd(x, _normal(16, (100, 3))))
    shifted = float(metrics.mmd(x, _normal(16, (100, 3), loc=1.0)))
    h_def = metrics.DEFAULT_MMD_BANDWIDTHS
    exact_shift = np.mean([2 * _gauss_rbf_expectation(0.0, 2.0, 3, h) - 2 * _gauss_rbf_expectation(3.0, 2.0, 3, h) for h in h_def])
    assert abs(same) < 0.02 and shifted > 0.5 * exact_shift > 0.02
    # single points: biased MMD^2 = 2 - 2 k(a, b)
    a, b, h = np.array([[0.0, 0.0]]), np.array([[1.0, 1.0]]), (0.5, 2.0)
    k = np.mean([math.exp(-2.0 / (2 * hh**2)) for hh in h])
    assert float(metrics.mmd(a, b, bandwidths=h, unbiased=False)) == pytest.approx(2 - 2 * k, rel=1e-12)
    # blocked evaluation equals the one-block one
    y = _normal(17, (37, 3))
    full = metrics.mmd(x, y)
    blocked = metrics.mmd(x, y, max_block_elems=50)
    assert float(blocked) == pytest.approx(float(full), rel=1e-12)
    with pytest.raises(ValueError, match="bandwidths"):
        metrics.mmd(x, y, bandwidths=(1.0, -1.0))


# ---------------------------------------------------------------------------- energy distance
def _ed_1d_cdf_integral(x, y):
    grid = np.sort(np.concatenate([x, y]))
    f = np.searchsorted(np.sort(x), grid[:-1], side="right") / len(x)
    g = np.searchsorted(np.sort(y), grid[:-1], side="right") / len(y)
    return 2 * np.sum((f - g) ** 2 * np.diff(grid))


def test_energy_distance_1d_cdf_identity_and_zero():
    x, y = _normal(18, (23,)), _normal(19, (17,), loc=0.4)
    ed = float(metrics.energy_distance(x[:, None], y[:, None]))
    assert ed == pytest.approx(_ed_1d_cdf_integral(x, y), rel=1e-10)
    assert float(metrics.energy_distance(x[:, None], x[::-1, None])) == pytest.approx(0.0, abs=1e-12)
    xx, yy = _normal(20, (40, 3)), _normal(21, (30, 3))
    assert float(metrics.energy_distance(xx, yy)) == pytest.approx(float(metrics.energy_distance(yy, xx)), rel=1e-12)
    assert float(metrics.energy_distance(xx, yy)) > 0


def test_energy_distance_1d_gaussians_closed_form():
    def e_abs(mu, var):  # E|Z|, Z ~ N(mu, var): folded normal mean
        s = math.sqrt(var)
        return s * math.sqrt(2 / math.pi) * math.exp(-(mu**2) / (2 * var)) + mu * (1 - 2 * norm.cdf(-mu / s))

    m, s1, s2, n = 1.0, 1.0, 2.0, 3000
    exact = 2 * e_abs(m, s1**2 + s2**2) - e_abs(0.0, 2 * s1**2) - e_abs(0.0, 2 * s2**2)
    x, y = _normal(22, (n, 1), 0.0, s1), _normal(23, (n, 1), m, s2)
    est = float(metrics.energy_distance(x, y, unbiased=True))
    assert est == pytest.approx(exact, abs=0.03)


def test_energy_distance_grad_finite_at_coincident_points():
    x = jnp.asarray(_normal(24, (8, 2)))
    g = jax.grad(lambda a: metrics.energy_distance(a, x))(x)
    assert np.all(np.isfinite(np.asarray(g)))


# ---------------------------------------------------------------------------- bits per dim
def test_bits_per_dim():
    d = 64
    assert float(metrics.bits_per_dim(d * math.log(2), d)) == pytest.approx(1.0)
    # uniform density on [-1, 1]^D with 256 bins of width 2/256: exactly 8 bits
    assert float(metrics.bits_per_dim(d * math.log(2.0), d, bin_width=2 / 256)) == pytest.approx(8.0, rel=1e-12)
    np.testing.assert_allclose(metrics.bits_per_dim(jnp.asarray([0.0, d * math.log(2)]), d), [0.0, 1.0])


# ---------------------------------------------------------------------------- Frechet
def test_fd_closed_form_diagonal_and_general():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    a, b = np.array([1.0, 4.0, 0.25]), np.array([4.0, 1.0, 0.25])
    exact = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    got = metrics.frechet_distance_from_moments(mu1, np.diag(a), mu2, np.diag(b))
    assert got == pytest.approx(exact, rel=1e-12)
    rng = np.random.default_rng(0)
    a1, a2 = rng.standard_normal((5, 5)), rng.standard_normal((5, 5))
    c1, c2 = a1 @ a1.T + 0.1 * np.eye(5), a2 @ a2.T
    ref = np.trace(c1 + c2 - 2 * np.real(scipy.linalg.sqrtm(c1 @ c2)))
    assert metrics.frechet_distance_from_moments(np.zeros(5), c1, np.zeros(5), c2) == pytest.approx(ref, rel=1e-9)
    # rank-deficient covariance (e.g. fewer samples than features) stays finite and exact
    c3 = a1[:, :2] @ a1[:, :2].T
    ref3 = np.trace(c3 + c2 - 2 * np.real(scipy.linalg.sqrtm(c3 @ c2)))
    assert metrics.frechet_distance_from_moments(np.zeros(5), c3, np.zeros(5), c2) == pytest.approx(ref3, rel=1e-6)


def test_fd_of_samples():
    f = _normal(25, (500, 8))
    assert metrics.frechet_distance(f, f) == pytest.approx(0.0, abs=1e-9)
    g = _normal(26, (20000, 8), loc=0.5, scale=2.0)
    h = _normal(27, (20000, 8))
    exact = 8 * 0.25 + 8 * (2.0 - 1.0) ** 2
    assert metrics.frechet_distance(g, h) == pytest.approx(exact, rel=0.03)


# ---------------------------------------------------------------------------- validation
def test_input_validation():
    with pytest.raises(ValueError, match="features"):
        metrics.mmd(np.zeros((3, 2)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="NaN"):
        metrics.energy_distance(np.full((3, 2), np.nan), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="key"):
        metrics.sliced_wasserstein(np.zeros((3, 2)), np.zeros((3, 2)))
    with pytest.raises(TypeError, match="floating"):
        metrics.mmd(np.zeros((3, 2), np.int32), np.zeros((3, 2), np.int32))
