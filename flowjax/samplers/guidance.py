"""Classifier-free guidance (CFG) with interval gating and schedules, and manifold-projection CFG.

Project convention: ``t = 0`` noise, ``t = 1`` data, linear path ``x_t = (1 - t) x0 + t x1``.

CFG (Ho & Salimans 2207.12598) combines a conditional and an unconditional velocity,

    v_w(x, t) = v_u(x, t) + w(t) (v_c(x, t) - v_u(x, t)),

so ``w = 1`` is the purely conditional field. ``w(t)`` may be a constant, a schedule (any callable
of the time vector), or an interval-gated constant (guidance only for ``t`` inside ``[t_lo, t_hi]``,
Kynkäänniemi et al. 2404.07724; outside the interval ``w = 1``).

CFG-MP / CFG-MP+ (Cai, Liu, Su, Wang, arXiv 2601.21892; spec ``cfg-manifold.md``): before each
gated Euler step, move the state towards the set where conditional and unconditional predictions
agree, with the incremental-gradient operator (spec §3.3, read from the official code)

    G(x) = x_h + eta v_c(x_h, t),   x_h = x - eta v_u(x, t),   eta = Delta / 2,

iterated ``K`` times as a Picard iteration (CFG-MP) or with Anderson acceleration AA(m) with
damping ``beta`` and an absolute ridge ``lambda`` on the Gram matrix (CFG-MP+). Anderson mixing
reuses the ``G`` values already computed, so CFG-MP+ costs exactly the same network evaluations as
CFG-MP: ``2K`` per gated step on top of CFG's 2. Both evaluations inside ``G`` use the same time.
The optimisation reading (``v = -grad Phi_t``; projection onto ``{g = 0}``) is derived in the spec,
not from the paper text (which was not retrieved). The alternative operator "H" of the SD code,
``G_H(x) = x + eta v_c(x) - eta v_u(x + eta v_c(x))``, is available as ``operator="H"``.

Models are plain callables ``v_c(x, t)`` and ``v_u(x, t)`` with ``t`` of shape ``(n,)``; use
:func:`conditional_pair` to build them from one label-conditioned network.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike

from flowjax import _checks

VelocityFn = Callable[[Array, Array], Array]
ScaleFn = Callable[[Array], Array]

PROJECTIONS = ("none", "picard", "anderson")
OPERATORS = ("G", "H")


# --------------------------------------------------------------------------------------------
# Guidance scales
# --------------------------------------------------------------------------------------------
def constant_scale(w: float) -> ScaleFn:
    """``w(t) = w`` for every time."""
    return lambda t: jnp.full(jnp.shape(t), w, jnp.result_type(t, float))


def interval_scale(w: float, *, t_lo: float = 0.0, t_hi: float = 1.0) -> ScaleFn:
    """Guidance only inside ``[t_lo, t_hi]`` (Kynkäänniemi et al. 2404.07724), ``w = 1`` outside.

    In the paper (EDM sigma-time) guidance is disabled at high and low noise; in project time the
    interval is given directly in ``t``.
    """
    if not 0.0 <= t_lo <= t_hi <= 1.0:
        raise ValueError(f"`t_lo`, `t_hi` must satisfy 0 <= t_lo <= t_hi <= 1, got {t_lo}, {t_hi}.")
    return lambda t: jnp.where((t >= t_lo) & (t <= t_hi), w, 1.0).astype(jnp.result_type(t, float))


def linear_scale(w_start: float, w_end: float) -> ScaleFn:
    """A linear schedule ``w(t) = w_start + t (w_end - w_start)`` (noise end -> data end)."""
    return lambda t: w_start + jnp.asarray(t) * (w_end - w_start)


def _scale_fn(scale: float | ScaleFn) -> ScaleFn:
    return scale if callable(scale) else constant_scale(scale)


def conditional_pair(v_fn: Callable[..., Array], c: Any, null_c: Any) -> tuple[VelocityFn, VelocityFn]:
    """``(v_c, v_u)`` from one label-conditioned field ``v_fn(x, t, c=...)`` and its null label."""
    return (lambda x, t: v_fn(x, t, c=c)), (lambda x, t: v_fn(x, t, c=null_c))


def cfg_velocity(v_cond: Array, v_uncond: Array, w: ArrayLike) -> Array:
    """``v_u + w (v_c - v_u)`` with ``w`` a scalar or one value per sample."""
    w = jnp.asarray(w, v_cond.dtype)
    if w.ndim == 1:
        w = w.reshape(w.shape + (1,) * (v_cond.ndim - 1))
    return v_uncond + w * (v_cond - v_uncond)


# --------------------------------------------------------------------------------------------
# Fixed-point iterations (generic; per-sample over the leading axis)
# --------------------------------------------------------------------------------------------
def picard(g_fn: Callable[[Array], Array], x: Array, *, iterations: int) -> Array:
    """``x <- g(x)`` repeated ``iterations`` times."""
    return jax.lax.fori_loop(0, iterations, lambda _, y: g_fn(y), x)


def anderson(
    g_fn: Callable[[Array], Array],
    x: Array,
    *,
    iterations: int,
    window: int = 1,
    damping: float = 1.0,
    ridge: float = 1e-4,
    return_weights: bool = False,
):
    """Anderson acceleration AA(m) of the fixed-point map ``g``, independently per sample.

    Spec §3.3 (DiT code form): with residuals ``f_j = g(x_j) - x_j`` of the last ``m + 1`` iterates,
    ``alpha = H^{-1} 1 / (1^T H^{-1} 1)``, ``H_ij = <f_i, f_j> + ridge delta_ij`` (flattened per
    sample), ``x_{k+1} = (1 - beta) sum_j alpha_j x_j + beta sum_j alpha_j g(x_j)``; the first
    step is a plain ``x_1 = g(x_0)``. One ``g`` evaluation per iteration; the history is a ring
    buffer of length ``m + 1`` in the loop carry so the loop jits.

    Args:
      g_fn: the map, ``(n, ...) -> (n, ...)``.
      x: starting point ``(n, ...)``.
      iterations: number of ``g`` evaluations ``K``.
      window: ``m``; ``m + 1`` residuals enter the least-squares problem.
      damping: ``beta``.
      ridge: ``lambda`` (absolute, as in the code).
      return_weights: also return the last mixing weights ``alpha`` ``(n, m + 1)`` (0 on unused slots).
    """
    _checks.check_positive_int("iterations", iterations)
    _checks.check_positive_int("window", window)
    n = x.shape[0]
    size = window + 1
    flat = x.reshape(n, -1)
    d = flat.shape[1]
    hist_x = jnp.zeros((size, n, d), x.dtype)
    hist_g = jnp.zeros((size, n, d), x.dtype)
    hist_f = jnp.zeros((size, n, d), x.dtype)
    eye = jnp.eye(size, dtype=x.dtype)

    def body(k, carry):
        y, hx, hg, hf, _ = carry
        gy = g_fn(y.reshape(x.shape)).reshape(n, d)
        slot = k % size
        hx, hg, hf = hx.at[slot].set(y), hg.at[slot].set(gy), hf.at[slot].set(gy - y)
        valid = jnp.arange(size) < jnp.minimum(k + 1, size)  # (size,)
        gram = jnp.einsum("ind,jnd->nij", hf, hf) + ridge * eye[None]
        mask2 = valid[:, None] & valid[None, :]
        gram = jnp.where(mask2[None], gram, eye[None])
        rhs = jnp.broadcast_to(valid.astype(x.dtype), (n, size))
        sol = jnp.linalg.solve(gram, rhs[..., None])[..., 0]
        alpha = sol / jnp.sum(sol, axis=-1, keepdims=True)
        mixed = (1.0 - damping) * jnp.einsum("nj,jnd->nd", alpha, hx) + damping * jnp.einsum("nj,jnd->nd", alpha, hg)
        y_new = jnp.where(k == 0, gy, mixed)
        return y_new, hx, hg, hf, alpha

    alpha0 = jnp.zeros((n, size), x.dtype)
    y, *_, alpha = jax.lax.fori_loop(0, iterations, body, (flat, hist_x, hist_g, hist_f, alpha0))
    y = y.reshape(x.shape)
    return (y, alpha) if return_weights else y


# --------------------------------------------------------------------------------------------
# Manifold projection (CFG-MP)
# --------------------------------------------------------------------------------------------
def projection_operator(
    v_cond: VelocityFn, v_uncond: VelocityFn, t: Array, eta: ArrayLike, *, operator: str = "G"
) -> Callable[[Array], Array]:
    """The incremental-gradient map of spec §3.3 at time ``t`` (shape ``(n,)``), step ``eta``.

    ``"G"``: ``x_h = x - eta v_u(x, t)``; ``G(x) = x_h + eta v_c(x_h, t)`` (uncond. half step,
    then cond. half step, same ``t``). ``"H"``: ``x_h = x + eta v_c(x, t)``;
    ``G_H(x) = x_h - eta v_u(x_h, t)``. Two network evaluations per call.
    """
    _checks.check_choice("operator", operator, OPERATORS)
    eta = jnp.asarray(eta)

    def g(x):
        e = eta.reshape(eta.shape + (1,) * (x.ndim - eta.ndim)) if eta.ndim else eta
        if operator == "G":
            xh = x - e * v_uncond(x, t)
            return xh + e * v_cond(xh, t)
        xh = x + e * v_cond(x, t)
        return xh - e * v_uncond(xh, t)

    return g


def manifold_project(
    v_cond: VelocityFn,
    v_uncond: VelocityFn,
    x: Array,
    t: Array,
    *,
    eta: ArrayLike,
    iterations: int = 2,
    method: str = "anderson",
    window: int = 1,
    damping: float = 1.0,
    ridge: float = 1e-4,
    operator: str = "G",
) -> Array:
    """Approximate projection of ``x`` onto ``{v_c = v_u}`` (CFG-MP ``"picard"``, CFG-MP+ ``"anderson"``).

    ``iterations`` = ``K`` evaluations of ``G`` (``2K`` network calls) for either method.
    """
    _checks.check_choice("method", method, ("picard", "anderson"))
    g = projection_operator(v_cond, v_uncond, t, eta, operator=operator)
    if method == "picard":
        return picard(g, x, iterations=iterations)
    return anderson(g, x, iterations=iterations, window=window, damping=damping, ridge=ridge)


def cfg_nfe(times: ArrayLike, *, projection: str = "none", iterations: int = 2, gate_t: float = 0.6) -> int:
    """Network evaluations per sample of :func:`cfg_sample`: 2 per step plus ``2K`` per gated step."""
    grid = np.asarray(times, np.float64)
    steps = grid.size - 1
    if projection == "none":
        return 2 * steps
    gated = int(np.sum(grid[:-1] < gate_t))
    return 2 * steps + 2 * iterations * gated


def cfg_sample(
    v_cond: VelocityFn,
    v_uncond: VelocityFn,
    x0: Array,
    *,
    scale: float | ScaleFn = 1.0,
    steps: int = 10,
    times: ArrayLike | None = None,
    t_eval_min: float = 0.0,
    projection: str = "none",
    iterations: int = 2,
    window: int = 1,
    damping: float = 1.0,
    ridge: float = 1e-4,
    gate_t: float = 0.6,
    operator: str = "G",
    return_info: bool = False,
):
    """Euler CFG sampling from ``t = times[0]`` to ``times[-1]``, optionally with manifold projection.

    Spec ``cfg-manifold.md`` §3.4, per step ``i`` with ``Delta_i = t_{i+1} - t_i``:

        x* = Project(x_i)    if projection != "none" and t_i < gate_t, else x_i
        x_{i+1} = x* + Delta_i (v_u(x*, t) + w(t) (v_c(x*, t) - v_u(x*, t)))

    where the projection uses ``eta = Delta_i / 2`` and every velocity call of step ``i`` is made at
    ``t = max(t_i, t_eval_min)`` (the step size stays ``Delta_i``). With ``scale = 1`` and no
    projection this is the plain conditional Euler sampler.

    Args:
      v_cond, v_uncond: velocity callables ``v(x, t)``, ``t`` of shape ``(n,)``.
      x0: noise ``(n, ...)`` at ``times[0]``.
      scale: guidance scale ``w`` or a schedule ``w(t)`` (see :func:`interval_scale`).
      steps: uniform grid on ``[0, 1]`` when ``times`` is None.
      times: explicit increasing grid.
      t_eval_min: smallest time at which the networks are queried (e.g. 1e-3).
      projection: ``"none"`` (CFG), ``"picard"`` (CFG-MP) or ``"anderson"`` (CFG-MP+).
      iterations: ``K`` evaluations of ``G`` per gated step.
      window, damping, ridge: Anderson ``m``, ``beta``, ``lambda``.
      gate_t: project only when ``t_i < gate_t`` (DiT code 0.6; SD code 0.4).
      operator: ``"G"`` or ``"H"``.
      return_info: also return a dict with ``gap`` ``(steps,)`` (mean ``|v_c - v_u|`` where the CFG
        step is evaluated), ``residual`` ``(steps,)`` (mean ``|G(x^K) - x^K|`` after the projection
        on gated steps, NaN elsewhere; one diagnostic ``G`` call not counted in NFE), ``gated``
        ``(steps,)`` and ``nfe`` (per sample).

    Returns:
      ``x`` at ``times[-1]`` (and the info dict).
    """
    _checks.check_float_array("x0", x0, min_ndim=1)
    _checks.check_choice("projection", projection, PROJECTIONS)
    _checks.check_choice("operator", operator, OPERATORS)
    if times is None:
        _checks.check_positive_int("steps", steps)
        grid = np.linspace(0.0, 1.0, steps + 1)
    else:
        grid = np.asarray(times, np.float64)
        if grid.ndim != 1 or grid.size < 2 or np.any(np.diff(grid) <= 0):
            raise ValueError(f"`times` must be a strictly increasing 1D grid of >= 2 times, got {grid}.")
    _checks.check_time("times", grid)
    w_fn = _scale_fn(scale)
    n = x0.shape[0]
    dtype = x0.dtype
    t_grid = jnp.asarray(grid[:-1], dtype)
    dts = jnp.asarray(np.diff(grid), dtype)
    gated_np = (grid[:-1] < gate_t) & (projection != "none")
    gated = jnp.asarray(gated_np)
    reduce_axes = tuple(range(1, x0.ndim))

    def step(x, inputs):
        ti, dt, gate = inputs
        t = jnp.full((n,), jnp.maximum(ti, t_eval_min), dtype)
        eta = dt / 2
        if projection != "none":
            def project(y):
                return manifold_project(
                    v_cond, v_uncond, y, t, eta=eta, iterations=iterations, method=projection,
                    window=window, damping=damping, ridge=ridge, operator=operator,
                )

            x = jax.lax.cond(gate, project, lambda y: y, x)
            if return_info:
                g = projection_operator(v_cond, v_uncond, t, eta, operator=operator)
                res = jnp.mean(jnp.sqrt(jnp.sum((g(x) - x) ** 2, axis=reduce_axes)))
                res = jnp.where(gate, res, jnp.nan)
            else:
                res = jnp.asarray(jnp.nan, dtype)
        else:
            res = jnp.asarray(jnp.nan, dtype)
        vc, vu = v_cond(x, t), v_uncond(x, t)
        w = w_fn(t)
        x_next = x + dt * cfg_velocity(vc, vu, w)
        gap = jnp.mean(jnp.sqrt(jnp.sum((vc - vu) ** 2, axis=reduce_axes)))
        return x_next, (gap, res)

    x, (gaps, residuals) = jax.lax.scan(step, x0, (t_grid, dts, gated))
    if not return_info:
        return x
    info = {
        "gap": gaps,
        "residual": residuals,
        "gated": gated,
        "nfe": cfg_nfe(grid, projection=projection, iterations=iterations, gate_t=gate_t),
    }
    return x, info
