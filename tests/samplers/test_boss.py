"""BOSS: dynamic program vs brute force, cost-matrix identities, schedule vs uniform on the oracle."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowjax.losses.distill import boss_straightening
from flowjax.samplers import ode
from flowjax.samplers.boss import (
    bellman_path,
    bellman_times,
    brute_force_path,
    cost_from_trajectory,
    cost_matrix,
    euler_trajectory,
    fine_times,
    straightening_pairs,
)
from flowjax.testing import GaussianMixtureFlow


def ring(std=0.1):
    ang = 2 * np.pi * np.arange(8) / 8
    means = 2.0 * np.stack([np.cos(ang), np.sin(ang)], 1)
    return GaussianMixtureFlow(jnp.asarray(means), jnp.full((8,), std), jnp.ones((8,)))


def test_dp_matches_brute_force_on_random_costs():
    rng = np.random.default_rng(0)
    for trial in range(3):
        cost = np.triu(rng.exponential(size=(9, 9)), 1)
        cost[np.tril_indices(9)] = np.inf
        for k in range(1, 9):
            idx, val = bellman_path(cost, k)
            bidx, bval = brute_force_path(cost, k)
            np.testing.assert_allclose(val, bval, rtol=1e-12)
            assert len(idx) == k + 1 and idx[0] == 0 and idx[-1] == 8 and np.all(np.diff(idx) > 0)
            np.testing.assert_allclose(sum(cost[a, b] for a, b in zip(idx[:-1], idx[1:])), bval, rtol=1e-12)
    with pytest.raises(ValueError, match="exceed"):
        bellman_path(cost, 9)


def test_cost_matrix_identities_on_oracle():
    flow = ring(std=0.3)
    x0 = jax.random.normal(jax.random.key(0), (64, 2), jnp.float64)
    cost, times = cost_matrix(flow.velocity, x0, kmax=12)
    c = np.asarray(cost)
    assert c.shape == (13, 13)
    np.testing.assert_allclose(np.diag(c, 1), 0.0, atol=1e-20)  # c_{i,i+1} = 0 exactly
    assert np.all(c[np.triu_indices(13, 1)] >= 0) and np.all(np.isinf(c[np.tril_indices(13)]))
    # K = Kmax: all nodes, zero cost.
    idx, val = bellman_path(c, 12)
    assert list(idx) == list(range(13)) and val == 0.0
    # K = 1: the single jump; K = 2: the interior node of a dense 1D search of the same objective.
    assert list(bellman_path(c, 1)[0]) == [0, 12]
    j = int(np.argmin([c[0, m] + c[m, 12] for m in range(1, 12)])) + 1
    assert list(bellman_path(c, 2)[0]) == [0, j, 12]
    # Straight flow (constant velocity): every cost is zero, BOSS loss zero at init.
    const = lambda x, t: jnp.ones_like(x) * jnp.array([0.5, -1.0])[None]
    c0, _ = cost_matrix(const, x0, kmax=6)
    assert float(jnp.max(jnp.where(jnp.isinf(c0), 0.0, c0))) < 1e-24
    pairs = straightening_pairs(const, x0, path_indices=[0, 2, 6], kmax=6)
    loss, _ = boss_straightening(const, None, pairs["x_b"], x_a=pairs["x_a"], t_a=pairs["t_a"], t_b=pairs["t_b"])
    assert float(loss) < 1e-24


def test_straightening_target_is_mean_fine_velocity():
    """Telescoping: (x_b - x_a) / (tau_b - tau_a) is the mean of the fine Euler velocities between a and b."""
    flow = ring(std=0.3)
    x0 = jax.random.normal(jax.random.key(1), (16, 2), jnp.float64)
    times = fine_times(10)
    states, vels = euler_trajectory(flow.velocity, x0, times)
    pairs = straightening_pairs(flow.velocity, x0, path_indices=[0, 3, 10], kmax=10)
    target = (pairs["x_b"] - pairs["x_a"]) / (pairs["t_b"] - pairs["t_a"])[:, None]
    np.testing.assert_allclose(np.asarray(target[:16]), np.asarray(jnp.mean(vels[0:3], 0)), atol=1e-12)
    np.testing.assert_allclose(np.asarray(target[16:]), np.asarray(jnp.mean(vels[3:10], 0)), atol=1e-12)
    assert pairs["x_a"].shape == (32, 2) and float(pairs["t_a"][16]) == pytest.approx(0.3)


def _errors(flow, ks):
    x_ref = jax.random.normal(jax.random.key(2), (128, 2), jnp.float64)
    x_test = jax.random.normal(jax.random.key(3), (128, 2), jnp.float64)
    states, _ = euler_trajectory(flow.velocity, x_test, fine_times(100))
    reference = states[-1]  # the objective's reference: the 100-step Euler endpoint
    cost, times = cost_matrix(flow.velocity, x_ref, kmax=100)
    out = {}
    for k in ks:
        idx, val = bellman_path(cost, k)
        grid = times[idx]
        assert grid.shape == (k + 1,) and grid[0] == 0.0 and grid[-1] == 1.0
        uniform_idx = np.arange(0, 101, 100 // k)
        uniform_objective = float(sum(cost[a, b] for a, b in zip(uniform_idx[:-1], uniform_idx[1:])))
        bell = ode(flow.velocity, x_test, solver="euler", times=grid)
        unif = ode(flow.velocity, x_test, solver="euler", steps=k)
        err_b = float(jnp.mean(jnp.sum((bell - reference) ** 2, -1)))
        err_u = float(jnp.mean(jnp.sum((unif - reference) ** 2, -1)))
        out[k] = (val, uniform_objective, err_b, err_u, grid)
    return out


def test_bellman_schedule_beats_uniform_on_gaussian_oracle():
    """Single-Gaussian oracle (curvature concentrated near t = 1 for every sample): the Bellman grid
    lowers both the DP objective and the global K-step Euler error (measured ~3.5x / 8x lower)."""
    from flowjax.testing import gaussian_flow

    flow = gaussian_flow(jnp.array([2.0, 0.0]), 0.1)
    for k, (val, uniform_objective, err_b, err_u, grid) in _errors(flow, (2, 4)).items():
        assert val <= uniform_objective
        assert err_b < err_u, (k, err_b, err_u)
    out = ode(flow.velocity, jax.random.normal(jax.random.key(3), (16, 2), jnp.float64), solver="heun", times=grid)
    assert bool(jnp.all(jnp.isfinite(out)))  # the grid is usable by any sampler of ``ode``


@pytest.mark.slow
def test_bellman_objective_beats_uniform_on_ring_oracle():
    for val, uniform_objective, *_ in _errors(ring(std=0.1), (2, 4)).values():
        assert val <= uniform_objective


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="known limitation (spec's derived caveat): the DP minimises the sum of "
                   "local one-jump errors from reference states; on the 8-mode ring (mode splitting) the "
                   "global K-step error of the Bellman grid is higher than uniform (measured K=2: 0.54 vs 0.52, "
                   "K=4: 0.051 vs 0.037)")
def test_bellman_global_error_on_ring_oracle():
    res = _errors(ring(std=0.1), (2, 4))
    assert all(err_b < err_u for _, _, err_b, err_u, _ in res.values())
