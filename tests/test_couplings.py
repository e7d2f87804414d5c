"""Couplings: valid permutations, optimality, uniform plan marginals, labels, per-shard use."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from flowjax import couplings


def _cost(x0, x1, i0, i1):
    return float(jnp.sum((x0[i0] - x1[i1]) ** 2))


def test_exact_ot_is_optimal_by_brute_force():
    x0 = jax.random.normal(jax.random.key(0), (6, 2))
    x1 = jax.random.normal(jax.random.key(1), (6, 2)) + 1.0
    i0, i1 = couplings.ot_exact()(jax.random.key(2), x0, x1)
    assert sorted(np.asarray(i0).tolist()) == list(range(6))
    best = min(_cost(x0, x1, jnp.array(p), jnp.arange(6)) for p in itertools.permutations(range(6)))
    np.testing.assert_allclose(_cost(x0, x1, i0, i1), best, rtol=1e-5)
    indep = couplings.independent()(jax.random.key(2), x0, x1)
    assert _cost(x0, x1, *indep) >= best


def test_sinkhorn_plan_has_uniform_marginals_and_approaches_exact():
    x0 = jax.random.normal(jax.random.key(3), (32, 2))
    x1 = jax.random.normal(jax.random.key(4), (32, 2)) * 0.5 + 2.0
    plan = couplings.sinkhorn_plan(x0, x1, epsilon=0.01)
    np.testing.assert_allclose(plan.sum(0), np.full(32, 1 / 32), atol=1e-4)
    np.testing.assert_allclose(plan.sum(1), np.full(32, 1 / 32), atol=1e-4)
    i0, _ = couplings.ot_sinkhorn(0.001, sample=False)(jax.random.key(5), x0, x1)
    j0, _ = couplings.ot_exact()(jax.random.key(5), x0, x1)
    assert _cost(x0, x1, i0, jnp.arange(32)) <= 1.02 * _cost(x0, x1, j0, jnp.arange(32))


def test_sampled_plan_indices_are_valid():
    x0 = jax.random.normal(jax.random.key(6), (16, 3))
    x1 = jax.random.normal(jax.random.key(7), (16, 3))
    i0, i1 = jax.jit(couplings.ot_sinkhorn(0.1))(jax.random.key(8), x0, x1)
    assert i0.shape == (16,) and bool(jnp.all((i0 >= 0) & (i0 < 16)))
    np.testing.assert_array_equal(i1, np.arange(16))


def test_class_conditional_pairs_within_labels():
    x0 = jax.random.normal(jax.random.key(9), (12, 2))
    x1 = jax.random.normal(jax.random.key(10), (12, 2))
    labels = jnp.arange(12) % 3
    i0, i1 = couplings.class_conditional()(jax.random.key(11), x0, x1, labels=labels)
    np.testing.assert_array_equal(labels[i0], labels[i1])
    with pytest.raises(ValueError, match="labels"):
        couplings.class_conditional()(jax.random.key(11), x0, x1)


def test_ot_per_data_shard():
    """Under data parallelism each shard pairs its own samples (a local permutation per shard)."""
    assert len(jax.devices()) == 8
    mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Explicit,))
    x0 = jax.random.normal(jax.random.key(12), (64, 2))
    x1 = jax.random.normal(jax.random.key(13), (64, 2)) + 2.0
    sharding = jax.sharding.NamedSharding(mesh, P("data"))
    x0s, x1s = jax.device_put(x0, sharding), jax.device_put(x1, sharding)
    couple = couplings.ot_exact()
    i0, i1 = map(np.asarray, jax.jit(couplings.per_shard(couple, mesh))(jax.random.key(0), x0s, x1s))
    np.testing.assert_array_equal(i1, np.arange(64))
    for s in range(8):
        sl = slice(8 * s, 8 * s + 8)
        local0, _ = couple(jax.random.key(0), x0[sl], x1[sl])
        np.testing.assert_array_equal(i0[sl], np.asarray(local0) + 8 * s)


@pytest.mark.parametrize("make", [couplings.ot_exact, lambda: couplings.ot_sinkhorn(0.1, sample=True)])
def test_shard_local_equals_per_shard(make):
    """The mesh-free blockwise pairing and the shard_map one are the same plan (same keys per block)."""
    mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Explicit,))
    x0 = jax.random.normal(jax.random.key(14), (64, 2))
    x1 = jax.random.normal(jax.random.key(15), (64, 2)) + 1.0
    sharding = jax.sharding.NamedSharding(mesh, P("data"))
    x0s, x1s = jax.device_put(x0, sharding), jax.device_put(x1, sharding)
    a = jax.jit(couplings.per_shard(make(), mesh))(jax.random.key(3), x0s, x1s)
    b = jax.jit(couplings.shard_local(make(), 8))(jax.random.key(3), x0, x1)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="same shape"):
        couplings.ot_exact()(jax.random.key(0), jnp.ones((4, 2)), jnp.ones((5, 2)))
    with pytest.raises(ValueError, match="epsilon"):
        couplings.ot_sinkhorn(0.0)
