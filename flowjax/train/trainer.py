"""The training loop: a readable ``for`` loop over steps with checkpoints, logging and preemption.

``Trainer.run()`` does, in order:

1. *Preflight*: validate arguments; check ``workdir`` is writable and has room for ``keep + 2``
   copies of the state (:mod:`flowjax.train.preflight`).
2. *Resume*: restore the newest complete checkpoint in ``workdir/checkpoints`` that reads back
   exactly (corrupt ones are moved aside, see :mod:`flowjax.train.checkpoint`), together with the
   data position and the metrics of the unfinished logging interval; drop ``metrics.jsonl``
   records written after it.
3. *Loop*: for each dispatch, fetch the batches for steps ``[s, s + n)`` (``batch_fn(step)`` or the
   iterator), run ``n`` steps (one jitted call; ``jax.lax.scan`` when ``n > 1``), then log, eval,
   checkpoint at their boundaries. Everything random is derived from ``(seed, step)``: the step's
   PRNG key is ``keystreams.train_key(state.key, state.step)`` and the batch is a function of the step (or of a
   saved iterator state), so a resumed run equals an unbroken one.
4. *Preemption*: SIGTERM (or a first Ctrl-C) sets a flag; after the current dispatch the loop
   saves a checkpoint, waits for it to be committed and raises :class:`Preempted` (a
   ``SystemExit`` with code 0), so the process exits cleanly. ``kill -9`` needs no handler: saves
   are atomic and the next run resumes from the newest complete checkpoint.
5. *Non-finite steps*: the jitted step reports ``finite`` and the first non-finite leaf; with
   ``nonfinite_policy="skip"`` the run continues (the step function skipped the update and counts
   it in ``state.nonfinite_count``); with ``"stop"`` the loop saves the last good state and raises
   :class:`NonFiniteError` naming the step and the leaf.

:func:`flowjax.train.fit` wraps this for experiments: build optimizer, state and step, run, return
``(state, history)``; without ``workdir`` nothing touches the disk.
"""

from __future__ import annotations

import contextlib
import functools
import math
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec

from flowjax.train import preflight
from flowjax.train import sharding as shd
from flowjax.train.checkpoint import Checkpointer, abstract_state, tree_nbytes
from flowjax.train.metrics_log import MetricWriter
from flowjax.train.state import (
    TrainState,
    nonfinite_leaf_name,
)

NONFINITE_TRAINER_POLICIES = ("skip", "stop")
_INTERNAL_METRICS = ("nonfinite_leaf",)


class Preempted(SystemExit):
    """Raised after the final checkpoint when the run was asked to stop (SIGTERM / Ctrl-C).

    A ``SystemExit`` with code 0: uncaught, the process exits cleanly; ``except Exception`` blocks
    do not swallow it. ``step`` is the step of the final checkpoint.
    """

    def __init__(self, step: int, signame: str):
        super().__init__(0)
        self.step = step
        self.signame = signame

    def __str__(self) -> str:
        return f"preempted by {self.signame}; final checkpoint at step {self.step}"


class NonFiniteError(FloatingPointError):
    """A step produced a NaN/Inf loss or gradient under ``nonfinite_policy="stop"``."""

    def __init__(self, step: int, leaf: str, checkpoint_step: int | None, workdir: Path | None):
        self.step, self.leaf, self.checkpoint_step = step, leaf, checkpoint_step
        where = (
            f"; the last good checkpoint is step {checkpoint_step} in {workdir}"
            if checkpoint_step is not None
            else "; no checkpoint was written"
        )
        super().__init__(f"non-finite value at step {step}: first non-finite leaf is `{leaf}`{where}.")


def _check_pos_int(name: str, v: Any, *, allow_none: bool = False) -> None:
    if v is None and allow_none:
        return
    if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
        raise ValueError(f"`{name}` must be a positive integer{' or None' if allow_none else ''}, got {v!r}.")


def _is_iterator_source(batch_fn: Any) -> bool:
    return hasattr(batch_fn, "get_state") and hasattr(batch_fn, "set_state") and hasattr(batch_fn, "__next__")


