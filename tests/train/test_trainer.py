"""Trainer: resume equals an unbroken run, preemption, non-finite policies, preflight, bad input."""

from __future__ import annotations

import json
import shutil
import signal

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import train_toy_run as run_toy
import train_toy as toy
from flowjax import train
from flowjax.train import preflight

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

COMMON = dict(steps=30, checkpoint_every=10, log_every=4)


def _equal_trees(a, b, *, exact=True):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        if exact:
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
        else:
            np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-9, atol=1e-12)


def _numeric(history):
    return [{k: v for k, v in r.items()} for r in history]


def _sigterm_at(step_to_kill):
    def hook(step):
        if step == step_to_kill:
            signal.raise_signal(signal.SIGTERM)

    return hook


@pytest.fixture(scope="module")
def unbroken(tmp_path_factory):
    wd = tmp_path_factory.mktemp("unbroken")
    tr = run_toy.build_trainer(wd, **COMMON)
    state = tr.run()
    return state, tr.history, wd


def test_unbroken_run_writes_metrics_and_checkpoints(unbroken):
    state, history, wd = unbroken
    assert int(state.step) == 30
    assert [r["step"] for r in history] == [4, 8, 12, 16, 20, 24, 28, 30]
    assert history[-1]["loss"] < history[0]["loss"]
    on_disk = [json.loads(line) for line in (wd / "metrics.jsonl").read_text().splitlines()]
    assert on_disk == history
    assert sorted(int(p.name) for p in (wd / "checkpoints").iterdir() if p.name.isdigit()) == [10, 20, 30]


@pytest.mark.parametrize("kill_step", [13, 20])
def test_sigterm_saves_and_resume_equals_unbroken(tmp_path, unbroken, kill_step):
    ref_state, ref_history, _ = unbroken
    tr = run_toy.build_trainer(tmp_path, on_batch=_sigterm_at(kill_step), **COMMON)
    with pytest.raises(train.Preempted) as exc:
        tr.run()
    assert exc.value.code == 0 and exc.value.step == kill_step + 1 and exc.value.signame == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handler restored
    resumed = run_toy.build_trainer(tmp_path, **COMMON)
    state = resumed.run()
    assert resumed.restored_step == kill_step + 1
    _equal_trees(state, ref_state)  # bitwise: same compiled step, same keys, same data
    assert resumed.history == ref_history  # including the interval cut by the preemption
    on_disk = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert on_disk == ref_history


def test_resume_with_scanned_dispatch_and_mesh(tmp_path, unbroken):
    ref_state, ref_history, _ = unbroken
    kw = dict(COMMON, steps_per_dispatch=4, mesh=True)
    tr = run_toy.build_trainer(tmp_path, on_batch=_sigterm_at(17), **kw)
    with pytest.raises(train.Preempted):
        tr.run()
    resumed = run_toy.build_trainer(tmp_path, **kw)
    state = resumed.run()
    _equal_trees(state, ref_state, exact=False)
    assert [r["step"] for r in resumed.history] == [r["step"] for r in ref_history]
    np.testing.assert_allclose([r["loss"] for r in resumed.history], [r["loss"] for r in ref_history], rtol=1e-9)
    assert len(state.params["l1"]["w"].devices()) == 8


def test_iterator_source_state_is_checkpointed(tmp_path):
    kw = dict(COMMON, steps=12, checkpoint_every=5)
    ref = run_toy.build_trainer(tmp_path / "ref", batch_source=toy.CountingIterator(), **kw)
    ref_state = ref.run()

    it = toy.CountingIterator()
    tr = run_toy.build_trainer(tmp_path / "run", batch_source=it, **kw)
    orig_next = it.__class__.__next__

    class Killing(toy.CountingIterator):
        def __next__(self):
            if self.position == 7:
                signal.raise_signal(signal.SIGTERM)
            return orig_next(self)

    tr = run_toy.build_trainer(tmp_path / "run", batch_source=Killing(), **kw)
    with pytest.raises(train.Preempted):
        tr.run()
    fresh = toy.CountingIterator()
    resumed = run_toy.build_trainer(tmp_path / "run", batch_source=fresh, **kw)
    state = resumed.run()
    assert resumed.restored_step == 8 and fresh.position == 12
    _equal_trees(state, ref_state)
    assert resumed.history == ref.history


def test_completed_run_is_not_rerun(unbroken):
    ref_state, ref_history, wd = unbroken
    calls = []
    tr = run_toy.build_trainer(wd, on_batch=calls.append, **COMMON)
    state = tr.run()
    assert calls == [] and tr.restored_step == 30
    _equal_trees(state, ref_state)
    assert tr.history == ref_history


