"""Action Flow Matching (Murillo-González & Liu, arXiv 2504.18471): transport the planned action
toward the intended action under a misaligned dynamics model.

Bridge flow matching with a data-dependent source (code; project convention): ``x0 = a_plan``
(t = 0), ``x1 = a_int`` (t = 1), ``x_t = (1 − t) a_plan + t a_int``, target ``a_int − a_plan``,
conditioned on a regime ``z`` (state, action(s), state error). No noise is added at inference.

- :func:`afm_loss`: ``E ‖v(x_t, t, c=z) − (a_int − a_plan)‖²`` (mean), pure.
- :func:`midpoint_transport`: 10-step explicit midpoint (RK2) on ``[0, 1]`` (20 NFE), as in the code.
- :func:`bridge_velocity`: the analytic marginal velocity for ``a_int = a_plan/g`` with ``g > 0``
  (network not told ``a_plan``): ``v(a, t) = a (1/g − 1)/(1 − t + t/g)`` (spec §6.2).
- :func:`regime_update`: the controller's switching rule (spec §3.5): ``‖e‖ < τ ⇒ e = 0``; after a
  regime change the raw plan is executed once (probe), then AFM actions.
The online controller / MPPI experiment is not implemented (see the report).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array

from flowjax import _checks
from flowjax.losses.cfm import call_with_condition


def afm_loss(
    v_fn: Callable[..., Array], key: Array, x1: Array, *, x0: Array, c: Any = None
) -> tuple[Array, dict[str, Array]]:
    """AFM training loss (spec §3.3): ``mean ‖v(x_t, t, c) − (x1 − x0)‖²``, ``t ~ U(0, 1)``,
    ``x0 = a_plan``, ``x1 = a_int``, ``c = z`` (regime)."""
    _checks.check_float_array("x1", x1, ndim=2)
    _checks.check_same_shape("x0", x0, "x1", x1)
    t = jax.random.uniform(key, (x1.shape[0],), x1.dtype)
    xt = (1.0 - t)[:, None] * x0 + t[:, None] * x1
    err = call_with_condition(v_fn, xt, t, c=c) - (x1 - x0)
    loss = jnp.mean(err**2)
    return loss, {"mse": loss}


def midpoint_transport(v_fn: Callable[..., Array], a_plan: Array, *, steps: int = 10, c: Any = None) -> Array:
    """``a ← a + Δ v(a + (Δ/2) v(a, t), t + Δ/2)``, ``t = i/steps`` (spec §3.4; 2·steps NFE)."""
    _checks.check_positive_int("steps", steps)
    n = a_plan.shape[0]
    dt = 1.0 / steps

    def body(i, a):
        t = jnp.full((n,), i * dt, a.dtype)
        k1 = call_with_condition(v_fn, a, t, c=c)
        return a + dt * call_with_condition(v_fn, a + 0.5 * dt * k1, t + 0.5 * dt, c=c)

    return jax.lax.fori_loop(0, steps, body, a_plan)


def bridge_velocity(a: Array, t: Array, *, gain: Array) -> Array:
    """Marginal velocity for ``a_int = a_plan / g`` (``g > 0``, elementwise): ``a (1/g − 1)/(1 − t + t/g)``."""
    inv = 1.0 / gain
    return a * (inv - 1.0) / (1.0 - t[:, None] + t[:, None] * inv)


def regime_update(error: Array, misaligned: Array, *, threshold: float = 1.0) -> tuple[Array, Array, Array]:
    """One step of the controller's regime logic (spec §3.5).

    Returns ``(error_used, execute_raw_plan, misaligned_next)``: the error is zeroed when
    ``‖e‖ < τ``; if the previous step flagged a misalignment the raw plan is executed now (probe),
    otherwise the AFM action; the flag for the next step is ``‖e‖ > τ`` (cleared after a probe).
    """
    norm = jnp.linalg.norm(error, axis=-1)
    e = jnp.where((norm < threshold)[..., None], 0.0, error)
    execute_raw = misaligned
    nxt = jnp.where(misaligned, False, norm > threshold)
    return e, execute_raw, nxt


__all__ = ["afm_loss", "bridge_velocity", "midpoint_transport", "regime_update"]
