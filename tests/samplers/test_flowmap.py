"""flowmap sampler against the Gaussian-mixture oracle (exact flow maps)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowjax.samplers import flowmap, uniform_grid
from flowjax.testing import GaussianMixtureFlow


@pytest.fixture(scope="module")
def mixture():
    means = jnp.array([[-1.5, 0.5], [1.0, -1.0], [0.5, 2.0]], jnp.float64)
    return GaussianMixtureFlow(means, jnp.array([0.3, 0.5, 0.2]), jnp.array([0.3, 0.4, 0.3]))


def test_one_step_with_exact_average_velocity_is_the_oracle_flow_map(mixture):
    x0 = jax.random.normal(jax.random.key(0), (16, 2), jnp.float64)
    out = jax.jit(lambda x: flowmap(mixture.average_velocity, x, (0.0, 1.0)))(x0)
    np.testing.assert_allclose(out, mixture.flow_map(x0, 0.0, 1.0), atol=1e-8)


def test_k_steps_with_exact_u_compose_to_the_flow_map_and_invert(mixture):
    x0 = jax.random.normal(jax.random.key(1), (8, 2), jnp.float64)
    grid = jnp.array([0.0, 0.2, 0.7, 1.0])
    run = jax.jit(lambda x, g: flowmap(mixture.average_velocity, x, g))  # traced grid: one compile
    x1 = run(x0, grid)
    np.testing.assert_allclose(x1, mixture.flow_map(x0, 0.0, 1.0), atol=1e-7)
    # inversion: same field, decreasing grid, recovers the noise (signed-interval u, no sign flip)
    back = run(x1, grid[::-1])
    np.testing.assert_allclose(back, x0, atol=1e-7)


def test_euler_limit_and_trajectory_shape():
    # u(x, s, t) = v(x, s): the k-step flow map is k Euler steps of v (hand-computed for v = -x)
    u = lambda x, s, t: -x  # noqa: E731
    x0 = jnp.ones((3, 2))
    traj = flowmap(u, x0, uniform_grid(4), return_trajectory=True)
    assert traj.shape == (5, 3, 2)
    np.testing.assert_allclose(traj[-1], (1 - 0.25) ** 4 * x0, rtol=1e-12)


def test_per_sample_grids_and_jit():
    u = lambda x, s, t: jnp.ones_like(x) * (s + t)[:, None]  # noqa: E731
    grid = jnp.stack([jnp.array([0.0, 0.5, 1.0]), jnp.array([0.0, 0.25, 0.5])], axis=1)  # (3, 2)
    out = jax.jit(lambda x, g: flowmap(u, x, g))(jnp.zeros((2, 1)), grid)
    # sample 0: 0.5*(0.5) + 0.5*(1.5) = 1.0; sample 1: 0.25*0.25 + 0.25*0.75 = 0.25
    np.testing.assert_allclose(out[:, 0], [1.0, 0.25], rtol=1e-12)


def test_condition_is_passed():
    u = lambda x, s, t, c: x + c[:, None]  # noqa: E731
    out = flowmap(u, jnp.zeros((2, 1)), (0.0, 1.0), c=jnp.array([1.0, 2.0]))
    np.testing.assert_allclose(out[:, 0], [1.0, 2.0])


@pytest.mark.parametrize(
    "times, match",
    [((0.0,), "at least 2"), ((0.0, 1.5), r"\[0, 1\]"), ((0.0, 0.6, 0.3), "monotone"), (jnp.zeros((2, 3)), "columns")],
)
def test_bad_grids_raise(times, match):
    with pytest.raises(ValueError, match=match):
        flowmap(lambda x, s, t: x, jnp.zeros((2, 1)), times)


def test_bad_x0_raises():
    with pytest.raises(TypeError, match="x0"):
        flowmap(lambda x, s, t: x, jnp.zeros((2, 1), jnp.int32), (0.0, 1.0))
