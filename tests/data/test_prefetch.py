"""flowjax.data.prefetch: same batches as the wrapped batch_fn, made ahead on several threads."""

import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowjax import train
from flowjax.data import prefetch
from flowjax.train.fit import is_traceable_batch_fn


def _batch(step):
    return {"x": np.random.default_rng(step).normal(size=(8, 3)) + 1.0}


def test_returns_batch_fn_of_each_step_in_order_after_jumps_and_repeats():
    with prefetch(_batch, workers=2, depth=3) as batches:
        for step in [0, 1, 2, 2, 3, 7, 8, 1, 2, 50]:
            np.testing.assert_array_equal(batches(step)["x"], _batch(step)["x"])
        np.testing.assert_array_equal(batches(np.int64(51))["x"], _batch(51)["x"])
        np.testing.assert_array_equal(batches(jnp.asarray(52))["x"], _batch(52)["x"])


def test_runs_workers_batches_at_once_and_ahead_of_the_caller():
    lock, running, most, made = threading.Lock(), [0], [0], []

    def slow_batch(step):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        threading.Event().wait(0.2)
        with lock:
            running[0] -= 1
            made.append(step)
        return step

    batches = prefetch(slow_batch, workers=2, depth=4)
    assert [batches(k) for k in range(6)] == list(range(6))
    assert most[0] == 2  # two batches were made at the same time, never more
    # the call for step 5 scheduled steps 6 to 8, which are made without being asked for
    for _ in range(100):
        if {6, 7, 8} <= set(made):
            break
        threading.Event().wait(0.05)
    assert {6, 7, 8} <= set(made), f"made: {sorted(made)}"
    batches.close()


def test_an_error_for_one_step_is_raised_by_that_step_only():
    def flaky(step):
        if step == 3:
            raise RuntimeError("bad shard at step 3")
        return step

    with prefetch(flaky, workers=2) as batches:
        assert [batches(k) for k in range(3)] == [0, 1, 2]
        with pytest.raises(RuntimeError, match="bad shard at step 3"):
            batches(3)
        assert batches(4) == 4


def test_cannot_be_traced_so_fit_keeps_it_on_the_host():
    batches = prefetch(_batch, workers=1)
    with pytest.raises(TypeError, match="cannot be traced"):
        jax.eval_shape(batches, jax.ShapeDtypeStruct((), jnp.int32))
    assert not is_traceable_batch_fn(batches)
    batches.close()


def test_bad_arguments_and_use_after_close():
    with pytest.raises(TypeError, match="callable"):
        prefetch(3)
    with pytest.raises(ValueError, match="workers"):
        prefetch(_batch, workers=0)
    with pytest.raises(ValueError, match="depth"):
        prefetch(_batch, workers=3, depth=2)
    batches = prefetch(_batch, workers=1)
    for bad in (1.0, True, "3", np.zeros(2, np.int32)):
        with pytest.raises(TypeError, match="integer"):
            batches(bad)
    with pytest.raises(ValueError, match="non-negative"):
        batches(-1)
    batches.close()
    with pytest.raises(RuntimeError, match="closed"):
        batches(0)


def _loss(params, key, batch):
    err = batch["x"] - params["m"][None, :]
    return jnp.mean(err**2), {}


def test_fit_with_prefetched_batches_equals_fit_with_the_plain_batch_fn_and_resumes_exactly(tmp_path):
    params = {"m": jnp.zeros(3)}
    kw = dict(steps=12, key=jax.random.key(1), log_every=2, learning_rate=0.05, ema_decay=None)
    plain, h_plain = train.fit(_loss, params, batch_fn=_batch, **kw)
    with prefetch(_batch, workers=2) as batches:
        fetched, h_fetched = train.fit(_loss, params, batch_fn=batches, **kw)
    np.testing.assert_array_equal(np.asarray(plain.params["m"]), np.asarray(fetched.params["m"]))
    assert h_plain == h_fetched
    # interrupted after 6 steps, resumed with a new prefetcher: the same end state
    with prefetch(_batch, workers=2) as batches:
        train.fit(_loss, params, batch_fn=batches, workdir=tmp_path, checkpoint_every=3, **dict(kw, steps=6))
    asked = []

    def recorded_batch(step):
        asked.append(step)
        return _batch(step)

    with prefetch(recorded_batch, workers=2) as batches:
        resumed, _ = train.fit(_loss, params, batch_fn=batches, workdir=tmp_path, checkpoint_every=3, **kw)
    # fit builds one example batch (step 0) before the trainer restores the checkpoint; the
    # training loop itself continued from step 6
    assert asked[0] == 0 and min(asked[1:]) == 6
    np.testing.assert_array_equal(np.asarray(plain.params["m"]), np.asarray(resumed.params["m"]))
