"""A differentiable, unrolled fixed-step ODE solver (``lax.scan`` with a checkpoint per step).

:func:`flowjax.samplers.ode` goes through diffrax, whose fixed-step solves are not reverse-mode
differentiable without a step bound; training objectives that backpropagate *through* an N-step
sampler (MLE fine-tuning of reconstructions, arXiv 2510.02081; unrolled distillation) need exactly
the N steps the sampler takes at inference. :func:`unrolled_ode` is that solver: the same Euler /
midpoint / Heun / RK4 updates as ``ode(..., solver=name, steps=N)`` (tested equal), written as a
``lax.scan`` whose step function is wrapped in ``jax.checkpoint`` so that memory is O(N) states
instead of O(N * activations) (spec mle-finetune.md section 4; the checkpointing is ours).

Per-sample start and end times are allowed (``t0``/``t1`` of shape ``(n,)``), which is what a
partial reconstruction from ``(x_t, t)`` to ``t = 1`` needs.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike

from flowjax import _checks

UNROLLED_SOLVERS = ("euler", "midpoint", "heun", "rk4")


def _bcast(a: Array, x: Array) -> Array:
    """(n,) -> (n, 1, ..., 1) to broadcast against x without rank promotion."""
    return a.reshape(a.shape + (1,) * (x.ndim - 1))


def solver_stage_times(solver: str) -> tuple[float, ...]:
    """Fractions of a step at which ``solver`` evaluates the field (Euler: 0; Heun: 0, 1; ...)."""
    _checks.check_choice("solver", solver, UNROLLED_SOLVERS)
    return {"euler": (0.0,), "midpoint": (0.0, 0.5), "heun": (0.0, 1.0), "rk4": (0.0, 0.5, 1.0)}[solver]


def unrolled_ode(
    v_fn: Callable[..., Array],
    x0: Array,
    *,
    steps: int,
    solver: str = "euler",
    t0: ArrayLike = 0.0,
    t1: ArrayLike = 1.0,
    c: Any = None,
    checkpoint: bool = True,
    save_trajectory: bool = False,
) -> Array:
    """Solve ``dx/dt = v(x, t)`` from ``t0`` to ``t1`` in ``steps`` uniform fixed steps, differentiably.

    Args:
      v_fn: ``v_fn(x, t)`` with ``t`` of shape ``(n,)`` (or ``v_fn(x, t, c=c)``).
      x0: ``(n, ...)`` state at ``t0``.
      steps: number of steps N (the sampler's inference step count).
      solver: ``"euler" | "midpoint" | "heun" | "rk4"``.
      t0, t1: scalars or per-sample ``(n,)`` times in ``[0, 1]``; ``t1 < t0`` integrates backwards.
      c: condition passed as ``c=`` to ``v_fn``.
      checkpoint: wrap each step in ``jax.checkpoint`` (recompute activations in the backward pass).
      save_trajectory: return the ``(steps + 1, n, ...)`` trajectory instead of the end state.

    Returns:
      The state at ``t1`` (``(n, ...)``), or the whole trajectory.

    Example:
      >>> import jax.numpy as jnp
      >>> x1 = unrolled_ode(lambda x, t: jnp.ones_like(x), jnp.zeros((3, 2)), steps=4)
    """
    _checks.check_float_array("x0", x0, min_ndim=1)
    _checks.check_positive_int("steps", steps)
    _checks.check_choice("solver", solver, UNROLLED_SOLVERS)
    n = x0.shape[0]
    _checks.check_time("t0", t0, n)
    _checks.check_time("t1", t1, n)
    t0v = jnp.broadcast_to(jnp.asarray(t0, x0.dtype), (n,))
    t1v = jnp.broadcast_to(jnp.asarray(t1, x0.dtype), (n,))
    h = (t1v - t0v) / steps
    hb = _bcast(h, x0)

    def f(x, t):
        return v_fn(x, t) if c is None else v_fn(x, t, c=c)

    def step(x, j):
        t = t0v + j * h
        if solver == "euler":
            x_new = x + hb * f(x, t)
        elif solver == "midpoint":
            k1 = f(x, t)
            x_new = x + hb * f(x + 0.5 * hb * k1, t + 0.5 * h)
        elif solver == "heun":
            k1 = f(x, t)
            k2 = f(x + hb * k1, t + h)
            x_new = x + 0.5 * hb * (k1 + k2)
        else:
            k1 = f(x, t)
            k2 = f(x + 0.5 * hb * k1, t + 0.5 * h)
            k3 = f(x + 0.5 * hb * k2, t + 0.5 * h)
            k4 = f(x + hb * k3, t + h)
            x_new = x + hb * (k1 + 2 * k2 + 2 * k3 + k4) / 6
        return x_new, (x_new if save_trajectory else None)

    body = jax.checkpoint(step) if checkpoint else step
    x_end, traj = jax.lax.scan(body, x0, jnp.arange(steps, dtype=x0.dtype))
    if save_trajectory:
        return jnp.concatenate([x0[None], traj], axis=0)
    return x_end


__all__ = ["UNROLLED_SOLVERS", "solver_stage_times", "unrolled_ode"]
