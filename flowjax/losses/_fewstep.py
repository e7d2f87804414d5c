"""Shared pieces of the few-step (average-velocity / flow-map) losses.

Private module: time-pair samplers with a flow-matching (``s = t``) fraction, input checks, the
multi-step interval rollout used by the splitting / progressive / shortcut targets, and the
MeanFlow adaptive weight. Everything is in project time (t = 0 noise, t = 1 data) with
``X_{s,t}(x) = x + (t - s) u(x, s, t)``.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array

from flowjax import _checks
from flowjax.timesteps import TimeSampler

PairSampler = Callable[[Array, int], tuple[Array, Array]]


def call_u(u_fn: Callable, x: Array, s: Array, t: Array, c: Any = None) -> Array:
    return u_fn(x, s, t) if c is None else u_fn(x, s, t, c=c)


def bcast(t: Array, x: Array) -> Array:
    """A per-sample time ``(n,)`` reshaped to broadcast against ``x`` of shape ``(n, ...)``."""
    return t.reshape((t.shape[0],) + (1,) * (x.ndim - 1))


def sum_squares(err: Array) -> Array:
    """Per-sample sum of squares over all non-batch axes (MeanFlow's ``l``)."""
    return jnp.sum(err.reshape(err.shape[0], -1) ** 2, axis=-1)


def mean_squares(err: Array) -> Array:
    """Per-sample mean of squares over all non-batch axes (the CFM convention)."""
    return jnp.mean(err.reshape(err.shape[0], -1) ** 2, axis=-1)


def adaptive_weighted(l: Array, *, p: float, eps: float) -> Array:
    """MeanFlow's adaptive loss ``l / sg((l + c)^p)`` per sample (2505.13447, sec. 4.3; code
    ``norm_p``, ``norm_eps``). ``p = 0`` is plain L2; its gradient is ``grad(l) / (l + c)^p``."""
    if p == 0.0:
        return l
    # stop-gradient on the weight: MeanFlow eq. for the adaptive loss, w = 1 / sg((||D||^2 + c)^p).
    return l / jax.lax.stop_gradient((l + eps) ** p)


def check_inputs(x1: Array, x0: Array | None, c: Any) -> None:
    _checks.check_float_array("x1", x1, min_ndim=1)
    if x0 is not None:
        _checks.check_float_array("x0", x0, min_ndim=1)
        _checks.check_same_shape("x0", x0, "x1", x1)
    if c is not None:
        for leaf in jax.tree.leaves(c):
            _checks.check_batch_size("c", leaf, x1.shape[0])


def check_fraction(name: str, value: float, *, low: float = 0.0, high: float = 1.0) -> None:
    if not (low <= float(value) <= high):
        raise ValueError(f"`{name}` must lie in [{low}, {high}], got {value!r}.")


def num_fm(n: int, fm_fraction: float) -> int:
    """Number of flow-matching (``s = t``) samples: the first ``round(fm_fraction * n)`` rows
    (MeanFlow's code puts the ``r = t`` samples first, with a deterministic count)."""
    return int(round(fm_fraction * n))


def sorted_pairs(base: TimeSampler) -> PairSampler:
    """``a, b ~ base`` independently, ``s = min(a, b)``, ``t = max(a, b)``."""

    def sample(key: Array, n: int) -> tuple[Array, Array]:
        ka, kb = jax.random.split(key)
        a, b = base(ka, n), base(kb, n)
        return jnp.minimum(a, b), jnp.maximum(a, b)

    return sample


def draw_times(
    key: Array,
    n: int,
    *,
    pair_sampler: PairSampler,
    fm_fraction: float,
    fm_sampler: TimeSampler | None,
    dtype,
) -> tuple[Array, Array, int]:
    """``(s, t, n_fm)``: the first ``n_fm`` rows have ``s = t``.

    With ``fm_sampler=None`` those rows keep the pair's start ``s`` and set ``t = s`` (MeanFlow's
    code, translated: paper ``r = t_MF`` is project ``t = s``); otherwise their time is drawn from
    ``fm_sampler`` (ours; e.g. ``U[0, 1]`` so the boundary branch is plain flow matching).
    """
    kp, kf = jax.random.split(key)
    s, t = pair_sampler(kp, n)
    s, t = s.astype(dtype), t.astype(dtype)
    k = num_fm(n, fm_fraction)
    first = jnp.arange(n) < k
    if fm_sampler is not None:
        tf = fm_sampler(kf, n).astype(dtype)
        s = jnp.where(first, tf, s)
    t = jnp.where(first, s, t)
    return s, t, k


def rollout_target(
    u_fn: Callable,
    x: Array,
    s: Array,
    t: Array,
    fractions: Array,
    *,
    c: Any = None,
    inner_points: Callable[[Array], Array] | None = None,
) -> tuple[Array, Array]:
    """Interval-splitting target ``sum_k f_k u(x_k, m_k, m_{k+1})`` over a K-way split of [s, t].

    ``fractions`` ``(K, n)`` are non-negative and sum to 1 over K; ``m_0 = s``,
    ``m_{k+1} = m_k + f_k (t - s)``, ``x_0 = x`` and ``x_{k+1} = x_k + (m_{k+1} - m_k) u_k`` is the
    model's own trajectory (NOTATION interval splitting; for K = 2, ``f = (lam, 1 - lam)``).
    ``inner_points(m)`` replaces the model's points ``x_k`` (k >= 1) by another point at time ``m``
    (the interpolant negative control of splitmeanflow.md sec. 5). Returns ``(target, x_K)``; no
    stop-gradient is applied here (callers apply it where their paper puts it).
    """
    m = s
    xk = x
    target = jnp.zeros_like(x)
    for k in range(fractions.shape[0]):
        f = fractions[k]
        m_next = t if k == fractions.shape[0] - 1 else m + f * (t - s)
        if k > 0 and inner_points is not None:
            xk = inner_points(m)
        uk = call_u(u_fn, xk, m, m_next, c)
        target = target + bcast(f, x) * uk
        xk = xk + bcast(m_next - m, x) * uk
        m = m_next
    return target, xk


def split_fractions(key: Array, n: int, num_splits: int, dtype) -> Array:
    """Uniform random K-way split of the unit interval: sorted uniforms' spacings, ``(K, n)``.
    For K = 2 this is ``(lam, 1 - lam)`` with ``lam ~ U(0, 1)``."""
    cuts = jnp.sort(jax.random.uniform(key, (num_splits - 1, n), dtype), axis=0)
    edges = jnp.concatenate([jnp.zeros((1, n), dtype), cuts, jnp.ones((1, n), dtype)], axis=0)
    return jnp.diff(edges, axis=0)
