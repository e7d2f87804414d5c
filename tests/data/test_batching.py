"""Stateless batching: determinism, epoch coverage, process partitions, NaN rejection, jit."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowjax import keystreams
from flowjax.data import make_batch_fn, make_sampler_batch_fn, sample_toy2d


def _data(n=23):
    return jnp.arange(n, dtype=jnp.float32)[:, None] * jnp.ones((1, 3), jnp.float32)


def test_pure_function_of_step():
    bf = make_batch_fn(_data(), 5, seed=7, process_index=0, process_count=1)
    a = [np.asarray(bf(k)) for k in range(10)]
    bf2 = make_batch_fn(_data(), 5, seed=7, process_index=0, process_count=1)
    for k in reversed(range(10)):  # any order, any new instance: same batch
        np.testing.assert_array_equal(a[k], bf2(k))
    other = make_batch_fn(_data(), 5, seed=8, process_index=0, process_count=1)
    assert not np.array_equal(np.concatenate(a[:4]), np.concatenate([other(k) for k in range(4)]))


@pytest.mark.parametrize("drop_last", [True, False])
def test_epoch_coverage(drop_last):
    n, b = 23, 5
    bf = make_batch_fn(_data(n), b, seed=1, drop_last=drop_last, process_index=0, process_count=1)
    s = bf.steps_per_epoch
    assert s == (4 if drop_last else 5)
    for epoch in range(3):
        ids = np.concatenate([np.asarray(bf(epoch * s + j))[:, 0] for j in range(s)]).astype(int)
        if drop_last:
            assert len(set(ids)) == len(ids) == s * b  # no repeats inside an epoch
        else:
            assert set(ids) == set(range(n))  # every example at least once
            assert len(ids) == s * b
    e0 = np.concatenate([bf.global_indices(j) for j in range(s)])
    e1 = np.concatenate([bf.global_indices(s + j) for j in range(s)])
    assert not np.array_equal(e0, e1)  # fresh permutation each epoch


def test_traced_step_under_jit():
    bf = make_batch_fn({"x": _data(), "y": jnp.arange(23, dtype=jnp.int32)}, 4, seed=0, process_index=0, process_count=1)
    f = jax.jit(lambda k: bf(k))
    for k in [0, 3, 5, 17]:
        out = f(jnp.asarray(k))
        ref = bf(k)
        np.testing.assert_array_equal(out["x"], ref["x"])
        np.testing.assert_array_equal(out["x"][:, 0].astype(np.int32), out["y"])  # rows stay aligned

    def scan_body(c, k):
        return c + bf(k)["x"].sum(), None

    total, _ = jax.lax.scan(scan_body, jnp.float32(0.0), jnp.arange(5))
    assert float(total) == pytest.approx(sum(float(bf(k)["x"].sum()) for k in range(5)))


@pytest.mark.parametrize("pc", [2, 4])
def test_process_slices_partition_global_batch(pc):
    b = 8
    full = make_batch_fn(_data(), b, seed=3, process_index=0, process_count=1)
    for step in [0, 1, 2, 9]:
        parts = [make_batch_fn(_data(), b, seed=3, process_index=p, process_count=pc)(step) for p in range(pc)]
        assert all(part.shape == (b // pc, 3) for part in parts)
        np.testing.assert_array_equal(np.concatenate(parts), full(step))


def test_sampler_batch_fn():
    sample = functools.partial(sample_toy2d, "moons")
    bf = make_sampler_batch_fn(sample, 8, seed=2, process_index=0, process_count=1)
    np.testing.assert_array_equal(bf(5), sample(keystreams.data_key(2, 5), 8))
    assert not np.array_equal(bf(5), bf(6))
    np.testing.assert_array_equal(jax.jit(bf)(jnp.asarray(5)), bf(5))
    parts = [make_sampler_batch_fn(sample, 8, seed=2, process_index=p, process_count=4)(5) for p in range(4)]
    np.testing.assert_array_equal(np.concatenate(parts), bf(5))


def test_rejects_nan_inf():
    bad = np.asarray(_data()).copy()
    bad[11, 1] = np.nan
    with pytest.raises(ValueError, match=r"NaN or Inf.*index 11"):
        make_batch_fn(bad, 4, seed=0)
    bad[11, 1] = np.inf
    with pytest.raises(ValueError, match="NaN or Inf"):
        make_batch_fn({"x": bad}, 4, seed=0)
    with pytest.raises(ValueError, match="NaN or Inf"):
        make_sampler_batch_fn(lambda k, n: jnp.full((n, 2), jnp.nan), 4, seed=0)


def test_bad_arguments():
    with pytest.raises(ValueError, match="divisible"):
        make_batch_fn(_data(), 6, seed=0, process_index=0, process_count=4)
    with pytest.raises(ValueError, match="process_index"):
        make_batch_fn(_data(), 8, seed=0, process_index=4, process_count=4)
    with pytest.raises(ValueError, match="exceeds"):
        make_batch_fn(_data(5), 8, seed=0)
    with pytest.raises(ValueError, match="leading axis"):
        make_batch_fn({"a": _data(5), "b": _data(6)}, 2, seed=0)
    with pytest.raises(ValueError, match="leading size"):
        make_sampler_batch_fn(lambda k, n: jnp.zeros((n + 1, 2)), 4, seed=0)
    # drop_last=False with B > N wraps around.
    bf = make_batch_fn(_data(3), 8, seed=0, drop_last=False, process_index=0, process_count=1)
    assert set(np.asarray(bf(0))[:, 0].astype(int)) == {0, 1, 2}
