"""Discrete flow matching losses for the factorised mixture path (Gat et al. 2407.15595).

With ``x0 ~ p0`` (masked or uniform source), ``x1 ~ data``, ``t ~ p(t)`` and
``x_t ~ (1 - kappa_t) delta_{x0} + kappa_t delta_{x1}`` per position, the model gives posterior
logits ``p_{1|t}(. | x_t)`` of shape ``(n, L, S)``. Two losses (project time, t = 0 source):

* ``"cross_entropy"`` (paper eq. 28): ``-sum_i log p_{1|t}^i(x1^i | x_t)``.
* ``"generalized_kl"`` (Bregman divergence of the rates; Shaul et al. 2412.03487, Lipman et al.
  2412.06264 sec. 7): with ``lambda_t = kappa'_t / (1 - kappa_t)`` and ``p = p_{1|t}^i(. | x_t)``,

      D_i = lambda_t [ -1[x_t^i != x1^i] log p(x1^i) + 1[x_t^i = x1^i] - p(x_t^i) ],

  which is ``sum_{y != x_t} [u log(u/u_hat) - u + u_hat]`` between the conditional rate
  ``u = lambda_t (delta_{x1} - delta_{x_t})`` and the model rate ``u_hat = lambda_t (p - delta_{x_t})``
  (derived here; >= 0, and 0 when ``p = delta_{x1}``).

Both are minimised by the true posterior ``p_{1|t}(x1^i | x_t)``. Losses are summed over positions
and averaged over the batch.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array

from flowjax import _checks
from flowjax import discrete as dfm
from flowjax.losses.cfm import call_with_condition
from flowjax.timesteps import TimeSampler, uniform

KINDS = ("cross_entropy", "generalized_kl")


def mixture_loss_terms(logits: Array, x_t: Array, x1: Array, t: Array, *, scheduler: dfm.Scheduler, kind: str) -> Array:
    """Per-sample loss ``(n,)`` for given posterior logits ``(n, L, S)``, ``x_t, x1 (n, L)``, ``t (n,)``."""
    _checks.check_choice("kind", kind, KINDS)
    logp = jax.nn.log_softmax(logits, axis=-1)
    logp_x1 = jnp.take_along_axis(logp, x1[..., None], axis=-1)[..., 0]
    if kind == "cross_entropy":
        return -jnp.sum(logp_x1, axis=-1)
    p_xt = jnp.exp(jnp.take_along_axis(logp, x_t[..., None], axis=-1)[..., 0])
    lam = scheduler.d_kappa(t) / (1.0 - scheduler.kappa(t))
    same = (x_t == x1).astype(logits.dtype)
    per_pos = -(1.0 - same) * logp_x1 + same - p_xt
    return lam * jnp.sum(per_pos, axis=-1)


def discrete_fm(
    logits_fn: Callable[..., Array],
    key: Array,
    x1: Array,
    *,
    vocab_size: int,
    source: str = "mask",
    scheduler: dfm.Scheduler | None = None,
    kind: str = "cross_entropy",
    time_sampler: TimeSampler | None = None,
    t_max: float = 1.0 - 1e-3,
    c: Any = None,
) -> tuple[Array, dict[str, Array]]:
    """Discrete flow matching loss on the mixture path; returns ``(loss, aux)``.

    Args:
      logits_fn: ``logits(x_t, t) -> (n, L, S)`` with ``S = vocab_size + 1`` for a masked source
        (mask id ``vocab_size``) and ``S = vocab_size`` for a uniform one.
      key: PRNG key.
      x1: ``(n, L)`` integer data tokens in ``[0, vocab_size)``.
      vocab_size: ``V``.
      source: ``"mask"`` or ``"uniform"``.
      scheduler: ``kappa_t`` (default linear ``kappa_t = t``).
      kind: ``"cross_entropy"`` (default; paper eq. 28) or ``"generalized_kl"``.
      time_sampler: ``fn(key, n) -> t`` (default uniform); ``t`` is clipped to ``t_max`` so that
        ``kappa'/(1 - kappa)`` stays finite for the generalized KL.
      c: optional condition passed as ``logits_fn(x, t, c=c)``.
    """
    _checks.check_choice("kind", kind, KINDS)
    _checks.check_choice("source", source, dfm.SOURCES)
    _checks.check_positive_int("vocab_size", vocab_size)
    if not hasattr(x1, "dtype") or not jnp.issubdtype(x1.dtype, jnp.integer) or x1.ndim != 2:
        raise TypeError(f"`x1` must be integer tokens of shape (batch, length), got {getattr(x1, 'dtype', None)} {getattr(x1, 'shape', None)}.")
    sched = scheduler if scheduler is not None else dfm.polynomial_scheduler(1.0)
    n = x1.shape[0]
    k_t, k_0, k_p = jax.random.split(key, 3)
    t = jnp.minimum((time_sampler or uniform())(k_t, n), t_max)
    x0 = dfm.source_sample(k_0, x1.shape, vocab_size=vocab_size, source=source)
    x_t = dfm.sample_path(k_p, x0, x1.astype(jnp.int32), t, scheduler=sched)
    logits = call_with_condition(logits_fn, x_t, t, c=c)
    expected = (n, x1.shape[1], dfm.num_states(vocab_size, source))
    if logits.shape != expected:
        raise ValueError(f"`logits_fn` must return shape {expected}, got {tuple(logits.shape)}.")
    per = mixture_loss_terms(logits, x_t, x1.astype(jnp.int32), t, scheduler=sched, kind=kind)
    loss = jnp.mean(per)
    acc = jnp.mean((jnp.argmax(logits, -1) == x1).astype(jnp.float32))
    return loss, {"loss": loss, "x1_accuracy": acc}


__all__ = ["KINDS", "discrete_fm", "mixture_loss_terms"]
