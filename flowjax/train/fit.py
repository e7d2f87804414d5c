"""``fit``: the one-call training loop experiments use (in memory unless a ``workdir`` is given).

``fit`` builds the optimizer, state and step and runs :class:`flowjax.train.Trainer`, so it has
the same guarantees: the batch at step ``k`` is ``batch_fn(k)`` and the step's key is
``keystreams.train_key(key, k)``; with a ``workdir`` it checkpoints and resumes. Several steps run per
dispatch under ``jax.lax.scan`` (``steps_per_dispatch``), which removes the Python overhead that
dominates small models on CPU; a traceable ``batch_fn`` (JAX ops on the step, like the batchers
in :mod:`flowjax.data`) is evaluated inside the jitted scan, so no data crosses from the host.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import optax

from flowjax.train.state import LossFn, TrainState, create_train_state, make_optimizer, make_train_step
from flowjax.train.trainer import Trainer, _check_pos_int, _is_iterator_source


@functools.lru_cache(maxsize=32)
def _default_step(loss_fn, learning_rate, clip_norm, ema_decay, nonfinite):
    optimizer = make_optimizer(learning_rate, clip_norm=clip_norm)
    return optimizer, make_train_step(loss_fn, optimizer, ema_decay=ema_decay, nonfinite=nonfinite)


@functools.lru_cache(maxsize=32)
def _step_for(loss_fn, optimizer, ema_decay, nonfinite):
    return make_train_step(loss_fn, optimizer, ema_decay=ema_decay, nonfinite=nonfinite)


def is_traceable_batch_fn(batch_fn: Any) -> bool:
    """Whether ``batch_fn(step)`` can be traced with an abstract integer step (JAX ops only)."""
    if _is_iterator_source(batch_fn) or not callable(batch_fn):
        return False
    try:
        jax.eval_shape(batch_fn, jax.ShapeDtypeStruct((), jnp.int32))
    except Exception:  # noqa: BLE001 - host code (int(step), numpy RNG, I/O) cannot be traced
        return False
    return True


def scan_is_slow_for(step_fn: Callable, state: Any, batch: Any) -> bool:
    """Whether scanning several steps per dispatch would slow this step down: on the CPU backend, a
    step with convolutions.

    Measured (2026-12-07, 2-core CPU, XLA from jax 0.10.2): a UNet(32) CFM step on 8x8 digits at batch
    128 took 0.13 s per jitted call but 3.6-4.7 s per step inside ``jax.lax.scan`` with the
    parameters in the carry (the same step with constant weights scanned fine), so the training of
    the ``cfm`` digits part took over 40 minutes instead of 7. MLP steps are faster scanned (see the
    ``cfm_step`` benchmark), so only convolutional steps are detected (by tracing the step, no
    compilation) and kept at one step per dispatch.
    """
    if jax.default_backend() != "cpu":
        return False
    try:
        jaxpr = jax.make_jaxpr(step_fn)(state, batch)
    except Exception:  # noqa: BLE001 - a step that cannot be traced here keeps the default
        return False
    return "conv_general_dilated" in str(jaxpr)


def fit(
    loss_fn: LossFn,
    params: Any,
    *,
    batch_fn: Callable[[Any], Any] | Iterator[Any],
    steps: int,
    key: jax.Array,
    optimizer: optax.GradientTransformation | None = None,
    learning_rate: float | optax.Schedule = 1e-3,
    clip_norm: float | None = 1.0,
    ema_decay: float | None = 0.999,
    nonfinite: str = "skip",
    nonfinite_policy: str = "skip",
    workdir: str | Path | None = None,
    checkpoint_every: int | None = None,
    keep: int = 3,
    mesh: jax.sharding.Mesh | None = None,
    progress: bool = False,
    log_every: int | None = None,
    steps_per_dispatch: int | None = None,
    batch_fn_in_jit: bool | str = "auto",
    eval_fn: Callable[[TrainState], dict] | None = None,
    eval_every: int | None = None,
    state: TrainState | None = None,
    **trainer_kwargs: Any,
) -> tuple[TrainState, list[dict]]:
    """Train ``loss_fn`` from ``params`` for ``steps`` steps; returns ``(state, history)``.

    Args:
      loss_fn: ``loss_fn(params, key, batch) -> (loss, aux)``.
      params: initial parameters (not modified).
      batch_fn: ``batch_fn(step) -> batch`` (a pure function of the step), or a grain-style
        iterator with ``get_state()/set_state()``.
      steps: number of optimisation steps (the run ends at ``state.step == steps``).
      key: PRNG key of the run; the key of step ``k`` is ``keystreams.train_key(key, k)`` (a stream no data key shares).
      optimizer: an optax transformation; default :func:`~flowjax.train.make_optimizer`
        (Adam, global-norm clipping at ``clip_norm``) with ``learning_rate``.
      ema_decay: EMA decay of ``state.ema_params`` (``None``: no EMA).
      nonfinite: what the step does on a NaN/Inf loss or gradient (``"skip"`` the update or
        ``"apply"`` it); ``nonfinite_policy``: whether the loop continues (``"skip"``) or stops
        with :class:`~flowjax.train.NonFiniteError` (``"stop"``).
      workdir: with a directory, checkpoints every ``checkpoint_every`` steps (default
        ``steps // 10``), writes ``metrics.jsonl`` and resumes automatically; ``None``: in memory.
      mesh: run sharded on this mesh (see :func:`flowjax.train.make_mesh`).
      log_every: one history record per this many steps holding each metric's mean over them
        (default ``max(1, steps // 200)``).
      steps_per_dispatch: steps per jitted call (``jax.lax.scan``); default: the largest divisor
        of ``log_every`` up to 64, except 1 for convolutional steps on the CPU backend (see
        :func:`scan_is_slow_for`). Results equal the step-by-step loop to float tolerance.
      batch_fn_in_jit: evaluate ``batch_fn`` inside the jitted step; ``"auto"`` does so when
        ``batch_fn`` traces with an abstract step (see :func:`is_traceable_batch_fn`).
      state: continue from this :class:`TrainState` instead of a fresh one built from ``params``.
      **trainer_kwargs: passed to :class:`~flowjax.train.Trainer` (e.g. ``tensorboard``).

    Returns:
      ``(state, history)``; ``history`` is a list of ``{"step": int, "loss": float, ...}``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> loss = lambda p, k, b: (jnp.mean((b - p["m"]) ** 2), {})
      >>> state, hist = fit(loss, {"m": jnp.zeros(2)}, batch_fn=lambda s: jnp.ones((4, 2)),
      ...                   steps=20, key=jax.random.key(0), learning_rate=0.1)
      >>> hist[-1]["step"]
      20
    """
    if not callable(loss_fn):
        raise TypeError(f"`loss_fn` must be callable, got {type(loss_fn).__name__}.")
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
        raise ValueError(f"`steps` must be a non-negative integer, got {steps!r}.")
    if batch_fn_in_jit not in (True, False, "auto"):
        raise ValueError(f"`batch_fn_in_jit` must be True, False or 'auto', got {batch_fn_in_jit!r}.")
    if log_every is None:
        log_every = max(1, steps // 200)
    _check_pos_int("log_every", log_every)
    auto_dispatch = steps_per_dispatch is None
    if auto_dispatch:
        steps_per_dispatch = max(d for d in range(1, min(64, log_every) + 1) if log_every % d == 0)
    if checkpoint_every is None:
        checkpoint_every = max(1, steps // 10)
    if optimizer is None:
        try:  # same loss and settings -> same step function object -> no recompilation
            optimizer, step_fn = _default_step(loss_fn, learning_rate, clip_norm, ema_decay, nonfinite)
        except TypeError:  # unhashable argument
            optimizer, step_fn = _default_step.__wrapped__(loss_fn, learning_rate, clip_norm, ema_decay, nonfinite)
    else:
        try:
            step_fn = _step_for(loss_fn, optimizer, ema_decay, nonfinite)
        except TypeError:
            step_fn = _step_for.__wrapped__(loss_fn, optimizer, ema_decay, nonfinite)
    if state is None:
        state = create_train_state(params, optimizer, key)
    scan_could_be_slow = jax.default_backend() == "cpu" and callable(batch_fn) and not _is_iterator_source(batch_fn)
    if auto_dispatch and steps_per_dispatch > 1 and scan_could_be_slow:
        try:
            example = jax.eval_shape(batch_fn, jnp.asarray(0, jnp.int32)) if is_traceable_batch_fn(batch_fn) else batch_fn(0)
        except Exception:  # noqa: BLE001 - the Trainer reports a broken batch_fn with its own message
            example = None
        if example is not None and scan_is_slow_for(step_fn, state, example):
            steps_per_dispatch = 1
    if steps == 0 or int(jax.device_get(state.step)) >= steps and workdir is None:
        return state, []
    if batch_fn_in_jit == "auto":
        batch_fn_in_jit = is_traceable_batch_fn(batch_fn)
    trainer = Trainer(
        step_fn,
        state,
        batch_fn,
        workdir=workdir,
        total_steps=steps,
        checkpoint_every=checkpoint_every,
        keep=keep,
        log_every=log_every,
        eval_fn=eval_fn,
        eval_every=eval_every,
        mesh=mesh,
        nonfinite_policy=nonfinite_policy,
        progress=progress,
        steps_per_dispatch=steps_per_dispatch,
        batch_fn_in_jit=batch_fn_in_jit,
        **trainer_kwargs,
    )
    state = trainer.run()
    return state, trainer.history
