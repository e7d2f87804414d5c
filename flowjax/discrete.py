"""Discrete flow matching with mixture paths over a vocabulary (Gat et al., "Discrete Flow Matching", 2407.15595).

Sequences are integer arrays ``(n, L)`` of tokens in ``[0, V)``. In project time (t = 0 source,
t = 1 data) the factorised mixture path with a scheduler ``kappa_t`` (``kappa_0 = 0``, ``kappa_1 = 1``)
is, per position ``i``,

    p_t(x^i | x0, x1) = (1 - kappa_t) delta_{x0^i}(x^i) + kappa_t delta_{x1^i}(x^i)        (paper eq. 8)

with a masked source (``x0 = [MASK]*L``) or a uniform source (``x0^i ~ U[0, V)``). With the
posterior (x1-prediction) parameterisation ``p_{1|t}(y | x_t)`` per position, the marginal rate is

    u_t^i(y, x_t) = kappa'_t / (1 - kappa_t) [ p_{1|t}^i(y | x_t) - delta_{x_t^i}(y) ]       (paper eq. 24)

and the discrete Euler (jump) sampler takes, per position, ``x^i_{t+h} ~ delta_{x_t^i} + h u_t^i``:
with probability ``min(1, h kappa'/(1 - kappa))`` the token is redrawn from ``p_{1|t}^i``, otherwise it
stays (paper sec. 2.4 / Campbell et al. 2402.04997). What is the paper's: path, rate, sampler. Ours:
the scheduler records and the probability clipping at the last step (exact for ``kappa = t``).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array

from flowjax import _checks


class Scheduler(NamedTuple):
    """A convex mixture scheduler: ``kappa(t)`` and ``d_kappa(t)`` with ``kappa(0) = 0``, ``kappa(1) = 1``."""

    kappa: Callable[[Array], Array]
    d_kappa: Callable[[Array], Array]


def polynomial_scheduler(exponent: float = 1.0) -> Scheduler:
    """``kappa_t = t^exponent`` (Gat et al. 2407.15595 use ``exponent`` 1-3; 1 is the linear default)."""
    if not exponent > 0:
        raise ValueError(f"`exponent` must be positive, got {exponent!r}.")
    return Scheduler(lambda t: t**exponent, lambda t: exponent * t ** (exponent - 1.0))


def cosine_scheduler() -> Scheduler:
    """``kappa_t = 1 - cos^2(pi t / 2)`` (= sin^2), a smooth alternative."""
    return Scheduler(lambda t: jnp.sin(0.5 * jnp.pi * t) ** 2, lambda t: 0.5 * jnp.pi * jnp.sin(jnp.pi * t))


SOURCES = ("mask", "uniform")


def source_sample(key: Array, shape: tuple[int, ...], *, vocab_size: int, source: str = "mask") -> Array:
    """Source tokens: all ``mask_id = vocab_size`` (masked) or uniform on ``[0, vocab_size)``."""
    _checks.check_choice("source", source, SOURCES)
    _checks.check_positive_int("vocab_size", vocab_size)
    if source == "mask":
        return jnp.full(shape, vocab_size, jnp.int32)
    return jax.random.randint(key, shape, 0, vocab_size, dtype=jnp.int32)


def num_states(vocab_size: int, source: str) -> int:
    """Size of the model's output axis: ``V + 1`` with a mask token (never predicted), else ``V``."""
    return vocab_size + 1 if source == "mask" else vocab_size


def _check_tokens(name: str, x: Any) -> None:
    if not hasattr(x, "dtype") or not jnp.issubdtype(x.dtype, jnp.integer):
        raise TypeError(f"`{name}` must be an integer token array, got {getattr(x, 'dtype', type(x).__name__)}.")
    if x.ndim != 2:
        raise ValueError(f"`{name}` must have shape (batch, length), got {tuple(x.shape)}.")