def test_corrupt_newest_checkpoint_falls_back(tmp_path, unbroken):
    ref_state, ref_history, wd = unbroken
    shutil.copytree(wd, tmp_path / "wd")
    data = [p for p in (tmp_path / "wd" / "checkpoints" / "30" / "state").rglob("*") if p.is_file() and p.parent.name == "d"]
    for f in data:
        f.write_bytes(f.read_bytes()[:7])
    tr = run_toy.build_trainer(tmp_path / "wd", **COMMON)
    state = tr.run()
    assert tr.restored_step == 20 and len(tr.restore_errors) == 1
    _equal_trees(state, ref_state)
    assert tr.history == ref_history


def test_torn_metrics_line_is_ignored(tmp_path, unbroken):
    _, ref_history, wd = unbroken
    shutil.copytree(wd, tmp_path / "wd")
    shutil.rmtree(tmp_path / "wd" / "checkpoints" / "30")
    with open(tmp_path / "wd" / "metrics.jsonl", "a") as f:
        f.write('{"step": 31, "loss": 0.12')  # kill -9 in the middle of a write
    tr = run_toy.build_trainer(tmp_path / "wd", **COMMON)
    tr.run()
    assert tr.history == ref_history


def test_checkpoint_from_a_different_model_is_rejected(unbroken, tmp_path):
    _, _, wd = unbroken
    shutil.copytree(wd, tmp_path / "wd")
    tr = run_toy.build_trainer(tmp_path / "wd", hidden=12, **COMMON)
    with pytest.raises(train.CheckpointMismatchError, match=r"leaf `params\['l1'\]\['b'\]`: expected shape \(12,\)"):
        tr.run()


def test_nonfinite_skip_counts_and_continues(tmp_path):
    params = toy.init_params(jax.random.key(0))
    state, history = train.fit(
        toy.loss_fn, params, batch_fn=toy.make_batch_fn(nan_at=5), steps=10, key=jax.random.key(1), log_every=5
    )
    assert int(state.nonfinite_count) == 1
    assert history[0]["finite"] == 1.0 and history[1]["finite"] == pytest.approx(0.8)
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(state))


def test_nonfinite_stop_names_step_and_leaf_and_keeps_last_good(tmp_path):
    kw = dict(steps=12, checkpoint_every=4, log_every=2)

    def bad_batch_source(step):
        return toy.make_batch_fn(nan_at=6)(step)

    tr = run_toy.build_trainer(tmp_path / "run", nonfinite_policy="stop", **kw)
    tr.batch_fn = bad_batch_source
    with pytest.raises(train.NonFiniteError, match=r"non-finite value at step 6: first non-finite leaf is `loss`; the last good checkpoint is step 6") as exc:
        tr.run()
    assert exc.value.step == 6 and exc.value.checkpoint_step == 6
    ref = run_toy.build_trainer(tmp_path / "ref", **dict(kw, steps=6))
    ref_state = ref.run()
    with train.Checkpointer(tmp_path / "run" / "checkpoints") as ck:
        assert ck.steps() == [4, 6]
        _, saved, _ = ck.restore_latest(ref_state)
    _equal_trees(saved, ref_state)


def test_nonfinite_gradient_leaf_is_named():
    def loss_fn(params, key, batch):
        return params["a"] ** 2 + jnp.sqrt(params["b"]) + 0.0 * jnp.sum(batch), {}

    params = {"a": jnp.array(1.0), "b": jnp.array(0.0)}  # d sqrt(b)/db = inf at 0
    opt = train.make_optimizer(1e-2)
    st = train.create_train_state(params, opt, jax.random.key(0))
    new, m = jax.jit(train.make_train_step(loss_fn, opt))(st, jnp.ones((2,)))
    assert not bool(m["finite"]) and int(new.nonfinite_count) == 1
    assert train.nonfinite_leaf_name(m["nonfinite_leaf"], params) == "grads['b']"
    _equal_trees(new.params, st.params)  # "skip": the update was not applied
    assert int(new.step) == 1


def test_leaf_square_norms_match_the_global_norm_and_do_not_overflow_float16():
    from flowjax.train.state import first_nonfinite_index, leaf_square_norms

    tree = {"a": jnp.array([3.0, 4.0]), "b": {"c": jnp.full((2, 2), 0.5)}}
    np.testing.assert_allclose(np.asarray(leaf_square_norms(tree)), [25.0, 1.0])
    np.testing.assert_allclose(float(jnp.sqrt(leaf_square_norms(tree).sum())), float(optax.tree.norm(tree)), rtol=1e-6)
    big16 = {"h": jnp.full((4,), 1000.0, jnp.float16)}  # 1000^2 overflows float16, not float32
    assert leaf_square_norms(big16).dtype == jnp.float32
    assert int(first_nonfinite_index(jnp.array(0.0), big16)) == -1
    assert leaf_square_norms({}).shape == (0,) and int(first_nonfinite_index(jnp.array(1.0), {})) == -1
    # index 0 is the loss, i >= 1 the leaf i - 1; NaN, Inf and an overflowing square norm all count
    assert int(first_nonfinite_index(jnp.array(jnp.nan), tree)) == 0
    for bad in (jnp.nan, jnp.inf, 1e30):
        t = {"a": jnp.array([1.0, 2.0]), "b": {"c": jnp.array([0.0, bad], jnp.float32)}}
        assert int(first_nonfinite_index(jnp.array(1.0), t)) == 2