def _stack(batches: list[Any]) -> Any:
    def stack(*xs):
        if any(isinstance(x, jax.Array) for x in xs):
            return jnp.stack(xs)
        return np.stack([np.asarray(x) for x in xs])

    return jax.tree.map(stack, *batches)


def _encode_iter_state(state: Any) -> dict:
    if isinstance(state, bytes):
        return {"kind": "bytes", "value": state.decode("latin-1")}
    return {"kind": "json", "value": state}


def _decode_iter_state(d: dict) -> Any:
    if d["kind"] == "bytes":
        return d["value"].encode("latin-1")
    return d["value"]


class _SignalFlag:
    """Installs SIGTERM/SIGINT handlers that set a flag (main thread only); restores on exit."""

    def __init__(self, enabled: bool):
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.signame: str | None = None
        self._old: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        self.signame = signal.Signals(signum).name
        if signum == signal.SIGINT:  # a second Ctrl-C interrupts for real
            signal.signal(signal.SIGINT, self._old.get(signal.SIGINT, signal.default_int_handler))

    def __enter__(self) -> "_SignalFlag":
        if self.enabled:
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()


@functools.lru_cache(maxsize=64)
def _compiled_runner(
    step_fn: Callable, jit_batch_fn: Callable | None, n: int, scanned: bool, sh_key: Any, donate: bool
) -> Callable:
    """Jitted ``run(state, batch) -> (state, metrics stacked over steps)``, cached across Trainers.

    The cache (keyed on the step function object, the dispatch length and the shardings) means a
    Trainer re-created in the same process, e.g. to resume, does not compile again.
    """
    if sh_key is None:
        st_sh = b_sh = bs_sh = rep = None
    else:
        leaves, treedef, b_sh, bs_sh, rep = sh_key
        st_sh = jax.tree.unflatten(treedef, leaves)

    def get_batch(state, batch):
        if jit_batch_fn is None:
            return batch
        batch = jit_batch_fn(state.step)
        if b_sh is not None:
            batch = jax.lax.with_sharding_constraint(batch, b_sh)
        return batch

    # The program is named train_dispatch (compile logs, profiles, experiments.run's compile times).
    if not scanned:

        def train_dispatch(state, batch):
            state, metrics = step_fn(state, get_batch(state, batch))
            return state, jax.tree.map(lambda m: jnp.expand_dims(m, 0), metrics)

        batch_sh = b_sh
    else:

        def train_dispatch(state, batches):
            return jax.lax.scan(lambda s, b: step_fn(s, get_batch(s, b)), state, batches, length=n)

        batch_sh = bs_sh
    if jit_batch_fn is not None:
        batch_sh = None
    donate_argnums = (0,) if donate else ()
    if st_sh is None:
        return jax.jit(train_dispatch, donate_argnums=donate_argnums)
    return jax.jit(train_dispatch, in_shardings=(st_sh, batch_sh), out_shardings=(st_sh, rep), donate_argnums=donate_argnums)


