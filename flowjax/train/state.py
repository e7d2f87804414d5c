"""Train state and the pure training step.

A loss function has the signature ``loss_fn(params, key, batch) -> (loss, aux)`` where ``aux`` is a
dict of scalars. :func:`make_train_step` turns it into a pure ``step(state, batch) -> (state,
metrics)`` that can be jitted, sharded and scanned. The per-step PRNG key is
``keystreams.train_key(state.key, state.step)`` (``fold_in`` of the step into the run key's training
stream): it depends only on (seed, step), never on how many times the function was called, so a
resumed run draws the same keys as an unbroken one, and it never equals a data batch's key drawn
from the same seed (see :mod:`flowjax.keystreams`).
"""

from __future__ import annotations

from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import optax

from flowjax import keystreams

LossFn = Callable[[Any, jax.Array, Any], tuple[jax.Array, dict]]

NONFINITE_POLICIES = ("skip", "apply")


@flax.struct.dataclass
class TrainState:
    """Everything a run needs to continue exactly: parameters, optimizer state, EMA, step, key.

    ``key`` is a raw ``uint32[2]`` PRNG key (serialisable by Orbax); ``nonfinite_count`` counts
    the steps whose update was skipped because the loss or a gradient was not finite.
    """

    step: jax.Array
    params: Any
    opt_state: Any
    ema_params: Any
    key: jax.Array
    nonfinite_count: jax.Array


def create_train_state(params: Any, optimizer: optax.GradientTransformation, key: jax.Array) -> TrainState:
    """Initial state at step 0; ``ema_params`` starts as a copy of ``params``."""
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=optimizer.init(params),
        ema_params=jax.tree.map(jnp.array, params),
        key=jnp.asarray(key, jnp.uint32),
        nonfinite_count=jnp.zeros((), jnp.int32),
    )


def step_key(state: TrainState) -> jax.Array:
    """The PRNG key of the current step: a function of (seed, step) only, in the training stream."""
    return keystreams.train_key(state.key, state.step)


def leaf_square_norms(grads: Any) -> jax.Array:
    """Squared L2 norm of each leaf of ``grads`` (``jax.tree.leaves`` order), as a float vector.

    One reduction per leaf serves three purposes in :func:`make_train_step`: the finiteness test,
    the index of the first bad leaf and the global gradient norm. For float32 leaves the sums are the
    same expressions as ``optax.tree.norm`` (and ``optax.clip_by_global_norm``), so XLA computes
    them once. Leaves narrower than 32 bits are summed in float32, where float16's range would
    otherwise overflow at ``|g| > 256``.
    """
    leaves = jax.tree.leaves(grads)
    if not leaves:
        return jnp.zeros((0,), jnp.float32)

    def square_norm(g):
        if jnp.issubdtype(g.dtype, jnp.floating) and jnp.finfo(g.dtype).bits < 32:
            g = g.astype(jnp.float32)
        return optax.tree.norm(g, squared=True)

    return jnp.stack([square_norm(g) for g in leaves])  # promotes mixed precisions


def first_nonfinite_index(loss: jax.Array, grads: Any, square_norms: jax.Array | None = None) -> jax.Array:
    """Index of the first non-finite value among ``[loss, *leaves(grads)]``; ``-1`` if all finite.

    Works under ``jit``: the index is an ``int32`` scalar. ``0`` means the loss itself; ``i >= 1``
    means gradient leaf ``i - 1`` in ``jax.tree.leaves`` order (see :func:`nonfinite_leaf_name`).
    A leaf is tested through its squared norm (``square_norms``, from :func:`leaf_square_norms`,
    computed when not given): it is non-finite when it holds a NaN or an Inf, or when it is so large
    that its squared norm overflows (``|g|`` beyond about ``1e19`` in float32), a gradient no
    update can use.
    """
    if square_norms is None:
        square_norms = leaf_square_norms(grads)
    flags = jnp.concatenate([jnp.isfinite(jnp.asarray(loss)).all()[None], jnp.isfinite(square_norms)])
    bad = jnp.logical_not(flags)
    return jnp.where(jnp.any(bad), jnp.argmax(bad), -1).astype(jnp.int32)