def test_step_metrics_norm_and_finite_flag_against_direct_computation():
    def loss_fn(params, key, batch):
        return jnp.sum(params["w"] * batch) + 0.5 * params["b"] ** 2, {}

    params = {"w": jnp.array([1.0, -2.0], jnp.float32), "b": jnp.array(3.0, jnp.float32)}
    opt = train.make_optimizer(1e-2)
    st = train.create_train_state(params, opt, jax.random.key(0))
    _, m = jax.jit(train.make_train_step(loss_fn, opt))(st, jnp.array([2.0, 6.0], jnp.float32))
    # grads: w -> batch = (2, 6), b -> 3; norm sqrt(4 + 36 + 9) = 7
    np.testing.assert_allclose(float(m["grad_norm"]), 7.0, rtol=1e-6)
    assert bool(m["finite"]) and int(m["nonfinite_leaf"]) == -1
    new, m = jax.jit(train.make_train_step(loss_fn, opt))(st, jnp.array([2.0, 1e30], jnp.float32))  # float32 square norm overflows
    assert not bool(m["finite"]) and train.nonfinite_leaf_name(m["nonfinite_leaf"], params) == "grads['w']"
    _equal_trees(new.params, st.params)


def test_scanned_fit_equals_stepwise_and_is_deterministic():
    params = toy.init_params(jax.random.key(0))
    kw = dict(batch_fn=toy.make_batch_fn(), steps=24, key=jax.random.key(1), log_every=8)
    s1, h1 = train.fit(toy.loss_fn, params, steps_per_dispatch=1, **kw)
    s1b, h1b = train.fit(toy.loss_fn, params, steps_per_dispatch=1, **kw)
    s8, h8 = train.fit(toy.loss_fn, params, steps_per_dispatch=8, **kw)
    _equal_trees(s1, s1b)  # same seed, same result, bit for bit
    assert h1 == h1b
    _equal_trees(s1, s8, exact=False)
    np.testing.assert_allclose([r["loss"] for r in h8], [r["loss"] for r in h1], rtol=1e-10)


def test_batch_fn_in_jit_matches_host_batches():
    params = toy.init_params(jax.random.key(0))

    def jax_batch(step):
        k = jax.random.fold_in(jax.random.key(7), step)
        return {"x": jax.random.normal(k, (16, 3), jnp.float64) + 1.0}

    host_batch = jax.jit(jax_batch)
    kw = dict(steps=8, key=jax.random.key(1), log_every=4)
    s_in, h_in = train.fit(toy.loss_fn, params, batch_fn=jax_batch, batch_fn_in_jit=True, **kw)
    s_host, h_host = train.fit(toy.loss_fn, params, batch_fn=lambda s: host_batch(s), batch_fn_in_jit=False, **kw)
    _equal_trees(s_in, s_host, exact=False)
    # "auto" (fit's default) traces JAX batch functions and keeps host (numpy) ones on the host
    from flowjax.train.fit import is_traceable_batch_fn

    assert is_traceable_batch_fn(jax_batch)
    assert not is_traceable_batch_fn(toy.make_batch_fn())
    assert not is_traceable_batch_fn(toy.CountingIterator())
    # the caller's parameters survive buffer donation inside the loop
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(params))


def test_eval_keep_best_and_tensorboard(tmp_path):
    evals = iter([5.0, 1.0, 3.0, 4.0, 6.0])

    def eval_fn(state):
        return {"loss": next(evals)}

    tr = run_toy.build_trainer(
        tmp_path, steps=10, checkpoint_every=2, log_every=2, keep=2, eval_fn=eval_fn,
        keep_best_metric="eval/loss", tensorboard=True,
    )
    tr.run()
    assert [r["eval/loss"] for r in tr.history] == [5.0, 1.0, 3.0, 4.0, 6.0]
    steps = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    assert steps == [4, 8, 10]  # best (eval/loss = 1 at step 4) + the last two
    assert any((tmp_path / "tensorboard").iterdir())


