"""Action Flow Matching pieces: target, analytic bridge velocity with the midpoint sampler,
conditioning, controller logic, unicycle data."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowjax.data import unicycle
from flowjax.structured import action
from flowjax.structured.nets import ConditionalMLP


def test_aligned_model_target_is_zero_and_transport_is_identity():
    a = jax.random.uniform(jax.random.key(0), (8, 2))
    assert float(action.afm_loss(lambda x, t: jnp.zeros_like(x), jax.random.key(1), a, x0=a)[0]) == 0.0
    np.testing.assert_allclose(action.midpoint_transport(lambda x, t: jnp.zeros_like(x), a), a)


@pytest.mark.parametrize("g", [0.05, 0.1, 0.5, 2.0, 2.5])
def test_midpoint_with_analytic_bridge_velocity_maps_to_a_over_g(g):
    a = jax.random.uniform(jax.random.key(2), (16, 2), minval=-1.0, maxval=1.0)
    out = action.midpoint_transport(lambda x, t: action.bridge_velocity(x, t, gain=jnp.full((1, 2), g)), a)
    np.testing.assert_allclose(out, a / g, rtol=1e-12, atol=1e-12)


def test_loss_at_constant_bridge_velocity_is_zero_and_one_euler_step_exact():
    a_plan = jax.random.normal(jax.random.key(3), (8, 2))
    a_int = -a_plan / 1.7
    v = lambda x, t, c: c - x * 0  # network told a_plan: v = a_int - a_plan (constant)
    d = a_int - a_plan
    assert float(action.afm_loss(v, jax.random.key(4), a_int, x0=a_plan, c=d)[0]) == 0.0
    np.testing.assert_allclose(action.midpoint_transport(v, a_plan, steps=1, c=d), a_int, atol=1e-12)


def test_conditioning_is_per_sample():
    net = ConditionalMLP(hidden=16, depth=2, time_dim=8)
    x = jnp.ones((4, 2))
    z = jax.random.normal(jax.random.key(5), (4, 7))
    p = net.init(jax.random.key(0), x, jnp.zeros((4,)), c=z)
    out = net.apply(p, x, jnp.zeros((4,)), c=z)
    out_perm = net.apply(p, x, jnp.zeros((4,)), c=z[::-1])
    np.testing.assert_allclose(out_perm[::-1], out, rtol=1e-6)
    assert not np.allclose(out_perm, out)


def test_regime_logic():
    e = jnp.array([[0.5, 0.0, 0.0], [2.0, 0.0, 0.0]])
    used, raw, nxt = action.regime_update(e, jnp.array([False, False]), threshold=1.0)
    np.testing.assert_allclose(used[0], 0.0)
    np.testing.assert_allclose(used[1], e[1])
    assert not bool(raw.any()) and nxt.tolist() == [False, True]
    _, raw2, nxt2 = action.regime_update(e, nxt, threshold=1.0)
    assert raw2.tolist() == [False, True] and nxt2.tolist() == [False, False]


def test_unicycle_pairs_realise_planned_transition():
    rng = np.random.default_rng(0)
    gains = np.array([[1.5, 0.8], [0.6, 2.0]])
    d = unicycle.make_afm_pairs(rng, 256, gains)
    s = np.stack([np.zeros(256), np.zeros(256), d["z"][:, 0]], -1)
    inside = np.all(np.abs(d["a_plan"] / d["gains"]) <= unicycle.ACTION_HIGH, axis=1)
    realised = unicycle.step(s, d["a_int"], d["gains"])
    planned = unicycle.step(s, d["a_plan"])
    np.testing.assert_allclose(unicycle.state_error(realised, planned)[inside], 0.0, atol=1e-12)
    # regime error identifies the gains (nonzero when g != 1)
    assert np.all(np.linalg.norm(d["z"][:, 5:], axis=1) > 0)