def sample_path(key: Array, x0: Array, x1: Array, t: Array, *, scheduler: Scheduler) -> Array:
    """Draw ``x_t ~ p_t(. | x0, x1)`` of the factorised mixture path (paper eq. 8); ``t`` is ``(n,)``."""
    _check_tokens("x0", x0)
    _check_tokens("x1", x1)
    _checks.check_same_shape("x0", x0, "x1", x1)
    _checks.check_time("t", t, x0.shape[0])
    k = scheduler.kappa(jnp.broadcast_to(jnp.asarray(t, jnp.float32), (x0.shape[0],)))
    take1 = jax.random.uniform(key, x1.shape) < k[:, None]
    return jnp.where(take1, x1, x0)


def rate(posterior_probs: Array, x_t: Array, t: Array, *, scheduler: Scheduler) -> Array:
    """``u_t^i(y) = kappa'/(1 - kappa) [p_{1|t}^i(y) - delta_{x_t^i}(y)]`` (paper eq. 24), ``(n, L, S)``."""
    tt = jnp.asarray(t, posterior_probs.dtype)
    coef = scheduler.d_kappa(tt) / (1.0 - scheduler.kappa(tt))
    onehot = jax.nn.one_hot(x_t, posterior_probs.shape[-1], dtype=posterior_probs.dtype)
    return coef[:, None, None] * (posterior_probs - onehot)


def euler_sample(
    logits_fn: Callable[..., Array],
    key: Array,
    x0: Array,
    *,
    scheduler: Scheduler,
    steps: int = 100,
    t0: float = 0.0,
    t1: float = 1.0,
    mask_id: int | None = None,
    c: Any = None,
    return_trajectory: bool = False,
) -> Array:
    """Discrete Euler (jump) sampler for the mixture path with the posterior parameterisation.

    Per step and position: with probability ``min(1, h kappa'_t / (1 - kappa_t))`` redraw the token
    from ``p_{1|t}(. | x_t) = softmax(logits_fn(x_t, t))``, else keep it; this is the paper's
    ``x_{t+h} ~ delta_{x_t} + h u_t`` (a redraw that hits the current token keeps it).

    Args:
      logits_fn: ``logits(x_t, t) -> (n, L, S)`` posterior logits over ``S`` states (``S = V`` or
        ``V + 1`` with a mask id ``V``).
      key: PRNG key.
      x0: ``(n, L)`` source tokens.
      scheduler: the path's :class:`Scheduler`.
      steps: uniform steps on ``[t0, t1]``.
      mask_id: the mask token of a masked source (``V``); its logit is ignored.
      c: optional condition passed as ``logits_fn(x, t, c=c)``.
    Returns:
      ``(n, L)`` tokens at ``t1`` (or ``(steps + 1, n, L)`` with ``return_trajectory``).
    """
    _check_tokens("x0", x0)
    _checks.check_positive_int("steps", steps)
    n = x0.shape[0]
    h = (t1 - t0) / steps

    def step(x, inputs):
        k, kk = inputs
        t = t0 + k * h
        tv = jnp.full((n,), t, jnp.float32)
        logits = logits_fn(x, tv) if c is None else logits_fn(x, tv, c=c)
        if mask_id is not None:  # never jump *to* the mask state of a masked source
            logits = jnp.where(jnp.arange(logits.shape[-1]) == mask_id, -jnp.inf, logits)
        k_jump, k_cat = jax.random.split(kk)
        p_jump = jnp.clip(h * scheduler.d_kappa(tv) / (1.0 - scheduler.kappa(tv)), 0.0, 1.0)
        new = jax.random.categorical(k_cat, logits, axis=-1).astype(x.dtype)
        jump = jax.random.uniform(k_jump, x.shape) < p_jump[:, None]
        x_new = jnp.where(jump, new, x)
        return x_new, x_new

    keys = jax.random.split(key, steps)
    x_end, traj = jax.lax.scan(step, x0, (jnp.arange(steps, dtype=jnp.float32), keys))
    if return_trajectory:
        return jnp.concatenate([x0[None], traj], 0)
    return x_end


__all__ = [
    "SOURCES",
    "Scheduler",
    "cosine_scheduler",
    "euler_sample",
    "num_states",
    "polynomial_scheduler",
    "rate",
    "sample_path",
    "source_sample",
]