def test_preflight_unwritable_and_full_dirs_fail_before_training(tmp_path, monkeypatch):
    calls = []
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    tr = run_toy.build_trainer(blocker / "sub", on_batch=calls.append, **COMMON)
    with pytest.raises(train.PreflightError, match="output directory .*a_file/sub.* cannot be created"):
        tr.run()

    class Usage:
        free = 1000

    monkeypatch.setattr(preflight.shutil, "disk_usage", lambda p: Usage)
    tr = run_toy.build_trainer(tmp_path / "full", on_batch=calls.append, **COMMON)
    with pytest.raises(train.PreflightError, match=r"has 1000.0 B free, but at least .* are needed"):
        tr.run()
    assert calls == []  # nothing was trained


def test_preflight_readonly_dir(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        probe = ro / "probe"
        try:
            probe.write_text("x")
            probe.unlink()
            pytest.skip("running as root: permissions are not enforced")
        except PermissionError:
            pass
        with pytest.raises(train.PreflightError, match="is not writable"):
            preflight.check_output_dir(ro)
    finally:
        ro.chmod(0o700)


def test_data_with_nans_is_rejected():
    x = np.ones((5, 2))
    x[3, 1] = np.inf
    with pytest.raises(ValueError, match=r"`data\['x'\]` contains 1 NaN/Inf value\(s\) \(first at index \(3, 1\)\)"):
        preflight.check_finite_data("data", {"x": x, "labels": np.arange(5)})
    preflight.check_finite_data("data", {"x": np.ones((5, 2))})
    tr = run_toy.build_trainer(None, **dict(COMMON, steps=3))
    tr.batch_fn = toy.make_batch_fn(nan_at=0)
    with pytest.raises(ValueError, match=r"`batch \(step 0\)\['x'\]` contains 1 NaN/Inf"):
        tr.run()


def test_bad_batches_fail_fast():
    tr = run_toy.build_trainer(None, **dict(COMMON, steps=6))
    good = toy.make_batch_fn()
    tr.batch_fn = lambda s: good(s) if s < 3 else {"x": good(s)["x"][:8]}
    with pytest.raises(ValueError, match=r"`batch\['x'\]` for step 3 has shape \(8, 3\) dtype float64, but the first batch had shape \(16, 3\)"):
        tr.run()
    tr = run_toy.build_trainer(None, **dict(COMMON, steps=2))
    tr.batch_fn = lambda s: {"x": good(s)["x"], "y": np.zeros((4,))}
    with pytest.raises(ValueError, match=r"`batch \(step 0\)\['y'\]` has batch size 4, but other leaves .* have 16"):
        tr.run()
    tr = run_toy.build_trainer(None, mesh=True, **dict(COMMON, steps=2))
    tr.batch_fn = lambda s: {"x": good(s)["x"][:12]}
    with pytest.raises(ValueError, match="batch size 12 .* not divisible by the 8 devices"):
        tr.run()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(total_steps=0), "`total_steps` must be a positive integer, got 0"),
        (dict(total_steps=2.5), "`total_steps` must be a positive integer, got 2.5"),
        (dict(checkpoint_every=-1), "`checkpoint_every` must be a positive integer"),
        (dict(nonfinite_policy="ignore"), r"`nonfinite_policy` must be one of \('skip', 'stop'\), got 'ignore'"),
        (dict(keep_best_mode="lowest"), "`keep_best_mode` must be 'min' or 'max'"),
        (dict(steps_per_dispatch=0), "`steps_per_dispatch` must be a positive integer"),
        (dict(keep_best_metric="eval/loss", workdir=None), "`keep_best_metric` needs a `workdir`"),
    ],
)
def test_bad_trainer_arguments(kwargs, match):
    params = toy.init_params(jax.random.key(0))
    opt = train.make_optimizer()
    state = train.create_train_state(params, opt, jax.random.key(1))
    args = dict(workdir=None, total_steps=5, progress=False)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        train.Trainer(train.make_train_step(toy.loss_fn, opt), state, toy.make_batch_fn(), **args)


def test_bad_trainer_types():
    params = toy.init_params(jax.random.key(0))
    opt = train.make_optimizer()
    state = train.create_train_state(params, opt, jax.random.key(1))
    step = train.make_train_step(toy.loss_fn, opt)
    with pytest.raises(TypeError, match="`state` must be a flowjax.train.TrainState, got dict"):
        train.Trainer(step, params, toy.make_batch_fn(), workdir=None, total_steps=2)
    with pytest.raises(TypeError, match="`batch_fn` must be a function batch_fn\\(step\\) -> batch or an iterator"):
        train.Trainer(step, state, 42, workdir=None, total_steps=2)
    with pytest.raises(TypeError, match="`step_fn` must be callable"):
        train.Trainer(None, state, toy.make_batch_fn(), workdir=None, total_steps=2)
    with pytest.raises(ValueError, match="`nonfinite` must be one of"):
        train.make_train_step(toy.loss_fn, opt, nonfinite="drop")
