"""k-Diff: a generalised prediction target between data, velocity and noise (Jin & Wang, arXiv 2601.21419).

Project notation (linear path, t = 1 data): ``x_t = t x1 + (1 - t) x0``, ``v = x1 - x0``. The network
predicts

    u_k = k x1 - (1 - k) x0,     k in [0, 1]      (k = 1: data / x-prediction; k = 1/2: v / 2; k = 0: -noise)

and k may be learned as ``k = sigmoid(w_k)``. The paper's relation for data of intrinsic dimension d
in ambient dimension D: the best fixed target is ``k* = D / (D + d)`` (-> 1, x-prediction, when D >> d).

What is the paper's and what is ours (the full text was not available; spec kdiff.md):
- Paper: the target ``u_k``, learning ``k = sigmoid(w_k)`` jointly, and ``k* = D/(D+d)``.
- Ours (derived): the conversion ``[u; x_t] = [[k, -(1-k)], [t, 1-t]] [x1; x0]`` with determinant
  ``Delta(k, t) = k(1-t) + (1-k) t``:
      x1 = ((1-t) u + (1-k) x_t) / Delta,  x0 = (k x_t - t u) / Delta,  v = (u + (1-2k) x_t) / Delta;
  the default loss in velocity space ``E || v_hat - (x1 - x0) ||^2`` with ``Delta`` clamped at
  ``delta_min = 0.05`` (JiT's clamp of 1-t), so k = 1 is JiT's x-prediction + v-loss and k = 1/2 is
  v-prediction + v-loss; the alternative ``loss_space="target"`` regresses ``u_k`` directly, with
  the gradient to ``w_k`` flowing through the target; the energy argument behind ``k*``
  (``E||u_k||^2 = k^2 d + (1-k)^2 D`` for unit-variance d-dim data and N(0, I_D) noise).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array

from flowjax import _checks
from flowjax.losses.cfm import call_with_condition, mean_squared
from flowjax.paths import broadcast_time
from flowjax.timesteps import TimeSampler, logit_normal

LOSS_SPACES = ("velocity", "target")


def kdiff_delta(k: Array, t: Array) -> Array:
    """``Delta(k, t) = k (1 - t) + (1 - k) t`` (>= min(k, 1 - k) on [0, 1]); the conversion's determinant."""
    return k * (1.0 - t) + (1.0 - k) * t


def kdiff_target(x0: Array, x1: Array, k: Array) -> Array:
    """``u_k = k x1 - (1 - k) x0``."""
    return k * x1 - (1.0 - k) * x0


def kdiff_convert(u: Array, x_t: Array, t: Array, k: Array, *, delta_min: float = 0.0) -> tuple[Array, Array, Array]:
    """Convert a ``u_k`` prediction at ``(x_t, t)`` to ``(x1_hat, x0_hat, v_hat)`` (derived, spec §3.2).

    ``t`` is a scalar or ``(n,)``; ``k`` a scalar. ``Delta`` is clamped below at ``delta_min``.
    """
    tb = broadcast_time(t, x_t)
    delta = jnp.maximum(kdiff_delta(k, tb), delta_min)
    x1 = ((1.0 - tb) * u + (1.0 - k) * x_t) / delta
    x0 = (k * x_t - tb * u) / delta
    v = (u + (1.0 - 2.0 * k) * x_t) / delta
    return x1, x0, v


def kdiff_velocity(u: Array, x_t: Array, t: Array, k: Array, *, delta_min: float = 0.05) -> Array:
    """``v_hat = (u + (1 - 2k) x_t) / max(Delta(k, t), delta_min)``: the velocity for sampling and the loss."""
    tb = broadcast_time(t, x_t)
    return (u + (1.0 - 2.0 * k) * x_t) / jnp.maximum(kdiff_delta(k, tb), delta_min)


