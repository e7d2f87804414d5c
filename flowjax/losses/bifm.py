"""BiFM (Dai, Hayder, Ahmedt-Aristizabal, Li, arXiv 2603.24942): bidirectional average velocities
for few-step generation *and* inversion with one network.

Project notation, signed intervals: ``X_{t,t'}(x) = x + (t' - t) u(x, t, t')`` for either order
of ``t, t'``. The exact flow satisfies ``u(x, t, t') = u(X_{t,t'}(x), t', t)`` (the same vector in
both directions; the paper's "backward velocity is the negative of the forward one" is about
``|t' - t|``-normalised velocities, ``u_BiFM = sign(t' - t) u``, :func:`to_bifm_sign`). Loss:

    x_t = alpha_t x1 + sigma_t x0,  v = alpha'_t x1 + sigma'_t x0
    (u, du) = jvp(u_theta, (x_t, t, t'), (v, 1, 0)),  L_MF = D(u, sg[v + (t' - t) du])   (any order)
    x_hat = sg[x_t + (t' - t) u],                      L_Bi = D(u, u_theta(x_hat, t', t))
    L = mean(L_MF + w L_Bi),   D(a, b) = l / sg((l + c)^p),  l = ||a - b||^2

Sources: the paper's text was unavailable; the MeanFlow term on both orders, the bidirectional
consistency term, the warm-up weight, the adaptive norm with ``p = 1`` and the ``(t, t' - t)``
conditioning come from a third-party paper note (bifm.md). *Derived, not from the paper*: the
point ``x_hat`` = the model's own endpoint (stop-gradient), the gradient through both arguments of
``L_Bi``, the pair sampler (sorted pair of ``time_sampler`` draws, swapped with probability
``swap_prob`` to an inversion interval, first ``round(diag_fraction n)`` rows diagonal), the default
``c = 1e-3`` and that ``w`` is passed in by the caller (a warm-up schedule value; the loss is pure).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array

from flowjax.losses import _fewstep as fs
from flowjax.losses.meanflow import meanflow_target
from flowjax.paths import AffinePath, linear_path
from flowjax.timesteps import TimeSampler, uniform


def to_bifm_sign(u_fn: Callable[..., Array]) -> Callable[..., Array]:
    """The paper's ``|t' - t|``-normalised average velocity ``sign(t' - t) u(x, t, t')``."""
    return lambda x, t, tp, **kw: fs.bcast(jnp.sign(tp - t), x) * u_fn(x, t, tp, **kw)


def bifm_time_pairs(
    base: TimeSampler | None = None, *, swap_prob: float = 0.5, diag_fraction: float = 0.5
) -> Callable[[Array, int], tuple[Array, Array]]:
    """``(t, t')``: sorted pair of ``base`` draws (default ``U[0, 1]``), swapped with probability
    ``swap_prob`` (inversion, ``t > t'``), the first ``round(diag_fraction n)`` rows set to ``t' = t``."""
    fs.check_fraction("swap_prob", swap_prob)
    fs.check_fraction("diag_fraction", diag_fraction)
    pairs = fs.sorted_pairs(base or uniform())

    def sample(key: Array, n: int) -> tuple[Array, Array]:
        kp, ks = jax.random.split(key)
        lo, hi = pairs(kp, n)
        swap = jax.random.uniform(ks, (n,)) < swap_prob
        t, tp = jnp.where(swap, hi, lo), jnp.where(swap, lo, hi)
        diag = jnp.arange(n) < fs.num_fm(n, diag_fraction)
        return t, jnp.where(diag, t, tp)

    return sample


def bifm(
    u_fn: Callable[..., Array],
    key: Array,
    x1: Array,
    *,
    x0: Array | None = None,
    path: AffinePath | None = None,
    time_sampler: Callable[[Array, int], tuple[Array, Array]] | None = None,
    consistency_weight: float | Array = 1.0,
    norm_p: float = 1.0,
    norm_eps: float = 1e-3,
    teacher_fn: Callable[..., Array] | None = None,
    c: Any = None,
) -> tuple[Array, dict[str, Array]]:
    """BiFM loss (2603.24942, per the paper note), project time.

    Args:
      u_fn: average velocity ``u_fn(x, t, t')`` for either order (``c=`` when given); it must see
        the signed ``t' - t``.
      key: PRNG key.
      x1: data ``(n, ...)``.
      x0: noise (default standard normal).
      path: affine path (default linear / rectified flow).
      time_sampler: ``(key, n) -> (t, t')``; default :func:`bifm_time_pairs` (uniform pair, swap 1/2,
        half diagonal). The spec's scaled default is ``bifm_time_pairs(logit_normal(0.4, 1.0))``.
      consistency_weight: ``w`` on ``L_Bi`` (a scalar or traced scalar: the warm-up schedule value).
      norm_p, norm_eps: adaptive norm ``D`` (p = 1 default and best per the note's ablation).
      teacher_fn: optional teacher velocity ``v_T(x, t)`` replacing the conditional ``v`` (fine-tuning).
      c: condition passed as ``c=``.

    Returns:
      ``(loss, {"mse_mf", "mse_bi"})``.
    """
    fs.check_inputs(x1, x0, c)
    if norm_p < 0 or norm_eps < 0:
        raise ValueError(f"`norm_p` and `norm_eps` must be >= 0, got {norm_p}, {norm_eps}.")
    path = path or linear_path()
    time_sampler = time_sampler or bifm_time_pairs()
    n = x1.shape[0]
    k0, kt = jax.random.split(key)
    if x0 is None:
        x0 = jax.random.normal(k0, x1.shape, x1.dtype)
    t, tp = time_sampler(kt, n)
    t, tp = t.astype(x1.dtype), tp.astype(x1.dtype)
    x_t, v = path.sample(x0, x1, t)
    if teacher_fn is not None:
        v = jax.lax.stop_gradient(teacher_fn(x_t, t) if c is None else teacher_fn(x_t, t, c=c))
    # The MeanFlow identity holds for either order of (t, t'): signed gap, no clip.
    u, u_tgt = meanflow_target(u_fn, x_t, t, tp, v, c=c, clip=False)
    u_tgt = jax.lax.stop_gradient(u_tgt)  # MeanFlow term: stop-gradient target
    l_mf = fs.sum_squares(u - u_tgt)
    # Bidirectional consistency: the reverse-direction prediction at the model's own endpoint
    # (endpoint stop-gradient; gradient through both predictions).
    x_hat = jax.lax.stop_gradient(x_t + fs.bcast(tp - t, x_t) * u)
    u_back = fs.call_u(u_fn, x_hat, tp, t, c)
    l_bi = fs.sum_squares(u - u_back)
    per = fs.adaptive_weighted(l_mf, p=norm_p, eps=norm_eps) + consistency_weight * fs.adaptive_weighted(
        l_bi, p=norm_p, eps=norm_eps)
    dims = x1[0].size
    return jnp.mean(per), {"mse_mf": jnp.mean(l_mf) / dims, "mse_bi": jnp.mean(l_bi) / dims}


__all__ = ["bifm", "bifm_time_pairs", "to_bifm_sign"]
