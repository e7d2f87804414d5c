"""CFM: the oracle's field is the minimiser for every path and parameterisation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowjax import couplings, losses, paths, timesteps
from flowjax.testing import GaussianMixtureFlow

PATHS = [paths.linear_path(), paths.cosine_path(), paths.vp_path(), paths.polynomial_path(2.0)]


def _oracle(path):
    return GaussianMixtureFlow(jnp.array([[-2.0, 0.0], [2.0, 1.0]]), jnp.array([0.5, 0.4]), jnp.array([0.4, 0.6]), path=path)


def _perturbation(x, t):
    return jnp.sin(1.3 * x + 0.7) * (0.5 + t[:, None])


def _exact_model(oracle, prediction):
    def fn(x, t):
        if prediction == "velocity":
            return oracle.velocity(x, t)
        ex1, ex0 = oracle.posterior_means(x, t)
        return ex1 if prediction == "data" else ex0

    return fn


def _directional_derivatives(oracle, prediction, offset, keys, n):
    """d/deps L(model + (offset + eps) h) at eps = 0, one estimate per key; and E|h|^2."""
    base = _exact_model(oracle, prediction)
    sampler = timesteps.uniform(0.02, 0.98)  # avoid the parameterisations' singular end points

    def loss_at(eps, key):
        model = lambda x, t: base(x, t) + (offset + eps) * _perturbation(x, t)
        x1 = oracle.sample_data(jax.random.fold_in(key, 1), n)
        return losses.cfm(model, key, x1, path=oracle.path, prediction=prediction, time_sampler=sampler)[0]

    return jax.jit(jax.vmap(jax.grad(loss_at), in_axes=(None, 0)))(0.0, keys)


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.name)
@pytest.mark.parametrize("prediction", ["velocity", "data", "noise"])
def test_oracle_is_stationary_and_perturbation_raises_loss(path, prediction):
    oracle = _oracle(path)
    keys = jax.random.split(jax.random.key(0), 8)
    grads = np.asarray(_directional_derivatives(oracle, prediction, 0.0, keys, 8000))
    se = grads.std(ddof=1) / np.sqrt(len(grads))
    assert abs(grads.mean()) < 4 * se + 1e-4, (grads.mean(), se)
    # At a perturbed field the derivative is 2 * offset * E|h|^2, clearly non-zero: the test can fail.
    offset = 0.3
    grads_off = np.asarray(_directional_derivatives(oracle, prediction, offset, keys, 8000))
    x = oracle.sample_marginal(jax.random.key(5), 20000, 0.5)
    h2 = float(jnp.mean(_perturbation(x, jnp.full((20000,), 0.5)) ** 2))
    assert grads_off.mean() > 10 * se
    np.testing.assert_allclose(grads_off.mean(), 2 * offset * h2, rtol=0.35)


def test_loss_value_of_exact_field_is_the_conditional_variance():
    """For a single Gaussian on the linear path, E|v* - (x1 - x0)|^2 is computable in closed form."""
    m, s = 0.0, 0.5
    oracle = GaussianMixtureFlow(jnp.array([[m]]), jnp.array([s]), jnp.array([1.0]))
    n = 400_000
    loss, _ = losses.cfm(oracle.velocity, jax.random.key(1), oracle.sample_data(jax.random.key(2), n))
    # Var(x1 - x0 | x_t) = (s^2 + 1) - Cov^2/Var(x_t), averaged over t ~ U[0,1] (numeric quadrature).
    ts = jnp.linspace(0.0, 1.0, 20001)
    var_t = ts**2 * s**2 + (1 - ts) ** 2
    cov = ts * s**2 - (1 - ts)
    expected = jnp.trapezoid((s**2 + 1) - cov**2 / var_t, ts)
    np.testing.assert_allclose(loss, expected, rtol=0.01)


def test_coupling_and_labels_are_gathered_consistently():
    """With a class-conditional OT coupling, the model sees each data point with its own label."""
    x1 = jnp.concatenate([jnp.full((4, 2), -3.0), jnp.full((4, 2), 3.0)])
    labels = jnp.array([0, 0, 0, 0, 1, 1, 1, 1])
    seen = {}

    def model(x, t, c):
        seen["c"] = c
        return jnp.zeros_like(x)

    losses.cfm(model, jax.random.key(0), x1, coupling=couplings.ot_exact(), c=labels)
    np.testing.assert_array_equal(seen["c"], labels)


def test_weighting_multiplies_per_sample_errors():
    x1 = jnp.ones((16, 2))
    model = lambda x, t: jnp.zeros_like(x)
    plain, aux = losses.cfm(model, jax.random.key(0), x1)
    doubled, _ = losses.cfm(model, jax.random.key(0), x1, weighting=lambda t: 2.0 * jnp.ones_like(t))
    np.testing.assert_allclose(doubled, 2 * plain, rtol=1e-6)
    np.testing.assert_allclose(aux["mse"], plain, rtol=1e-6)


def test_jit_and_vmap_contract():
    model = lambda x, t: x * t[:, None]
    f = jax.jit(lambda k, x: losses.cfm(model, k, x)[0])
    out = jax.vmap(f)(jax.random.split(jax.random.key(0), 3), jnp.ones((3, 8, 2)))
    assert out.shape == (3,) and bool(jnp.all(jnp.isfinite(out)))


def test_bad_inputs_fail_fast():
    model = lambda x, t: x
    with pytest.raises(TypeError, match="x1"):
        losses.cfm(model, jax.random.key(0), jnp.ones((4, 2), jnp.int32))
    with pytest.raises(ValueError, match="x0"):
        losses.cfm(model, jax.random.key(0), jnp.ones((4, 2)), x0=jnp.ones((3, 2)))
    with pytest.raises(ValueError, match="prediction"):
        losses.cfm(model, jax.random.key(0), jnp.ones((4, 2)), prediction="score")
    with pytest.raises(ValueError, match="`c`"):
        losses.cfm(model, jax.random.key(0), jnp.ones((4, 2)), c=jnp.zeros((3,), jnp.int32))
