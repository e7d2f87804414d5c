"""`fit`: the in-memory training loop experiments use (no checkpoints unless a workdir is given).

Several steps run per dispatch under ``jax.lax.scan`` (``steps_per_dispatch``), which removes the
Python overhead that dominates small models on CPU without changing the result: the batch at step
``k`` is ``batch_fn(k)`` and the key is ``fold_in(seed_key, k)`` either way.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from flowjax.train.state import LossFn, TrainState, create_train_state, make_optimizer, make_train_step


def fit(
    loss_fn: LossFn,
    params: Any,
    *,
    batch_fn: Callable[[Any], Any],
    steps: int,
    key: jax.Array,
    optimizer: optax.GradientTransformation | None = None,
    learning_rate: float = 1e-3,
    ema_decay: float | None = 0.999,
    steps_per_dispatch: int = 50,
    log_every: int = 50,
    progress: bool = False,
    state: TrainState | None = None,
    **unused: Any,
) -> tuple[TrainState, list[dict]]:
    """Train ``params`` on ``loss_fn`` for ``steps`` steps; return the final state and a loss history.

    Args:
      loss_fn: ``loss_fn(params, key, batch) -> (loss, aux)``.
      batch_fn: ``batch_fn(step) -> batch``, a pure function of the (possibly traced) step.
      steps: number of optimisation steps.
      key: PRNG key of the run (per-step keys are folded from it).
      optimizer: optax transformation (default Adam with clipping at ``learning_rate``).
      steps_per_dispatch: steps fused into one jitted ``scan``.
      log_every: history granularity (mean metrics over each block of this many steps).

    Returns:
      ``(state, history)``; history entries are ``{"step": int, "loss": float, ...}``.
    """
    if steps < 0:
        raise ValueError(f"`steps` must be >= 0, got {steps}.")
    optimizer = optimizer or make_optimizer(learning_rate)
    if state is None:
        state = create_train_state(params, optimizer, key)
    step_fn = make_train_step(loss_fn, optimizer, ema_decay=ema_decay)
    chunk = max(1, min(steps_per_dispatch, log_every)) if steps else 1

    def run_chunk(state, length):
        def body(st, _):
            batch = batch_fn(st.step)
            return step_fn(st, batch)

        return jax.lax.scan(body, state, None, length=length)

    run_chunk = jax.jit(run_chunk, static_argnums=1, donate_argnums=0)
    history: list[dict] = []
    pending: list[dict] = []
    iterator = range(0, steps, chunk)
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, total=-(-steps // chunk), desc="train", unit="chunk")
    for start in iterator:
        length = min(chunk, steps - start)
        state, metrics = run_chunk(state, length)
        pending.append(jax.tree.map(lambda m: np.asarray(m, dtype=np.float64).mean(), metrics))
        done = start + length
        if done % log_every == 0 or done == steps:
            entry = {"step": int(done)}
            for name in pending[0]:
                entry[name] = float(np.mean([p[name] for p in pending]))
            history.append(entry)
            pending = []
    return state, history
