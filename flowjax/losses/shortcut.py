"""Shortcut models (Frans, Hafner, Levine, Abbeel, arXiv 2410.12557) and GestureLSM's version
(Liu et al., arXiv 2501.18898): step-size-conditioned self-consistency with a bootstrap fraction.

Project notation: the shortcut velocity ``s_theta(x, t, d)`` is the average velocity
``u_theta(x, t, t + d)``. The loss mixes flow-matching rows with bootstrap rows:

    FM rows:        || u(x_t, t, t + d0) - (alpha'_t x1 + sigma'_t x0) ||^2          (d0 = fm_step)
    bootstrap rows: || u(x_t, t, t + 2d) - sg[(w1 + w2) / 2] ||^2,
                    w1 = u(x_t, t, t + d), x' = x_t + d w1, w2 = u(x', t + d, t + 2d)

(the midpoint semigroup identity; flowmaps.md's PSD-M with ``s = t``). Step levels: the student's
``2d = 2^-k`` for ``k = 0, ..., num_levels - 1`` (Frans: 7 levels, ``2d in {1, ..., 1/64}``), equal
shares of the bootstrap rows.

Paper's / official code's: the objective, the levels, the dyadic time grid ``t = k' 2d``
(``grid="dyadic"``, Frans), ``fm_step = 1/128`` (Frans) or 0 (GestureLSM), bootstrap fraction 1/8
(Frans code) or 1/4 (GestureLSM), targets clipped to [-4, 4] (Frans; ``clip_target``), the teacher
with EMA (Frans) or online parameters (GestureLSM) via ``teacher_fn``, GestureLSM's
``t ~ Beta(2, 1.2)`` (``time_sampler=flowjax.timesteps.beta(2.0, 1.2)``, project time as in its code).
Ours: ``grid="continuous"`` draws ``d`` first and sets ``t = (1 - 2d) t'`` with ``t' ~ time_sampler``
so that ``t + 2d <= 1`` and the 1-step level is trained (gesturelsm.md pitfalls); GestureLSM's
``mean(1/t)`` factor on the FM loss is not reproduced; errors are per-element means.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array

from flowjax import _checks
from flowjax.losses import _fewstep as fs
from flowjax.paths import AffinePath, linear_path
from flowjax.timesteps import TimeSampler, uniform

GRIDS = ("continuous", "dyadic")


def shortcut_times(
    key: Array, n: int, *, num_levels: int = 7, grid: str = "continuous", time_sampler: TimeSampler | None = None,
    dtype=jnp.float32,
) -> tuple[Array, Array]:
    """Bootstrap ``(t, d)`` (teacher half-step ``d``): levels ``2d = 2^-k`` in equal shares (row ``i``
    gets level ``i mod num_levels``); ``t + 2d <= 1`` always."""
    _checks.check_positive_int("num_levels", num_levels)
    _checks.check_choice("grid", grid, GRIDS)
    time_sampler = time_sampler or uniform()
    level = jnp.arange(n) % num_levels
    two_d = (2.0 ** (-level)).astype(dtype)
    if grid == "dyadic":
        # Frans: t = k' * 2d with k' ~ U{0, ..., 1/(2d) - 1}
        count = jnp.round(1.0 / two_d)
        k = jnp.floor(jax.random.uniform(key, (n,), dtype) * count)
        t = k * two_d
    else:
        t = (1.0 - two_d) * time_sampler(key, n).astype(dtype)
    return t, two_d / 2.0


def shortcut(
    u_fn: Callable[..., Array],
    key: Array,
    x1: Array,
    *,
    x0: Array | None = None,
    path: AffinePath | None = None,
    bootstrap_fraction: float = 0.25,
    num_levels: int = 7,
    grid: str = "continuous",
    time_sampler: TimeSampler | None = None,
    fm_step: float = 0.0,
    teacher_fn: Callable[..., Array] | None = None,
    clip_target: float | None = None,
    c: Any = None,
) -> tuple[Array, dict[str, Array]]:
    """Shortcut-model loss (2410.12557; GestureLSM 2501.18898 defaults), project time.

    Args:
      u_fn: average velocity ``u_fn(x, s, t)``; the shortcut ``s(x, t, d) = u(x, t, t + d)``.
      key: PRNG key.
      x1: data ``(n, ...)``.
      x0: noise (default standard normal).
      path: affine path (default linear).
      bootstrap_fraction: share of self-consistency rows (GestureLSM 1/4; Frans's code 1/8).
      num_levels: number of student step levels ``2d = 1, 1/2, ..., 2^-(num_levels-1)``.
      grid: ``"continuous"`` (``t = (1 - 2d) t'``, ours) or ``"dyadic"`` (Frans's grid).
      time_sampler: ``t'`` (and the FM rows' ``t``) sampler; default ``U[0, 1]``; GestureLSM:
        ``flowjax.timesteps.beta(2.0, 1.2)``. On the dyadic grid the FM rows use ``t ~ U{0, 1/128, ...}``.
      fm_step: step input of the FM rows (GestureLSM 0; Frans 1/128).
      teacher_fn: model for the two bootstrap calls (default ``u_fn``; pass the EMA model for Frans).
      clip_target: clip the bootstrap target to ``[-clip, clip]`` (Frans: 4 for normalised data).
      c: condition passed as ``c=``.

    Returns:
      ``(loss, {"mse_fm", "mse_bootstrap"})``; the loss is the mean over all rows.
    """
    fs.check_inputs(x1, x0, c)
    fs.check_fraction("bootstrap_fraction", bootstrap_fraction)
    _checks.check_choice("grid", grid, GRIDS)
    if not (0.0 <= fm_step <= 1.0):
        raise ValueError(f"`fm_step` must lie in [0, 1], got {fm_step}.")
    path = path or linear_path()
    time_sampler = time_sampler or uniform()
    teacher_fn = teacher_fn or u_fn
    n = x1.shape[0]
    n_b = fs.num_fm(n, bootstrap_fraction)
    n_fm = n - n_b

    k0, kf, kb = jax.random.split(key, 3)
    if x0 is None:
        x0 = jax.random.normal(k0, x1.shape, x1.dtype)
    if grid == "dyadic":
        t_fm = jnp.floor(jax.random.uniform(kf, (n_fm,), x1.dtype) * 128.0) / 128.0
    else:
        t_fm = time_sampler(kf, n_fm).astype(x1.dtype)
    t_fm = jnp.minimum(t_fm, 1.0 - fm_step)
    t_b, d = shortcut_times(kb, n_b, num_levels=num_levels, grid=grid, time_sampler=time_sampler, dtype=x1.dtype)
    t = jnp.concatenate([t_fm, t_b])
    end = jnp.concatenate([t_fm + fm_step, t_b + 2.0 * d])
    x_t, v_c = path.sample(x0, x1, t)
    pred = fs.call_u(u_fn, x_t, t, end, c)  # one graded forward over all rows

    parts, aux = [], {}
    if n_fm > 0:
        l_fm = fs.mean_squares(pred[:n_fm] - v_c[:n_fm])
        parts.append(l_fm)
        aux["mse_fm"] = jnp.mean(l_fm)
    if n_b > 0:
        sl = slice(n_fm, None)
        c_b = None if c is None else jax.tree.map(lambda a: a[sl], c)
        halves = jnp.full((2, n_b), 0.5, x1.dtype)
        target, _ = fs.rollout_target(teacher_fn, x_t[sl], t_b, t_b + 2.0 * d, halves, c=c_b)
        if clip_target is not None:
            target = jnp.clip(target, -clip_target, clip_target)
        # Shortcut models: the two-half-step target is stop-gradient (Frans eq. for L_SC).
        target = jax.lax.stop_gradient(target)
        l_b = fs.mean_squares(pred[sl] - target)
        parts.append(l_b)
        aux["mse_bootstrap"] = jnp.mean(l_b)
    return jnp.mean(jnp.concatenate(parts)), aux


__all__ = ["shortcut", "shortcut_times"]
