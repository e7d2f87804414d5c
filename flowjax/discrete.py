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


def corrector_schedule(scale: float = 10.0, a: float = 0.25, b: float = 0.25) -> Callable[[Array], Array]:
    """``beta_t = scale t^a (1 - t)^b``: corrector strength of :func:`euler_sample` (``alpha_t = 1 + beta_t``).

    The form (vanishing at both ends) follows Gat et al. 2407.15595 sec. 2.4; the default numbers are ours.
    """
    return lambda t: scale * t**a * (1.0 - t) ** b


def euler_step_probs(
    weights: Array,
    x_t: Array,
    t: Array,
    h: float | Array,
    *,
    scheduler: Scheduler,
    alpha: Array | float = 1.0,
    beta: Array | float = 0.0,
    mask_id: int | None = None,
) -> Array:
    """Per-position distribution of ``x_{t+h}`` for one discrete Euler step, ``(n, L, S)``.

    The step is ``x^i_{t+h} ~ delta_{x_t^i} + h ubar_t^i`` with the predictor-corrector velocity of
    Gat et al. 2407.15595 (sec. 2.4, eqs. 24-26), ``ubar = alpha uhat - beta ucheck``:

        forward   uhat^i(y)   = kappa'/(1 - kappa) [w^i(y) - delta_{x_t^i}(y)]     (w = p_{1|t}, eq. 24)
        backward  ucheck^i(y) = kappa'/kappa       [delta_{x_t^i}(y) - p_{0|t}^i(y)]

    ``alpha - beta = 1`` generates ``p_t`` (predictor + corrector); ``alpha = beta`` leaves ``p_t``
    invariant (pure corrector). ``p_{0|t}`` is known only for a masked source (``delta_mask``), so
    ``beta != 0`` needs ``mask_id``. ``weights`` are the forward jump weights (the posterior
    probabilities, or unnormalised guided weights, see :func:`euler_sample`); only their
    off-diagonal part (``y != x_t``) matters. When the total jump probability ``h sum_{y != x_t} ubar(y)``
    exceeds 1 it is rescaled to 1 (the stay probability is then 0); for ``kappa = t`` without corrector
    this never happens (the last step redraws from ``w`` exactly).
    """
    n, _, s = weights.shape
    tt = jnp.broadcast_to(jnp.asarray(t, weights.dtype), (n,))
    kap, dk = scheduler.kappa(tt), scheduler.d_kappa(tt)
    alpha = jnp.broadcast_to(jnp.asarray(alpha, weights.dtype), (n,))
    beta = jnp.broadcast_to(jnp.asarray(beta, weights.dtype), (n,))
    onehot = jax.nn.one_hot(x_t, s, dtype=weights.dtype)
    off = (1.0 - onehot) * weights * (h * alpha * dk / (1.0 - kap))[:, None, None]
    if mask_id is not None:
        back = jnp.where(kap > 0, dk / jnp.where(kap > 0, kap, 1.0), 0.0)  # kappa'/kappa; 0 at t = 0 (all masked)
        p0 = jax.nn.one_hot(jnp.full(x_t.shape, mask_id), s, dtype=weights.dtype)
        off = off + (1.0 - onehot) * p0 * (h * beta * back)[:, None, None]
    total = jnp.sum(off, -1, keepdims=True)
    off = off / jnp.maximum(total, 1.0)
    return off + onehot * (1.0 - jnp.minimum(total, 1.0))


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
    corrector: float | Callable[[Array], Array] = 0.0,
    guidance_scale: float | None = None,
    null_c: Any = None,
    return_trajectory: bool = False,
) -> Array:
    """Discrete Euler (jump) sampler for the mixture path with the posterior parameterisation.

    Per step and position: with probability ``min(1, h kappa'_t / (1 - kappa_t))`` redraw the token
    from ``p_{1|t}(. | x_t) = softmax(logits_fn(x_t, t))``, else keep it; this is the paper's
    ``x_{t+h} ~ delta_{x_t} + h u_t`` (a redraw that hits the current token keeps it). See
    :func:`euler_step_probs` for the exact step distribution.

    Corrector (Gat et al. 2407.15595 sec. 2.4): ``corrector = beta_t`` (a float or ``beta(t)``, e.g.
    :func:`corrector_schedule`) uses the velocity ``(1 + beta) uhat - beta ucheck``, which still
    generates ``p_t`` but also re-masks unmasked tokens at rate ``beta kappa'/kappa`` so that errors
    can be corrected; masked source only (needs ``mask_id``).

    Classifier-free guidance (``guidance_scale = w``, condition ``c``, null condition ``null_c``): the
    off-diagonal forward rates are the geometric mix ``u_c^w u_u^(1 - w)`` of the conditional and
    unconditional rates (Nisonoff et al. 2406.01572, discrete guidance), i.e. jump weights
    ``p_{1|t}(y|c)^w p_{1|t}(y|null)^(1 - w)`` (not renormalised). ``w = 1`` is the conditional sampler,
    ``w = 0`` the unconditional one.

    Args:
      logits_fn: ``logits(x_t, t) -> (n, L, S)`` posterior logits over ``S`` states (``S = V`` or
        ``V + 1`` with a mask id ``V``).
      key: PRNG key.
      x0: ``(n, L)`` source tokens.
      scheduler: the path's :class:`Scheduler`.
      steps: uniform steps on ``[t0, t1]``.
      mask_id: the mask token of a masked source (``V``); its logit is ignored.
      c: optional condition passed as ``logits_fn(x, t, c=c)``.
      corrector: ``beta_t >= 0`` (0 = plain Euler).
      guidance_scale: CFG scale ``w`` (None = no guidance); needs ``c`` and ``null_c``.
      null_c: the null condition for the unconditional rates.
    Returns:
      ``(n, L)`` tokens at ``t1`` (or ``(steps + 1, n, L)`` with ``return_trajectory``).
    """
    _check_tokens("x0", x0)
    _checks.check_positive_int("steps", steps)
    if not callable(corrector) and float(corrector) < 0:
        raise ValueError(f"`corrector` must be >= 0, got {corrector!r}.")
    if (callable(corrector) or float(corrector) != 0.0) and mask_id is None:
        raise ValueError("`corrector` needs the posterior of the source, known for a masked source only: pass `mask_id`.")
    if guidance_scale is not None and (c is None or null_c is None):
        raise ValueError("`guidance_scale` needs both `c` (condition) and `null_c` (null condition).")
    n = x0.shape[0]
    h = (t1 - t0) / steps

    def log_posterior(x, tv, cond):
        logits = logits_fn(x, tv) if cond is None else logits_fn(x, tv, c=cond)
        if mask_id is not None:  # never jump *to* the mask state of a masked source
            logits = jnp.where(jnp.arange(logits.shape[-1]) == mask_id, -jnp.inf, logits)
        return jax.nn.log_softmax(logits, axis=-1)

    def step(x, inputs):
        k, kk = inputs
        t = t0 + k * h
        tv = jnp.full((n,), t, jnp.float32)
        if guidance_scale is None:
            weights = jnp.exp(log_posterior(x, tv, c))
        else:
            w = guidance_scale
            lc, lu = log_posterior(x, tv, c), log_posterior(x, tv, null_c)
            mix = jnp.where(jnp.isneginf(lc) | jnp.isneginf(lu), -jnp.inf, w * lc + (1.0 - w) * lu)
            weights = jnp.exp(mix)
        beta = corrector(tv) if callable(corrector) else jnp.full((n,), corrector, jnp.float32)
        probs = euler_step_probs(weights, x, tv, h, scheduler=scheduler, alpha=1.0 + beta, beta=beta, mask_id=mask_id)
        x_new = jax.random.categorical(kk, jnp.log(probs), axis=-1).astype(x.dtype)
        return x_new, x_new

    keys = jax.random.split(key, steps)
    x_end, traj = jax.lax.scan(step, x0, (jnp.arange(steps, dtype=jnp.float32), keys))
    if return_trajectory:
        return jnp.concatenate([x0[None], traj], 0)
    return x_end


__all__ = [
    "SOURCES",
    "Scheduler",
    "corrector_schedule",
    "cosine_scheduler",
    "euler_sample",
    "euler_step_probs",
    "num_states",
    "polynomial_scheduler",
    "rate",
    "sample_path",
    "source_sample",
]
