"""FlowTurbo sampling: Heun, pseudo-corrector and velocity-refiner steps (Zhao et al. 2409.18128).

Read from the official code (``models_assemble.py``, ``transport/integrators.py``), spec
``flowturbo.md`` §3.2-3.6, linear path in project time (no mapping needed). Uniform grid
``t_i = t0 + i Delta``, ``N = N_H + N_P + N_R`` steps applied in the order ``H^{N_H} P^{N_P} R^{N_R}``,
with a velocity cache ``c`` carried between steps:

- H (Heun, 2 NFE): ``k1 = v(x_i, t_i)``, ``x~ = x_i + Delta k1``, ``k2 = v(x~, t_{i+1})``,
  ``x_{i+1} = x_i + Delta/2 (k1 + k2)``, ``c <- k2``.
- P (pseudo corrector, 1 NFE): H with ``k1 = c``, the velocity at the previous step's *Euler
  predictor point*; if there is no cache yet (``N_H = 0``) the first ``k1`` is evaluated.
  Local error ``O(Delta^3)``, global order 2 (the argument is the spec's, derived, not the paper's).
- R (refiner, 0 predictor NFE, 2 refiner NFE): ``k1 = c + r(x_i, t_i, c)``, ``x~ = x_i + Delta k1``,
  ``k2 = k1 + r(x~, t_{i+1}, v_ref)``, ``x_{i+1} = x_i + Delta/2 (k1 + k2)``, ``c <- k1``.
  ``v_ref`` of the second call is ``k1`` (``second_ref="k1"``, as ``transport/integrators.py``;
  our default) or the old cache (``"cache"``, as the released ``models_assemble.py``).

:func:`make_flowturbo_sampler` compiles the whole schedule into one jitted function (each block of
equal step types is a ``lax.scan``; the JAX form of the paper's "sample-aware compilation").
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array

from flowjax import _checks

SECOND_REFS = ("k1", "cache")


def _call(fn, x, t, *extra, c=None):
    tt = jnp.full((x.shape[0],), t, x.dtype)
    return fn(x, tt, *extra) if c is None else fn(x, tt, *extra, c=c)


def heun_step(v_fn, x, t, dt, *, c=None) -> tuple[Array, Array]:
    """One H step; returns ``(x_next, cache = k2)``."""
    k1 = _call(v_fn, x, t, c=c)
    k2 = _call(v_fn, x + dt * k1, t + dt, c=c)
    return x + 0.5 * dt * (k1 + k2), k2


def pseudo_corrector_step(v_fn, x, t, dt, cache, *, c=None) -> tuple[Array, Array]:
    """One P step with ``k1 = cache``; returns ``(x_next, cache = k2)``."""
    k2 = _call(v_fn, x + dt * cache, t + dt, c=c)
    return x + 0.5 * dt * (cache + k2), k2


def refiner_step(r_fn, x, t, dt, cache, *, second_ref: str = "k1", c=None) -> tuple[Array, Array]:
    """One R step with the offset refiner ``r_fn(x, t, v_ref)``; returns ``(x_next, cache = k1)``."""
    k1 = cache + _call(r_fn, x, t, cache, c=c)
    ref = k1 if second_ref == "k1" else cache
    k2 = k1 + _call(r_fn, x + dt * k1, t + dt, ref, c=c)
    return x + 0.5 * dt * (k1 + k2), k1


def flowturbo_nfe(n_h: int, n_p: int, n_r: int) -> dict[str, int]:
    """NFE bookkeeping (spec §3.6): predictor ``2 N_H + N_P (+1 if N_H = 0 and N_P > 0)``, refiner ``2 N_R``."""
    predictor = 2 * n_h + n_p + (1 if n_h == 0 and n_p > 0 else 0)
    return {"predictor": predictor, "refiner": 2 * n_r, "steps": n_h + n_p + n_r}


def _validate_counts(n_h, n_p, n_r, refiner, second_ref):
    for name, v in (("n_h", n_h), ("n_p", n_p), ("n_r", n_r)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise ValueError(f"`{name}` must be a non-negative integer, got {v!r}.")
    if n_h + n_p + n_r == 0:
        raise ValueError("need at least one step: n_h + n_p + n_r must be positive.")
    if n_r > 0 and refiner is None:
        raise ValueError("`refiner` is required when n_r > 0.")
    if n_r > 0 and n_h + n_p == 0:
        raise ValueError("refiner steps need a cached predictor velocity: use n_h + n_p >= 1.")
    _checks.check_choice("second_ref", second_ref, SECOND_REFS)


def flowturbo(
    v_fn: Callable[..., Array],
    x0: Array,
    *,
    n_h: int = 1,
    n_p: int = 5,
    n_r: int = 3,
    refiner: Callable[..., Array] | None = None,
    t0: float = 0.0,
    t1: float = 1.0,
    second_ref: str = "k1",
    c: Any = None,
) -> Array:
    """FlowTurbo's mixed schedule ``H^{n_h} P^{n_p} R^{n_r}`` on a uniform grid of ``[t0, t1]``.

    Args:
      v_fn: predictor velocity ``v(x, t)``.
      x0: states at ``t0``.
      n_h, n_p, n_r: numbers of Heun, pseudo-corrector and refiner steps (defaults: the code's
        ``sample.py`` demo, 1/5/3).
      refiner: ``r(x, t, v_ref) -> offset`` (needed when ``n_r > 0``).
      second_ref: ``v_ref`` of the second refiner call, ``"k1"`` or ``"cache"`` (see module doc).

    Returns:
      The state at ``t1``.
    """
    _checks.check_float_array("x0", x0, min_ndim=1)
    _validate_counts(n_h, n_p, n_r, refiner, second_ref)
    n = n_h + n_p + n_r
    dt = (t1 - t0) / n
    ts = t0 + dt * jnp.arange(n, dtype=x0.dtype)
    x = x0
    cache = jnp.zeros_like(x0)
    if n_h:
        def hbody(carry, t):
            return heun_step(v_fn, carry[0], t, dt, c=c), None

        (x, cache), _ = jax.lax.scan(hbody, (x, cache), ts[:n_h])
    if n_p:
        start = n_h
        if n_h == 0:  # no cache yet: evaluate the first k1 (one extra predictor NFE)
            cache = _call(v_fn, x, ts[0], c=c)

        def pbody(carry, t):
            return pseudo_corrector_step(v_fn, carry[0], t, dt, carry[1], c=c), None

        (x, cache), _ = jax.lax.scan(pbody, (x, cache), ts[start : start + n_p])
    if n_r:
        def rbody(carry, t):
            return refiner_step(refiner, carry[0], t, dt, carry[1], second_ref=second_ref, c=c), None

        (x, cache), _ = jax.lax.scan(rbody, (x, cache), ts[n_h + n_p :])
    return x


def pseudo_corrector(v_fn: Callable[..., Array], x0: Array, *, steps: int, t0: float = 0.0, t1: float = 1.0,
                     c: Any = None) -> Array:
    """All-P sampling (``steps + 1`` predictor NFE, second order)."""
    _checks.check_positive_int("steps", steps)
    return flowturbo(v_fn, x0, n_h=0, n_p=steps, n_r=0, t0=t0, t1=t1, c=c)


def make_flowturbo_sampler(
    v_fn: Callable[..., Array],
    refiner: Callable[..., Array] | None = None,
    *,
    n_h: int = 1,
    n_p: int = 5,
    n_r: int = 3,
    t0: float = 0.0,
    t1: float = 1.0,
    second_ref: str = "k1",
) -> Callable[[Array], Array]:
    """The whole schedule compiled as one jitted function ``sample(x0) -> x1`` (input buffer donated)."""
    _validate_counts(n_h, n_p, n_r, refiner, second_ref)

    def sample(x0: Array) -> Array:
        return flowturbo(v_fn, x0, n_h=n_h, n_p=n_p, n_r=n_r, refiner=refiner, t0=t0, t1=t1, second_ref=second_ref)

    return jax.jit(sample, donate_argnums=0)


__all__ = [
    "flowturbo",
    "flowturbo_nfe",
    "heun_step",
    "make_flowturbo_sampler",
    "pseudo_corrector",
    "pseudo_corrector_step",
    "refiner_step",
]
