"""``velocity_and_divergence``: the fused pass the likelihood solvers use (v and div from one set of JVPs)."""

import jax
import jax.numpy as jnp
import numpy as np

from flowjax import samplers
from flowjax.testing import GaussianMixtureFlow

A = jnp.array([[0.5, -1.0, 0.2, 0.0], [0.3, 2.0, 0.0, 1.0], [0.0, 0.1, -0.7, 0.4], [1.0, 0.0, 0.5, 0.25]])


def affine_field(x, t, c=None):
    """v = (1 + t) A x_flat (+ c): divergence (1 + t) tr(A), Hutchinson eps^T A eps (1 + t), exactly."""
    flat = x.reshape(x.shape[0], -1)
    out = (flat @ A.T) * (1.0 + t)[:, None]
    if c is not None:
        out = out + c[:, None]
    return out.reshape(x.shape)


def test_exact_divergence_of_an_affine_field_images_and_condition():
    x = jax.random.normal(jax.random.key(0), (5, 2, 2, 1))  # image-shaped state, d = 4
    t = jnp.linspace(0.1, 0.9, 5)
    c = jnp.arange(5.0)
    v, div = samplers.velocity_and_divergence(affine_field, x, t, c=c)
    np.testing.assert_allclose(v, affine_field(x, t, c=c), rtol=1e-12)
    np.testing.assert_allclose(div, (1.0 + t) * jnp.trace(A), rtol=1e-12)
    v0, div0 = samplers.velocity_and_divergence(affine_field, x, t)
    np.testing.assert_allclose(v0, affine_field(x, t), rtol=1e-12)
    np.testing.assert_allclose(div0, div, rtol=1e-12)


def test_hutchinson_of_an_affine_field():
    x = jax.random.normal(jax.random.key(1), (6, 4))
    t = jnp.full((6,), 0.3)
    eps = jax.random.rademacher(jax.random.key(2), x.shape, dtype=x.dtype)
    v, est = samplers.velocity_and_divergence(affine_field, x, t, eps=eps)
    np.testing.assert_allclose(v, affine_field(x, t), rtol=1e-12)
    np.testing.assert_allclose(est, 1.3 * jnp.einsum("ni,ij,nj->n", eps, A, eps), rtol=1e-12)


def test_matches_the_separate_passes_on_a_nonlinear_field():
    oracle = GaussianMixtureFlow(jnp.array([[-2.0, 0.0], [2.0, 1.0]]), jnp.array([0.5, 0.3]), jnp.array([0.3, 0.7]))
    x = oracle.sample_marginal(jax.random.key(3), 7, 0.4)
    t = jnp.linspace(0.05, 0.95, 7)
    v, div = samplers.velocity_and_divergence(oracle.velocity, x, t)
    np.testing.assert_allclose(v, oracle.velocity(x, t), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(div, samplers.divergence_exact(oracle.velocity, x, t), rtol=1e-10, atol=1e-12)
    # the divergence is per sample: a finite-difference trace of the per-sample Jacobian
    h = 1e-5
    fd = sum(
        (oracle.velocity(x + h * jnp.eye(2)[j][None, :], t)[:, j] - oracle.velocity(x - h * jnp.eye(2)[j][None, :], t)[:, j]) / (2 * h)
        for j in range(2)
    )
    np.testing.assert_allclose(div, fd, rtol=1e-6, atol=1e-6)
    eps = jax.random.rademacher(jax.random.key(4), x.shape, dtype=x.dtype)
    v2, est = samplers.velocity_and_divergence(oracle.velocity, x, t, eps=eps)
    np.testing.assert_allclose(v2, oracle.velocity(x, t), rtol=1e-10)
    np.testing.assert_allclose(est, samplers.divergence_hutchinson(oracle.velocity, x, t, eps), rtol=1e-10, atol=1e-12)
