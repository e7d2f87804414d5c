"""SplitMeanFlow (Guo et al., ByteDance Seed, arXiv 2507.16884): interval-splitting consistency.

The identity (NOTATION.md, project time; the paper's time is reversed, tau = 1 noise), any
``s <= m <= t`` with ``m = s + lam (t - s)``:

    u(x, s, t) = lam u(x, s, m) + (1 - lam) u(X_{s,m}(x), m, t),   X_{s,m}(x) = x + (m - s) u(x, s, m).

It is additivity of the integral of ``v`` along one trajectory; MeanFlow's identity is its
infinitesimal-split limit. Training needs three forward passes and no JVP:

    boundary branch (first round(fm_fraction n) rows, s = t):  || u(x_s, s, s) - v_target ||^2
    splitting branch (the rest):                                || u(x_s, s, t) - sg(target) ||^2
      u2 = u(x_s, s, m), x_m = x_s + (m - s) u2  (the model's own point), u1 = u(x_m, m, t),
      target = lam u2 + (1 - lam) u1

with ``v_target = x1 - x0`` from scratch or a teacher's velocity ``v_T(x_s, s)`` (distillation).

Paper's (checked against the arXiv 2507.16884 abstract/HTML with the search tool: the identity
``(t - r) u(z_t, r, t) = (s - r) u(z_s, r, s) + (t - s) u(z_t, s, t)`` with ``z_s`` the point reached
along the flow, MeanFlow as its limit, no JVP): the identity, its algebraic 3-pass training, the
boundary anchor, the intermediate point from the model itself. *Derived, not from the paper*
(its full text was unavailable, splitmeanflow.md sec. 1): ``lam ~ U(0, 1)``, ``fm_fraction = 0.5``
(unofficial re-implementations), the full stop-gradient target with online parameters, the
teacher option, the default (s, t) sampler = sorted pair of U[0, 1] draws (the spec's toy choice;
MeanFlow's logit-normal pair is available through ``time_sampler``), the K-way generalisation
(``num_splits``; fractions = spacings of sorted uniforms, so K = 2 is ``lam ~ U(0, 1)``), the
per-element mean squared error (as :func:`flowjax.losses.cfm`), the boundary branch's own time
``t ~ U[0, 1]`` (``fm_sampler``), and the ``inner_point="interpolant"`` negative control.
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

INNER_POINTS = ("model", "interpolant")


def splitmeanflow_target(
    u_fn: Callable[..., Array],
    x: Array,
    s: Array,
    t: Array,
    fractions: Array,
    *,
    c: Any = None,
    inner_points: Callable[[Array], Array] | None = None,
) -> Array:
    """The interval-splitting target ``sum_k f_k u(x_k, m_k, m_{k+1})`` (no stop-gradient).

    ``fractions`` has shape ``(K, n)`` (for K = 2: ``(lam, 1 - lam)``); see the module docstring.
    With the exact average velocity this equals ``u(x, s, t)`` for every split.
    """
    target, _ = fs.rollout_target(u_fn, x, s, t, fractions, c=c, inner_points=inner_points)
    return target


def splitmeanflow(
    u_fn: Callable[..., Array],
    key: Array,
    x1: Array,
    *,
    x0: Array | None = None,
    path: AffinePath | None = None,
    time_sampler: Callable[[Array, int], tuple[Array, Array]] | None = None,
    fm_fraction: float = 0.5,
    fm_sampler: TimeSampler | None = None,
    num_splits: int = 2,
    inner_point: str = "model",
    teacher_fn: Callable[..., Array] | None = None,
    c: Any = None,
) -> tuple[Array, dict[str, Array]]:
    """SplitMeanFlow loss (2507.16884), project time.

    Args:
      u_fn: average velocity ``u_fn(x, s, t)`` (``s, t`` of shape ``(n,)``; ``c=`` when given).
      key: PRNG key.
      x1: data ``(n, ...)``.
      x0: noise (default standard normal).
      path: affine path (default linear); the boundary target is its conditional velocity.
      time_sampler: ``(key, n) -> (s, t)`` with ``s <= t`` for the splitting rows (default: sorted
        pair of two ``U[0, 1]`` draws).
      fm_fraction: share of rows in the boundary (s = t) branch (default 0.5, derived).
      fm_sampler: time of the boundary rows (default ``U[0, 1]``; ``None`` is replaced by it).
      num_splits: K >= 2 sub-intervals (K = 2 is the paper's identity).
      inner_point: ``"model"`` (the paper: ``X_{s,m}(x_s)``) or ``"interpolant"`` (the conditional
        path point at ``m``: a negative control that breaks the identity).
      teacher_fn: optional teacher velocity ``v_T(x, t)`` (``c=`` when given) for the boundary
        target (distillation); evaluated under stop-gradient.
      c: condition passed to the model (and teacher) as ``c=``.

    Returns:
      ``(loss, {"mse_boundary", "mse_split", "loss"})``; the loss is the batch mean of the per-row
      mean squared errors of both branches.
    """
    fs.check_inputs(x1, x0, c)
    fs.check_fraction("fm_fraction", fm_fraction)
    _checks.check_choice("inner_point", inner_point, INNER_POINTS)
    _checks.check_positive_int("num_splits", num_splits)
    if num_splits < 2:
        raise ValueError(f"`num_splits` must be >= 2, got {num_splits}.")
    path = path or linear_path()
    pair_sampler = time_sampler or fs.sorted_pairs(uniform())
    fm_sampler = fm_sampler or uniform()
    n = x1.shape[0]

    k0, kt, kl = jax.random.split(key, 3)
    if x0 is None:
        x0 = jax.random.normal(k0, x1.shape, x1.dtype)
    s, t, n_fm = fs.draw_times(kt, n, pair_sampler=pair_sampler, fm_fraction=fm_fraction, fm_sampler=fm_sampler, dtype=x1.dtype)
    x_s, v_c = path.sample(x0, x1, s)

    # One graded forward on the whole batch: u(x_s, s, s) on the boundary rows, u(x_s, s, t) else.
    pred = fs.call_u(u_fn, x_s, s, t, c)

    parts = []
    aux = {}
    if n_fm > 0:
        v_target = v_c[:n_fm]
        if teacher_fn is not None:
            c_fm = None if c is None else jax.tree.map(lambda a: a[:n_fm], c)
            v_t = teacher_fn(x_s[:n_fm], s[:n_fm]) if c_fm is None else teacher_fn(x_s[:n_fm], s[:n_fm], c=c_fm)
            v_target = jax.lax.stop_gradient(v_t)
        l_b = fs.mean_squares(pred[:n_fm] - v_target)
        parts.append(l_b)
        aux["mse_boundary"] = jnp.mean(l_b)
    if n_fm < n:
        sl = slice(n_fm, n)
        c_sp = None if c is None else jax.tree.map(lambda a: a[sl], c)
        fractions = fs.split_fractions(kl, n - n_fm, num_splits, x1.dtype)
        inner = None
        if inner_point == "interpolant":
            x0_sp, x1_sp = x0[sl], x1[sl]

            def inner(m):
                return path.sample(x0_sp, x1_sp, m)[0]

        target = splitmeanflow_target(u_fn, x_s[sl], s[sl], t[sl], fractions, c=c_sp, inner_points=inner)
        # SplitMeanFlow: the whole splitting target (both inner calls, and x_m through u2) is
        # stop-gradient; the gradient flows only through u(x_s, s, t).
        target = jax.lax.stop_gradient(target)
        l_s = fs.mean_squares(pred[sl] - target)
        parts.append(l_s)
        aux["mse_split"] = jnp.mean(l_s)
    loss = jnp.mean(jnp.concatenate(parts))
    aux["loss"] = loss
    return loss, aux


__all__ = ["splitmeanflow", "splitmeanflow_target"]
