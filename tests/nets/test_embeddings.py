"""Exact checks of the sinusoidal time embedding."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from flowjax.nets.embeddings import TIME_SCALE, pair_time_embedding, timestep_embedding


def test_timestep_embedding_closed_form():
    t = jnp.array([0.0, 0.25, 1.0], dtype=jnp.float64)
    dim, period = 6, 10_000.0
    emb = np.asarray(timestep_embedding(t, dim, max_period=period))
    half = dim // 2
    for i, ti in enumerate([0.0, 0.25, 1.0]):
        for k in range(half):
            f = math.exp(-math.log(period) * k / half)
            assert emb[i, k] == pytest.approx(math.cos(TIME_SCALE * ti * f), abs=1e-9)
            assert emb[i, half + k] == pytest.approx(math.sin(TIME_SCALE * ti * f), abs=1e-9)


def test_timestep_embedding_scale_and_mlp_time_scale():
    import jax

    from flowjax.nets import MLP, init_params

    t = jnp.array([0.3, 0.9])
    np.testing.assert_allclose(timestep_embedding(t, 8, scale=2.0), timestep_embedding(2.0 * t / TIME_SCALE, 8), rtol=1e-6)
    with pytest.raises(ValueError, match="`scale`"):
        timestep_embedding(t, 8, scale=0.0)
    x = jnp.ones((2, 2))
    slow, fast = MLP(hidden=8, depth=1, time_scale=1.0), MLP(hidden=8, depth=1)
    params = init_params(fast, jax.random.key(0), x)  # same parameter tree: only the feature scale differs
    assert not np.allclose(slow.apply(params, x, t), fast.apply(params, x, t))
    # d/dt of the net: bounded by the scale of the features (1 vs 1000) times the weights
    d_slow = jax.jacfwd(lambda tt: slow.apply(params, x[:1], tt))(t[:1])
    d_fast = jax.jacfwd(lambda tt: fast.apply(params, x[:1], tt))(t[:1])
    assert np.abs(d_slow).max() < np.abs(d_fast).max()


def test_timestep_embedding_shapes_and_errors():
    assert timestep_embedding(0.5, 8).shape == (1, 8)
    assert timestep_embedding(jnp.zeros(4), 9).shape == (4, 9)
    np.testing.assert_array_equal(timestep_embedding(jnp.zeros(2), 9)[:, -1], 0.0)
    with pytest.raises(ValueError, match="`dim`"):
        timestep_embedding(jnp.zeros(2), 0)
    with pytest.raises(ValueError, match="`t`"):
        timestep_embedding(jnp.zeros((2, 2)), 8)


def test_pair_time_embedding_modes():
    s = jnp.array([0.1, 0.2])
    t = jnp.array([0.5, 0.9])
    st = pair_time_embedding(s, t, 16, mode="st")
    np.testing.assert_allclose(st[:, :8], timestep_embedding(s, 8))
    np.testing.assert_allclose(st[:, 8:], timestep_embedding(t, 8))
    tdt = pair_time_embedding(s, t, 16, mode="t_dt")
    np.testing.assert_allclose(tdt[:, 8:], timestep_embedding(t - s, 8))
    with pytest.raises(ValueError, match="`mode`"):
        pair_time_embedding(s, t, 16, mode="bad")