class Trainer:
    """Run ``step_fn`` for ``total_steps`` with checkpoints, metrics and preemption handling.

    Args:
      step_fn: pure ``step(state, batch) -> (state, metrics)`` (e.g. from
        :func:`flowjax.train.make_train_step`); ``metrics`` is a dict of scalars.
      state: the initial :class:`TrainState`; also the template (structure, shardings) that a
        checkpoint is restored onto.
      batch_fn: either a pure function ``batch_fn(step) -> batch`` (preferred: the data position
        is the step) or an iterator with ``get_state()`` / ``set_state()`` (e.g. a grain
        iterator), whose state is saved as JSON in each checkpoint.
      workdir: output directory (checkpoints, ``metrics.jsonl``, TensorBoard); ``None`` keeps
        everything in memory (no checkpoints, no resume).
      total_steps: the step count at which training ends.
      checkpoint_every: save every this many steps (and at the end, and on preemption).
      keep: number of recent checkpoints kept.
      keep_best_metric: also keep the best checkpoint by this history key (e.g. ``"eval/loss"``).
      keep_best_mode: ``"min"`` or ``"max"``.
      log_every: one history record per this many steps, holding the *mean* of each metric over
        those steps.
      eval_fn: ``eval_fn(state) -> dict`` of scalars, run every ``eval_every`` steps and at the end;
        recorded in the history with an ``eval/`` prefix.
      eval_every: see ``eval_fn`` (default: ``checkpoint_every``).
      mesh: a mesh from :func:`flowjax.train.sharding.make_mesh`; the state is sharded with
        :func:`~flowjax.train.sharding.state_sharding`, the batch over ``("data", "fsdp")``.
      nonfinite_policy: ``"skip"`` (continue; the step function decides whether the update was
        applied) or ``"stop"`` (save the last good state and raise :class:`NonFiniteError`).
      progress: show a tqdm progress bar (process 0 only).
      tensorboard: also write TensorBoard scalars (tensorboardX) to ``workdir/tensorboard``.
      steps_per_dispatch: run up to this many steps per jitted call with ``jax.lax.scan`` over a
        stacked batch (fewer Python round trips; same results to float tolerance).
      batch_fn_in_jit: call ``batch_fn(state.step)`` inside the jitted step (``batch_fn`` must then
        be a traceable JAX function of the step; no host-to-device copy).
      state_sharding_kwargs: extra keyword arguments for
        :func:`~flowjax.train.sharding.state_sharding` (``logical_axes``, ``rules``, ``min_size``).
      async_checkpoint: write checkpoints in a background thread.
      handle_signals: install the SIGTERM / SIGINT handlers during :meth:`run` (only with a
        ``workdir``: without one there is nothing to save).
      min_free_bytes: free space required in ``workdir`` (default: ``(keep + 2) x`` state size).
      donate: donate the state's buffers to the jitted step (not with ``nonfinite_policy="stop"``);
        the initial state is copied first, so the caller's arrays stay valid.

    After :meth:`run`, ``history`` holds the logged records (also in ``workdir/metrics.jsonl``),
    ``start_step`` the step it resumed from and ``restored_step`` the checkpoint used (or ``None``).
    """

    def __init__(
        self,
        step_fn: Callable[[TrainState, Any], tuple[TrainState, dict]],
        state: TrainState,
        batch_fn: Callable[[int], Any] | Iterator[Any],
        *,
        workdir: str | Path | None,
        total_steps: int,
        checkpoint_every: int = 1000,
        keep: int = 3,
        keep_best_metric: str | None = None,
        keep_best_mode: str = "min",
        log_every: int = 100,
        eval_fn: Callable[[TrainState], dict] | None = None,
        eval_every: int | None = None,
        mesh: jax.sharding.Mesh | None = None,
        nonfinite_policy: str = "skip",
        progress: bool = True,
        tensorboard: bool = False,
        steps_per_dispatch: int = 1,
        batch_fn_in_jit: bool = False,
        state_sharding_kwargs: dict | None = None,
        async_checkpoint: bool = True,
        handle_signals: bool = True,
        min_free_bytes: int | None = None,
        donate: bool = True,
    ):
        if not callable(step_fn):
            raise TypeError(f"`step_fn` must be callable, got {type(step_fn).__name__}.")
        if not isinstance(state, TrainState):
            raise TypeError(f"`state` must be a flowjax.train.TrainState, got {type(state).__name__}.")
        self.iterator_source = _is_iterator_source(batch_fn)
        if not self.iterator_source and not callable(batch_fn):
            raise TypeError(
                "`batch_fn` must be a function batch_fn(step) -> batch or an iterator with "
                f"get_state()/set_state(), got {type(batch_fn).__name__}."
            )
        if batch_fn_in_jit and self.iterator_source:
            raise ValueError("`batch_fn_in_jit=True` needs a function batch_fn(step), not an iterator.")
        if self.iterator_source and jax.process_count() > 1:
            raise ValueError(
                "an iterator `batch_fn` is supported on one process only (its state is saved by process 0); "
                "on several hosts pass a function batch_fn(step) (e.g. flowjax.data.make_batch_fn)."
            )
        _check_pos_int("total_steps", total_steps)
        _check_pos_int("checkpoint_every", checkpoint_every)
        _check_pos_int("keep", keep)
        _check_pos_int("log_every", log_every)
        _check_pos_int("eval_every", eval_every, allow_none=True)
        _check_pos_int("steps_per_dispatch", steps_per_dispatch)
        if nonfinite_policy not in NONFINITE_TRAINER_POLICIES:
            raise ValueError(
                f"`nonfinite_policy` must be one of {NONFINITE_TRAINER_POLICIES}, got {nonfinite_policy!r}."
            )
        if keep_best_mode not in ("min", "max"):
            raise ValueError(f"`keep_best_mode` must be 'min' or 'max', got {keep_best_mode!r}.")
        if eval_fn is not None and not callable(eval_fn):
            raise TypeError(f"`eval_fn` must be callable or None, got {type(eval_fn).__name__}.")
        if keep_best_metric is not None and workdir is None:
            raise ValueError("`keep_best_metric` needs a `workdir` (checkpoints are kept on disk).")
        if mesh is not None and not isinstance(mesh, jax.sharding.Mesh):
            raise TypeError(f"`mesh` must be a jax.sharding.Mesh or None, got {type(mesh).__name__}.")

        self.step_fn = step_fn
        self.init_state = state
        self.batch_fn = batch_fn
        self.workdir = Path(workdir).absolute() if workdir is not None else None
        self.total_steps = int(total_steps)
        self.checkpoint_every = int(checkpoint_every)
        self.keep = keep
        self.keep_best_metric = keep_best_metric
        self.keep_best_mode = keep_best_mode
        self.log_every = int(log_every)
        self.eval_fn = eval_fn
        self.eval_every = int(eval_every) if eval_every is not None else self.checkpoint_every
        self.mesh = mesh
        self.nonfinite_policy = nonfinite_policy
        self.progress = progress
        self.tensorboard = tensorboard
        self.steps_per_dispatch = int(steps_per_dispatch)
        self.batch_fn_in_jit = batch_fn_in_jit
        self.state_sharding_kwargs = dict(state_sharding_kwargs or {})
        self.async_checkpoint = async_checkpoint
        self.handle_signals = handle_signals
        self.min_free_bytes = min_free_bytes
        # Donating the state to the step halves peak memory; "stop" keeps the pre-step state to
        # save it, so it cannot donate.
        self._donate = bool(donate) and nonfinite_policy != "stop"

        self.history: list[dict] = []
        self.start_step: int | None = None
        self.restored_step: int | None = None
        self.restore_errors: list[str] = []
        self._batch_spec: Any = None

    # ------------------------------------------------------------------------------------------
    # Sharding and compiled functions.

    def _shardings(self, state: TrainState) -> tuple[Any, Any, Any, Any]:
        if self.mesh is None:
            return None, None, None, None
        st = shd.state_sharding(state, self.mesh, **self.state_sharding_kwargs)
        return st, shd.batch_sharding(self.mesh), shd.batch_sharding(self.mesh, stacked=True), NamedSharding(
            self.mesh, PartitionSpec()
        )

    def _runner(self, n: int) -> Callable:
        """A jitted ``(state, batches) -> (state, stacked metrics)`` running ``n`` steps."""
        scanned = n > 1 and self.steps_per_dispatch > 1
        if self._state_sh is None:
            sh_key = None
        else:
            leaves, treedef = jax.tree.flatten(self._state_sh)
            sh_key = (tuple(leaves), treedef, self._b_sh, self._bs_sh, self._rep_sh)
        return _compiled_runner(
            self.step_fn,
            self.batch_fn if self.batch_fn_in_jit else None,
            n if scanned else 1,
            scanned,
            sh_key,
            self._donate,
        )

    # ------------------------------------------------------------------------------------------
    # Data.

    def _fetch(self, step: int, n: int) -> Any:
        if self.batch_fn_in_jit:
            return None
        if self.iterator_source:
            batches = [next(self.batch_fn) for _ in range(n)]
        else:
            batches = [self.batch_fn(s) for s in range(step, step + n)]
        for i, b in enumerate(batches):
            self._check_batch(step + i, b)
        stacked = n > 1 and self.steps_per_dispatch > 1
        batch = _stack(batches) if stacked else batches[0]
        if self.mesh is not None:
            batch = shd.shard_batch(batch, self.mesh, stacked=stacked)
        return batch

    def _check_batch(self, step: int, batch: Any) -> None:
        spec = jax.tree.map(lambda x: (tuple(np.shape(x)), str(np.dtype(x.dtype))), batch)
        if self._batch_spec is None:
            preflight.check_batch(f"batch (step {step})", batch, finite=True)
            if self.mesh is not None:
                shd.check_batch_divisible(batch, self.mesh)
            self._batch_spec = (jax.tree.structure(batch), spec)
            return
        treedef, first = self._batch_spec
        if jax.tree.structure(batch) != treedef:
            raise ValueError(
                f"the batch for step {step} has structure {jax.tree.structure(batch)}, but the first batch had "
                f"{treedef}."
            )
        for (path, got), want in zip(
            jax.tree_util.tree_flatten_with_path(spec, is_leaf=lambda x: isinstance(x, tuple) and len(x) == 2 and isinstance(x[1], str))[0],
            jax.tree.leaves(first, is_leaf=lambda x: isinstance(x, tuple) and len(x) == 2 and isinstance(x[1], str)),
        ):
            if got != want:
                raise ValueError(
                    f"`batch{jax.tree_util.keystr(path)}` for step {step} has shape {got[0]} dtype {got[1]}, but the "
                    f"first batch had shape {want[0]} dtype {want[1]}; batches must not change shape."
                )

    # ------------------------------------------------------------------------------------------
    # Metrics.

    def _record_from(self, step: int, rows: list[dict[str, float]], state: TrainState) -> dict:
        rec: dict[str, Any] = {"step": int(step)}
        keys = [k for k in rows[0] if k not in _INTERNAL_METRICS]
        for k in keys:
            rec[k] = float(np.mean(np.asarray([r[k] for r in rows], dtype=np.float64)))
        rec["nonfinite_count"] = int(jax.device_get(state.nonfinite_count))
        return rec

    @staticmethod
    def _rows(metrics: dict) -> list[dict[str, float]]:
        host = jax.device_get(metrics)
        n = len(next(iter(host.values())))
        return [{k: float(np.asarray(v[i]).astype(np.float64)) for k, v in host.items()} for i in range(n)]

    @classmethod
    def _rows_many(cls, metrics_list: list[dict]) -> list[dict[str, float]]:
        return [row for m in metrics_list for row in cls._rows(m)]

    # ------------------------------------------------------------------------------------------

    def _boundary(self, step: int) -> int:
        """The next step at which something (log, eval, checkpoint, end) happens."""
        nxt = [self.total_steps]
        for every in (self.log_every, self.checkpoint_every, self.eval_every if self.eval_fn else None):
            if every:
                nxt.append((step // every + 1) * every)
        return min(nxt)

    def _save(self, ckpt: Checkpointer | None, step: int, state: TrainState, pending: list[dict]) -> None:
        if ckpt is None:
            return
        extra: dict[str, Any] = {"pending_metrics": pending, "total_steps": self.total_steps}
        if self.iterator_source:
            extra["data_state"] = _encode_iter_state(self.batch_fn.get_state())
        metrics = None
        if self.keep_best_metric is not None:
            for rec in reversed(self.history):
                if self.keep_best_metric in rec:
                    metrics = {self.keep_best_metric: rec[self.keep_best_metric]}
                    break
        ckpt.save(step, state, extra=extra, metrics=metrics)

    def run(self) -> TrainState:
        """Train from the newest checkpoint in ``workdir`` (or from scratch) to ``total_steps``."""
        state = self.init_state
        self._state_sh, self._b_sh, self._bs_sh, self._rep_sh = self._shardings(state)
        if self._state_sh is not None:
            state = jax.device_put(state, self._state_sh)
        if self._donate:  # never donate the caller's arrays
            state = jax.tree.map(lambda x: jax.device_put(x, x.sharding, may_alias=False), state)

        ckpt = None
        writer = MetricWriter(self.workdir, tensorboard=self.tensorboard)
        pending: list[dict[str, float]] = []  # per-step metrics of the unfinished logging interval
        pending_dev: list[dict] = []
        start = int(jax.device_get(state.step))
        if self.workdir is not None:
            need = self.min_free_bytes
            if need is None:
                need = tree_nbytes(state) * (self.keep + 2 + (self.keep_best_metric is not None)) + (1 << 20)
            preflight.check_output_dir(self.workdir, min_free_bytes=need)
            ckpt = Checkpointer(
                self.workdir / "checkpoints",
                keep=self.keep,
                best_metric=self.keep_best_metric,
                best_mode=self.keep_best_mode,
                async_save=self.async_checkpoint,
            )
            restored = ckpt.restore_latest(abstract_state(state, self._state_sh))
            self.restore_errors = list(ckpt.last_restore_errors)
            if restored is not None:
                self.restored_step, state, extra = restored
                start = self.restored_step
                pending = list(extra.get("pending_metrics", []))
                if self.iterator_source:
                    if "data_state" not in extra:
                        raise ValueError(
                            f"checkpoint {self.restored_step} has no data-iterator state, but `batch_fn` is an "
                            "iterator; it was written by a run with batch_fn(step)."
                        )
                    self.batch_fn.set_state(_decode_iter_state(extra["data_state"]))
            self.history = writer.truncate_after(start)
        self.start_step = start

        bar = None
        if self.progress and shd.is_main_process() and start < self.total_steps:
            from tqdm.auto import tqdm

            bar = tqdm(total=self.total_steps, initial=start, desc="train", dynamic_ncols=True)

        mesh_ctx = jax.set_mesh(self.mesh) if self.mesh is not None else contextlib.nullcontext()
        step = start
        last_saved = self.restored_step
        try:
            # Without a workdir there is nothing to save: signals keep their default behaviour.
            with mesh_ctx, _SignalFlag(self.handle_signals and ckpt is not None) as flag:
                while step < self.total_steps:
                    n = min(self.steps_per_dispatch, self._boundary(step) - step)
                    batch = self._fetch(step, n)
                    good_state = state
                    state, metrics = self._runner(n)(state, batch)
                    if self.nonfinite_policy == "stop":
                        rows = self._rows(metrics)
                        bad = [i for i, r in enumerate(rows) if not self._row_finite(r)]
                        if bad:
                            i = bad[0]
                            leaf = nonfinite_leaf_name(rows[i].get("nonfinite_leaf", 0), good_state.params)
                            if ckpt is not None and (last_saved is None or last_saved < step):
                                self._save(ckpt, step, good_state, pending + self._rows_many(pending_dev))
                                last_saved = step
                                ckpt.wait()
                            raise NonFiniteError(step + i, leaf, last_saved, self.workdir)
                    step += n
                    pending_dev.append(metrics)  # stays on device until the next log/checkpoint
                    if bar is not None:
                        bar.update(n)
                    record: dict[str, Any] = {}
                    if step % self.log_every == 0 or step == self.total_steps:
                        record = self._record_from(step, pending + self._rows_many(pending_dev), state)
                        pending, pending_dev = [], []
                    if self.eval_fn is not None and (step % self.eval_every == 0 or step == self.total_steps):
                        ev = self.eval_fn(state)
                        record.setdefault("step", step)
                        record.update({f"eval/{k}": float(v) for k, v in jax.device_get(ev).items()})
                    if record:
                        self.history.append(record)
                        writer.write(record)
                        if bar is not None and "loss" in record:
                            bar.set_postfix(loss=f"{record['loss']:.4g}")
                    if step % self.checkpoint_every == 0 or step == self.total_steps or flag.signame:
                        if ckpt is not None:
                            pending, pending_dev = pending + self._rows_many(pending_dev), []
                            self._save(ckpt, step, state, pending)
                            last_saved = step
                    if flag.signame and step < self.total_steps:
                        if ckpt is not None:
                            ckpt.wait()
                        raise Preempted(step, flag.signame)
        finally:
            if bar is not None:
                bar.close()
            if ckpt is not None:
                ckpt.close()
            writer.close()
        self.state = state
        return state

    @staticmethod
    def _row_finite(row: dict[str, float]) -> bool:
        if "finite" in row:
            return bool(row["finite"])
        return math.isfinite(row.get("loss", 0.0))
