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