def kdiff_from_velocity(v: Array, x_t: Array, t: Array, k: Array) -> Array:
    """The ``u_k`` that corresponds to a velocity: ``u = Delta v - (1 - 2k) x_t`` (e.g. the optimum from ``v*``)."""
    tb = broadcast_time(t, x_t)
    return kdiff_delta(k, tb) * v - (1.0 - 2.0 * k) * x_t


def optimal_k(ambient_dim: int, intrinsic_dim: int) -> float:
    """The paper's ``k* = D / (D + d)``."""
    _checks.check_positive_int("ambient_dim", ambient_dim)
    _checks.check_positive_int("intrinsic_dim", intrinsic_dim)
    return ambient_dim / (ambient_dim + intrinsic_dim)


def kdiff(
    u_fn: Callable[..., Array],
    key: Array,
    x1: Array,
    *,
    k: float | Array | None = None,
    logit_k: Array | None = None,
    loss_space: str = "velocity",
    delta_min: float = 0.05,
    time_sampler: TimeSampler | None = None,
    c: Any = None,
) -> tuple[Array, dict[str, Array]]:
    """k-Diff loss (2601.21419): the network predicts ``u_k``; ``k`` fixed or ``k = sigmoid(logit_k)`` learned.

    Args:
      u_fn: the network ``u_fn(x_t, t) -> u_k`` prediction.
      key: PRNG key.
      x1: data ``(n, ...)``.
      k: a fixed target in ``[0, 1]`` (exactly 0 and 1 allowed), or
      logit_k: the learnable scalar ``w_k`` (include it in the trained parameters); exactly one of
        ``k`` / ``logit_k`` must be given.
      loss_space: ``"velocity"`` (default, derived): ``||v_hat - (x1 - x0)||^2`` with clamped Delta;
        ``"target"``: ``||u_hat - u_k||^2``, gradients to ``w_k`` through the target.
      delta_min: clamp of Delta (JiT's 0.05).
      time_sampler: default logit-normal(-0.8, 0.8) in project time (JiT).
      c: condition passed to ``u_fn``.

    Returns:
      ``(loss, {"k", "mse_velocity"})``.
    """
    _checks.check_float_array("x1", x1, min_ndim=1)
    _checks.check_choice("loss_space", loss_space, LOSS_SPACES)
    if (k is None) == (logit_k is None):
        raise ValueError("give exactly one of `k` (fixed) or `logit_k` (learned, k = sigmoid(logit_k)).")
    if k is not None and not isinstance(k, jax.core.Tracer):
        kv = float(k)
        if not 0.0 <= kv <= 1.0:
            raise ValueError(f"`k` must lie in [0, 1], got {kv}.")
    if delta_min < 0:
        raise ValueError(f"`delta_min` must be >= 0, got {delta_min}.")
    kk = jnp.asarray(k, x1.dtype) if k is not None else jax.nn.sigmoid(jnp.asarray(logit_k, x1.dtype))
    time_sampler = time_sampler or logit_normal(-0.8, 0.8)
    k0, kt = jax.random.split(key)
    x0 = jax.random.normal(k0, x1.shape, x1.dtype)
    t = time_sampler(kt, x1.shape[0]).astype(x1.dtype)
    tb = broadcast_time(t, x1)
    x_t = tb * x1 + (1.0 - tb) * x0
    v = x1 - x0
    u_hat = call_with_condition(u_fn, x_t, t, c=c)
    v_hat = kdiff_velocity(u_hat, x_t, t, kk, delta_min=delta_min)
    mse_v = mean_squared(v_hat - v)
    if loss_space == "velocity":
        loss = jnp.mean(mse_v)
    else:
        loss = jnp.mean(mean_squared(u_hat - kdiff_target(x0, x1, kk)))
    return loss, {"k": kk, "mse_velocity": jnp.mean(mse_v)}


__all__ = [
    "kdiff",
    "kdiff_convert",
    "kdiff_delta",
    "kdiff_from_velocity",
    "kdiff_target",
    "kdiff_velocity",
    "optimal_k",
]
