"""FLAIR and forward operators (spec flair.md §6) against exact answers."""

import jax
import jax.numpy as jnp
import numpy as np

from flowjax import operators
from flowjax.samplers import inverse
from flowjax.testing import GaussianMixtureFlow, gaussian_flow


def test_identity_operator_zero_noise_returns_observation():
    flow = GaussianMixtureFlow(np.array([[1.0, -1.0, 0.5], [-1.0, 0.0, 2.0]]), np.array([0.3, 0.5]), np.ones(2))
    y = jax.random.normal(jax.random.key(0), (7, 3)) * 2.0
    op = operators.identity()
    # |A|_2 = 1: the effective data step 1/(2 |A|^2) = 1/2 solves |mu - y|^2 in one step
    out = inverse.flair(flow.velocity, jax.random.key(1), y, forward=op.forward, mu_init=jnp.zeros_like(y),
                        times=inverse.flair_time_grid(20), data_lr=0.5, data_lr_times_weight=False, noise_std=0.0)
    np.testing.assert_allclose(out, y, atol=1e-12)


def test_time_grid():
    g = inverse.flair_time_grid(50)
    assert g.shape == (50,) and np.all(np.diff(g) > 0) and g[0] > 0 and g[-1] < 0.82
    np.testing.assert_allclose(1 - g, np.linspace(1, 0.18, 52)[1:-1])


def test_crw_normalisation_and_order():
    flow = gaussian_flow(np.zeros(4), 0.5 * np.ones(4))
    x1 = flow.sample_data(jax.random.key(2), 512)
    # an imperfect prior so that losses vary with time
    v = lambda x, t: 0.8 * flow.velocity(x, t)
    times, w, losses = inverse.calibrate_weights(v, jax.random.key(3), x1, num_times=20, scale=0.5)
    np.testing.assert_allclose(w.mean(), 0.5, rtol=1e-12)
    order = np.argsort(losses)
    assert np.all(np.diff(w[order]) <= 1e-12)
    lam = inverse.crw_schedule(times, w)
    np.testing.assert_allclose(lam(jnp.asarray([times[3] + 1e-3, times[7] - 1e-3])), [w[3], w[7]])


def test_noise_prediction_is_posterior_mean_and_dta_variance():
    flow = GaussianMixtureFlow(np.array([[1.0, 0.0], [-1.0, 1.0]]), np.array([0.3, 0.4]), np.ones(2))
    x = jax.random.normal(jax.random.key(4), (5, 2))
    for t in (0.2, 0.6):
        tv = jnp.full((5,), t)
        _, ex0 = flow.posterior_means(x, tv)
        np.testing.assert_allclose(x - t * flow.velocity(x, tv), ex0, atol=1e-10)
    k1, k2 = jax.random.split(jax.random.key(5))
    a = 0.7
    x0 = a * jax.random.normal(k1, (200_000,)) + np.sqrt(1 - a**2) * jax.random.normal(k2, (200_000,))
    assert abs(float(jnp.var(x0)) - 1.0) < 0.01


def test_regulariser_fixed_point_gaussian_prior():
    # Gaussian prior N(m, s^2 I): expected regulariser direction E_x0[v(x_t) - (mu - x0)] vanishes
    # iff mu = m; iterating the regulariser alone (huge noise so the data term never acts) converges.
    m, s = np.array([0.7, -1.2]), 0.4
    flow = gaussian_flow(m, s * np.ones(2))
    mu = jnp.zeros((4000, 2))
    ident = operators.identity()
    out = inverse.flair(flow.velocity, jax.random.key(6), jnp.zeros((4000, 2)), forward=ident.forward, mu_init=mu,
                        times=np.linspace(0.3, 0.5, 200), reg_weight=0.5, dta=False, noise_std=1e6)
    np.testing.assert_allclose(out.mean(0), m, atol=0.02)


def test_data_consistency_stops_below_threshold():
    key = jax.random.key(7)
    op, mat = operators.random_projection(key, 4, 8)
    y = jax.random.normal(jax.random.key(8), (3, 4))
    norm2 = float(np.linalg.norm(np.asarray(mat), 2) ** 2)
    thr = 1e-4 * 4
    mu = inverse.data_consistency(op.forward, jnp.zeros((3, 8)), y, step=1 / (2 * norm2), max_steps=2000, threshold=thr)
    r2 = jnp.sum((op.forward(mu) - y) ** 2, axis=1)
    assert np.all(np.asarray(r2) < thr)
    # stopped early: one more step would lower the residual further, but it stays put
    mu2 = inverse.data_consistency(op.forward, mu, y, step=1 / (2 * norm2), max_steps=5, threshold=thr)
    np.testing.assert_array_equal(mu2, mu)


def test_operators_pinv_and_shapes():
    x = jax.random.normal(jax.random.key(9), (2, 8, 8, 1))
    sr = operators.super_resolution(2)
    y = sr.forward(x)
    assert y.shape == (2, 4, 4, 1)
    np.testing.assert_allclose(sr.forward(sr.pinv(y)), y, atol=1e-12)  # A A^+ = I
    mask = (jnp.arange(64).reshape(8, 8, 1) % 3 != 0).astype(x.dtype)
    mk = operators.masking(mask)
    np.testing.assert_allclose(mk.forward(mk.forward(x)), mk.forward(x))
    kern = np.ones((3, 3)) / 9.0
    bl = operators.blur(kern, (8, 8), eps=1e-9)
    xb = bl.forward(x)
    # circular convolution against a direct computation at one pixel
    direct = sum(kern[i, j] * x[0, (3 + i - 1) % 8, (4 + j - 1) % 8, 0] for i in range(3) for j in range(3))
    np.testing.assert_allclose(xb[0, 3, 4, 0], direct, atol=1e-12)
    op, mat = operators.random_projection(jax.random.key(10), 6, 64)
    xf = x.reshape(2, -1)
    np.testing.assert_allclose(op.forward(op.pinv(op.forward(xf))), op.forward(xf), atol=1e-10)
    nrm = operators.operator_norm(op, xf, iterations=300)
    np.testing.assert_allclose(nrm, np.linalg.norm(np.asarray(mat), 2), rtol=1e-6)
