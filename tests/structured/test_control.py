"""MPPI / ensemble-dynamics pieces of the Action Flow Matching toy (flowjax.structured.control)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from flowjax.data import unicycle
from flowjax.structured import control
from flowjax.structured.nets import AFMNet


def test_unicycle_step_matches_numpy_reference():
    rng = np.random.default_rng(0)
    s = rng.normal(size=(32, 3))
    a = rng.uniform(unicycle.ACTION_LOW, unicycle.ACTION_HIGH, (32, 2))
    g = unicycle.random_gains(rng, 32)
    np.testing.assert_allclose(control.unicycle_step(jnp.asarray(s), jnp.asarray(a), jnp.asarray(g)),
                               unicycle.step(s, a, g), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(control.state_error(jnp.asarray(s), jnp.asarray(s[::-1])),
                               unicycle.state_error(s, s[::-1]), atol=1e-12)


def test_figure8_course():
    wp = control.figure8_waypoints(40, 3.0)
    assert wp.shape == (40, 2)
    np.testing.assert_allclose(wp[-1], 0.0, atol=1e-12)          # the course closes at the start
    assert np.abs(wp[:, 0]).max() == pytest.approx(3.0, rel=1e-3)  # lobes of radius 3
    assert np.all(np.linalg.norm(np.diff(wp, axis=0), axis=1) < 1.0)
    with pytest.raises(ValueError, match="n"):
        control.figure8_waypoints(0)


def test_clip_action_to_box():
    a = jnp.array([[2.0, -3.0], [0.5, 0.1]])
    np.testing.assert_allclose(control.clip_action(a), [[1.0, -np.pi / 2], [0.5, 0.1]], rtol=1e-6)


def test_ensemble_weighted_mse_ignores_masked_samples():
    p = control.init_ensemble(jax.random.key(0), members=3, hidden=8)
    p = jax.tree.map(lambda x: x + 0.1 * jax.random.normal(jax.random.key(1), x.shape, x.dtype), p)
    s = jax.random.normal(jax.random.key(2), (6, 3))
    a = jax.random.normal(jax.random.key(3), (6, 2))
    d = jax.random.normal(jax.random.key(4), (6, 3))
    w = jnp.array([1.0, 1.0, 1.0, 0.0, 0.0, 0.0])
    d_garbage = d.at[3:].set(1e6)
    mse = jax.jit(control.ensemble_mse)
    full = mse(p, s[:3], a[:3], d[:3])
    np.testing.assert_allclose(mse(p, s, a, d_garbage, w), full, rtol=1e-10)
    g1 = jax.jit(jax.grad(control.ensemble_mse))(p, s, a, d_garbage, w)
    g2 = jax.jit(jax.grad(control.ensemble_mse))(p, s[:3], a[:3], d[:3])
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-8, atol=1e-12), g1, g2)


def test_members_are_selected_per_sample():
    p = control.init_ensemble(jax.random.key(0), members=4, hidden=8)
    p = jax.tree.map(lambda x: jax.random.normal(jax.random.key(5), x.shape, x.dtype), p)
    s = jax.random.normal(jax.random.key(6), (4, 3))
    a = jax.random.normal(jax.random.key(7), (4, 2))
    member = jnp.array([3, 0, 2, 1])
    delta = jax.jit(lambda m: control.ensemble_delta(control.select_members(p, m), s, a))
    got = delta(member)
    for i in range(4):
        np.testing.assert_allclose(got[i], delta(jnp.full((4,), member[i]))[i], rtol=1e-12)
    mean = np.mean([delta(jnp.full((4,), m)) for m in range(4)], 0)
    np.testing.assert_allclose(control.ensemble_mean_delta(p, s, a), mean, rtol=1e-10)


@pytest.fixture(scope="module")
def nominal_ensemble():
    """A small ensemble fitted to the nominal unicycle (g = 1)."""
    key = jax.random.key(0)
    n = 1024
    th = jax.random.uniform(jax.random.key(1), (n,), minval=-np.pi, maxval=np.pi)
    s = jnp.stack([jnp.zeros(n), jnp.zeros(n), th], -1)
    a = jax.random.uniform(jax.random.key(2), (n, 2), minval=control.ACTION_LOW[None], maxval=control.ACTION_HIGH[None])
    d = control.transition_delta(s, control.unicycle_step(s, a, jnp.ones(2)))
    p = control.init_ensemble(key, members=2, hidden=32)
    opt = optax.adam(3e-3)

    def step(carry, i):
        p, o = carry
        g = jax.grad(control.ensemble_mse)(p, s, a, d)
        u, o = opt.update(g, o, p)
        return (optax.apply_updates(p, u), o), None

    (p, _), _ = jax.lax.scan(step, (p, opt.init(p)), jnp.arange(400))
    return p


@pytest.mark.parametrize("goal, check", [
    ((1.0, 0.0), lambda a: a[0] > 0.5),     # ahead: drive forward
    ((-1.0, 0.0), lambda a: a[0] < -0.5),   # behind: reverse (the action box allows v < 0)
    ((0.3, 0.6), lambda a: a[1] > 0.3),     # left: turn counter-clockwise
])
def test_mppi_steers_toward_goal(nominal_ensemble, goal, check):
    cfg = control.MPPIConfig(population=512)
    act, mean = control.mppi_plan(nominal_ensemble, jax.random.key(3), jnp.zeros(3), jnp.asarray(goal), jnp.zeros((5, 2)), cfg)
    assert mean.shape == (5, 2)
    assert check(np.asarray(act)), act


def test_mppi_rejects_bad_plan_shape(nominal_ensemble):
    with pytest.raises(ValueError, match="mean_seq"):
        control.mppi_plan(nominal_ensemble, jax.random.key(0), jnp.zeros(3), jnp.zeros(2), jnp.zeros((4, 2)))


def test_afm_net_conditions_per_sample_and_needs_regime():
    net = AFMNet()
    x = jnp.ones((4, 2))
    z = jax.random.normal(jax.random.key(5), (4, 7))
    p = net.init(jax.random.key(0), x, jnp.zeros((4,)), c=z)
    out = net.apply(p, x, jnp.zeros((4,)), c=z)
    assert out.shape == (4, 2)
    np.testing.assert_allclose(net.apply(p, x, jnp.zeros((4,)), c=z[::-1])[::-1], out, rtol=1e-6)
    assert not np.allclose(net.apply(p, x, jnp.zeros((4,)), c=z[::-1]), out)
    with pytest.raises(ValueError, match="regime"):
        net.apply(p, x, jnp.zeros((4,)))