def nonfinite_leaf_name(index: int, params: Any) -> str:
    """Human-readable name of the value that :func:`first_nonfinite_index` pointed at."""
    index = int(index)
    if index < 0:
        return "<none>"
    if index == 0:
        return "loss"
    paths = [jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    if index - 1 < len(paths):
        return f"grads{paths[index - 1]}"
    return f"grads leaf #{index - 1}"


def make_train_step(
    loss_fn: LossFn,
    optimizer: optax.GradientTransformation,
    *,
    ema_decay: float | None = 0.999,
    nonfinite: str = "skip",
) -> Callable[[TrainState, Any], tuple[TrainState, dict]]:
    """Build a pure training step ``step(state, batch) -> (new_state, metrics)``.

    Args:
      loss_fn: ``loss_fn(params, key, batch) -> (loss, aux)``.
      optimizer: an optax transformation (put gradient clipping in it, e.g. with
        :func:`make_optimizer`).
      ema_decay: decay of the exponential moving average of the parameters; ``None`` disables it
        (``ema_params`` then tracks ``params``).
      nonfinite: ``"skip"`` leaves the state unchanged (except the step counter and
        ``nonfinite_count``) when the loss or any gradient is NaN/Inf (or a gradient leaf's squared
        norm overflows, see :func:`first_nonfinite_index`); ``"apply"`` applies the update
        regardless. The ``Trainer`` can additionally stop on a non-finite step.

    Returns:
      A pure function; ``metrics`` holds ``loss``, ``grad_norm``, ``finite``, ``nonfinite_leaf``
      (``-1`` when finite, else the index decoded by :func:`nonfinite_leaf_name`) and the loss's
      aux.
    """
    if nonfinite not in NONFINITE_POLICIES:
        raise ValueError(f"`nonfinite` must be one of {NONFINITE_POLICIES}, got {nonfinite!r}.")
    if ema_decay is not None and not (0.0 <= ema_decay < 1.0):
        raise ValueError(f"`ema_decay` must be in [0, 1) or None, got {ema_decay}.")

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def step(state: TrainState, batch: Any) -> tuple[TrainState, dict]:
        (loss, aux), grads = grad_fn(state.params, step_key(state), batch)
        # One reduction per gradient leaf gives the finiteness test, the bad leaf's index and the
        # norm: per-leaf work is most of the compile time of a small model's step on XLA:CPU.
        square_norms = leaf_square_norms(grads)
        nonfinite_leaf = first_nonfinite_index(loss, grads, square_norms)
        finite = nonfinite_leaf < 0
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
        if nonfinite == "skip":
            params, opt_state = keep(params, state.params), keep(opt_state, state.opt_state)
        # The EMA reads the parameters after the skip (equal to the update when it is kept, and the
        # EMA is kept back itself otherwise), so XLA reads the new-parameter buffer instead of
        # materialising the optimizer's update a second time for every leaf.
        if ema_decay is None:
            ema = params
        else:
            ema = jax.tree.map(lambda e, p: ema_decay * e + (1.0 - ema_decay) * p, state.ema_params, params)
            if nonfinite == "skip":
                ema = keep(ema, state.ema_params)
        new_state = state.replace(
            step=state.step + 1,
            params=params,
            opt_state=opt_state,
            ema_params=ema,
            nonfinite_count=state.nonfinite_count + jnp.logical_not(finite).astype(jnp.int32),
        )
        metrics = {
            "loss": loss,
            "grad_norm": jnp.sqrt(jnp.sum(square_norms)),
            "finite": finite,
            "nonfinite_leaf": nonfinite_leaf,
            **aux,
        }
        return new_state, metrics

    return step


def make_optimizer(
    learning_rate: float | optax.Schedule = 1e-3,
    *,
    clip_norm: float | None = 1.0,
    weight_decay: float = 0.0,
    warmup_steps: int = 0,
    b1: float = 0.9,
    b2: float = 0.999,
) -> optax.GradientTransformation:
    """Adam(W) with optional global-norm clipping and linear warm-up: the default for experiments."""
    lr = learning_rate
    if warmup_steps > 0 and not callable(learning_rate):
        lr = optax.linear_schedule(0.0, learning_rate, warmup_steps)
    parts = []
    if clip_norm is not None:
        parts.append(optax.clip_by_global_norm(clip_norm))
    parts.append(optax.adamw(lr, b1=b1, b2=b2, weight_decay=weight_decay))
    return optax.chain(*parts)
