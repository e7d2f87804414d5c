"""Flow maps by self-distillation (Boffi, Albergo, Vanden-Eijnden, arXiv 2505.18825): the
Lagrangian (LSD), Eulerian (ESD) and Progressive (PSD) families.

The model is an average velocity, ``X_{s,t}(x) = x + (t - s) u_theta(x, s, t)`` (paper:
``v_{s,t}(x)``; paper ``alpha_t`` multiplies noise, i.e. project ``sigma_t``). Every loss is
``L = L_diag + L_offdiag`` on a batch whose first ``round(diag_fraction n)`` rows are diagonal:

    L_diag = E || u(x_t, t, t) - (alpha'_t x1 + sigma'_t x0) ||^2,  t ~ U[0, 1]   (tangent condition)

and whose other rows carry ``(s, t)`` pairs and ``x_s = alpha_s x1 + sigma_s x0``:

- LSD (Lagrangian, ``d_t X_{s,t}(x) = v(X_{s,t}(x), t)``):
  ``|| d_t X(x_s; s, t) - sg[u_{theta^-}(sg[X(x_s; s, t)], t, t)] ||^2``, ``d_t X = u + (t - s) d_t u``
  by a forward-mode JVP in ``t`` only. ``stopgrad="convex"`` (the paper's code) or ``"none"``.
- ESD (Eulerian, ``d_s X_{s,t}(x) + (grad_x X_{s,t}(x)) v(x, s) = 0``) with ``b_s = u(x_s, s, s)``:
  ``|| d_s X(x_s; s, t) + (grad_x X(x_s; s, t)) b_s ||^2``. ``stopgrad="full"``: ``b_s`` and the
  advection term come from the teacher under stop-gradient, the gradient flows through ``d_s X``
  only; ``"convex"``: only ``b_s`` is stopped (gradient also through the spatial JVP: the unstable
  case); ``"none"``: nothing is stopped.
- PSD (Progressive, semigroup ``X_{m,t} o X_{s,m} = X_{s,t}``), ``m = h s + (1 - h) t``:
  ``|| u(x_s, s, t) - sg[(1 - h) u(x_s, s, m) + h u(X(x_s; s, m), m, t)] ||^2`` with ``h ~ U(0, 1)``
  (PSD-U, = SplitMeanFlow's target) or ``h = 1/2`` (PSD-M, = shortcut models).

Paper's / official code's (read through a fork that states it is modified from the official repo;
flowmaps.md): the three residuals, their stop-gradient variants, the teacher = current parameters
under stop-gradient, ``diag_fraction = 0.5``, off-diagonal ``(s, t)`` drawn uniformly and
independently on the square (``pairs="square"``), the learned weight ``exp(-w) l + w``. Ours: the
default ``pairs="ordered"`` (``s <= t``, generation only; the spec's toy), the per-element mean over
dimensions, ``logvar_fn`` as a plain callable (a ``Linear(Fourier(s), Fourier(t))`` head in the code).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array

from flowjax import _checks
from flowjax.losses import _fewstep as fs
from flowjax.paths import AffinePath, linear_path
from flowjax.timesteps import uniform

PAIRS = ("ordered", "square")
LSD_STOPGRAD = ("convex", "none")
ESD_STOPGRAD = ("full", "convex", "none")
PSD_SPLIT = ("uniform", "midpoint")


def flow_map_and_time_derivative(u_fn: Callable, x: Array, s: Array, t: Array, *, c: Any = None) -> tuple[Array, Array]:
    """``(X_{s,t}(x), d_t X_{s,t}(x))`` by a forward-mode JVP in ``t`` only (tangent 1 on ``t``)."""

    def X(tt):
        return x + fs.bcast(tt - s, x) * fs.call_u(u_fn, x, s, tt, c)

    return jax.jvp(X, (t,), (jnp.ones_like(t),))


def _square_pairs(key: Array, n: int) -> tuple[Array, Array]:
    ks, kt = jax.random.split(key)
    return jax.random.uniform(ks, (n,)), jax.random.uniform(kt, (n,))


def _setup(key, x1, x0, c, path, diag_fraction, pairs):
    fs.check_inputs(x1, x0, c)
    fs.check_fraction("diag_fraction", diag_fraction)
    _checks.check_choice("pairs", pairs, PAIRS)
    path = path or linear_path()
    sampler = fs.sorted_pairs(uniform()) if pairs == "ordered" else _square_pairs
    k0, kt, kh = jax.random.split(key, 3)
    if x0 is None:
        x0 = jax.random.normal(k0, x1.shape, x1.dtype)
    n = x1.shape[0]
    s, t, n_diag = fs.draw_times(kt, n, pair_sampler=sampler, fm_fraction=diag_fraction, fm_sampler=uniform(), dtype=x1.dtype)
    x_s, v_c = path.sample(x0, x1, s)
    return x0, s, t, n_diag, x_s, v_c, kh


def _slice(c, sl):
    return None if c is None else jax.tree.map(lambda a: a[sl], c)


def _combine(l_diag, l_off, s, t, n_diag, logvar_fn):
    per = jnp.concatenate([l for l in (l_diag, l_off) if l is not None])
    if logvar_fn is not None:
        w = logvar_fn(s, t)  # learned weighting (EDM2 style, paper code): exp(-w) l + w
        per = jnp.exp(-w) * per + w
    aux = {}
    if l_diag is not None:
        aux["mse_diag"] = jnp.mean(l_diag)
    if l_off is not None:
        aux["mse_offdiag"] = jnp.mean(l_off)
    return jnp.mean(per), aux


def _diag_loss(u_fn, x_s, s, v_c, n_diag, c):
    if n_diag == 0:
        return None
    sl = slice(0, n_diag)
    pred = fs.call_u(u_fn, x_s[sl], s[sl], s[sl], _slice(c, sl))
    return fs.mean_squares(pred - v_c[sl])


_DOC_ARGS = """
    Args:
      u_fn: average velocity ``u_fn(x, s, t)`` (``s, t`` of shape ``(n,)``; ``c=`` when given).
      key: PRNG key.
      x1: data ``(n, ...)``.
      x0: noise (default standard normal).
      path: affine path (default linear, the paper's).
      diag_fraction: share of diagonal (flow-matching) rows (paper code 0.5).
      pairs: ``"ordered"`` (``s <= t``, sorted uniform pair; default) or ``"square"`` (``s, t`` uniform
        and independent, also trains backward maps; the paper's code).
      teacher_fn: the ``theta^-`` model for the self-distillation target (default ``u_fn``; always
        evaluated under stop-gradient where the variant stops it).
      logvar_fn: optional learned weighting ``w(s, t) -> (n,)``; each row's loss becomes ``exp(-w) l + w``.
      c: condition passed as ``c=``.

    Returns:
      ``(loss, {"mse_diag", "mse_offdiag"})`` (per-row means over dimensions of the residuals).
"""


def flowmap_lagrangian(
    u_fn: Callable,
    key: Array,
    x1: Array,
    *,
    x0: Array | None = None,
    path: AffinePath | None = None,
    diag_fraction: float = 0.5,
    pairs: str = "ordered",
    stopgrad: str = "convex",
    teacher_fn: Callable | None = None,
    logvar_fn: Callable | None = None,
    c: Any = None,
) -> tuple[Array, dict[str, Array]]:
    _checks.check_choice("stopgrad", stopgrad, LSD_STOPGRAD)
    teacher_fn = teacher_fn or u_fn
    x0, s, t, n_diag, x_s, v_c, _ = _setup(key, x1, x0, c, path, diag_fraction, pairs)
    l_diag = _diag_loss(u_fn, x_s, s, v_c, n_diag, c)
    l_off = None
    if n_diag < x1.shape[0]:
        sl = slice(n_diag, None)
        cs = _slice(c, sl)
        X, dX = flow_map_and_time_derivative(u_fn, x_s[sl], s[sl], t[sl], c=cs)
        if stopgrad == "convex":
            # LSD (2505.18825, Lagrangian residual): the endpoint fed to the teacher and the teacher
            # velocity are both stop-gradient; the gradient flows through d_t X = u + (t - s) d_t u.
            b = jax.lax.stop_gradient(fs.call_u(teacher_fn, jax.lax.stop_gradient(X), t[sl], t[sl], cs))
        else:
            b = fs.call_u(teacher_fn, X, t[sl], t[sl], cs)
        l_off = fs.mean_squares(dX - b)
    return _combine(l_diag, l_off, s, t, n_diag, logvar_fn)


def flowmap_eulerian(
    u_fn: Callable,
    key: Array,
    x1: Array,
    *,
    x0: Array | None = None,
    path: AffinePath | None = None,
    diag_fraction: float = 0.5,
    pairs: str = "ordered",
    stopgrad: str = "full",
    teacher_fn: Callable | None = None,
    logvar_fn: Callable | None = None,
    c: Any = None,
) -> tuple[Array, dict[str, Array]]:
    _checks.check_choice("stopgrad", stopgrad, ESD_STOPGRAD)
    teacher_fn = teacher_fn or u_fn
    x0, s, t, n_diag, x_s, v_c, _ = _setup(key, x1, x0, c, path, diag_fraction, pairs)
    l_diag = _diag_loss(u_fn, x_s, s, v_c, n_diag, c)
    l_off = None
    if n_diag < x1.shape[0]:
        sl = slice(n_diag, None)
        cs = _slice(c, sl)
        xs, ss, tt = x_s[sl], s[sl], t[sl]

        def X(fn, xx, s_):  # X(x; s_, t) as a function of the start point and the start time
            return xx + fs.bcast(tt - s_, xx) * fs.call_u(fn, xx, s_, tt, cs)

        if stopgrad == "none":
            b = fs.call_u(u_fn, xs, ss, ss, cs)
        else:
            # ESD: the instantaneous velocity b_s = u(x_s, s, s) is a stop-gradient teacher value.
            b = jax.lax.stop_gradient(fs.call_u(teacher_fn, xs, ss, ss, cs))
        if stopgrad == "full":
            # d_s X through the student (JVP in s only) + the advection (grad_x X) b_s from the
            # teacher, entirely stop-gradient ("full" variant of the Eulerian residual).
            _, ds_x = jax.jvp(lambda s_: X(u_fn, xs, s_), (ss,), (jnp.ones_like(ss),))
            _, adv = jax.jvp(lambda xx: X(teacher_fn, xx, ss), (xs,), (b,))
            residual = ds_x + jax.lax.stop_gradient(adv)
        else:
            # one JVP with tangent (b, 1) on (x, s) gives d_s X + (grad_x X) b; gradient through both.
            _, residual = jax.jvp(lambda xx, s_: X(u_fn, xx, s_), (xs, ss), (b, jnp.ones_like(ss)))
        l_off = fs.mean_squares(residual)
    return _combine(l_diag, l_off, s, t, n_diag, logvar_fn)


def flowmap_progressive(
    u_fn: Callable,
    key: Array,
    x1: Array,
    *,
    x0: Array | None = None,
    path: AffinePath | None = None,
    diag_fraction: float = 0.5,
    pairs: str = "ordered",
    split: str = "uniform",
    teacher_fn: Callable | None = None,
    logvar_fn: Callable | None = None,
    c: Any = None,
) -> tuple[Array, dict[str, Array]]:
    _checks.check_choice("split", split, PSD_SPLIT)
    teacher_fn = teacher_fn or u_fn
    x0, s, t, n_diag, x_s, v_c, kh = _setup(key, x1, x0, c, path, diag_fraction, pairs)
    n = x1.shape[0]
    pred_all = fs.call_u(u_fn, x_s, s, t, c)  # one graded forward (diagonal rows: u(x, s, s))
    l_diag = fs.mean_squares(pred_all[:n_diag] - v_c[:n_diag]) if n_diag > 0 else None
    l_off = None
    if n_diag < n:
        sl = slice(n_diag, None)
        m_rows = n - n_diag
        h = jax.random.uniform(kh, (m_rows,), x1.dtype) if split == "uniform" else jnp.full((m_rows,), 0.5, x1.dtype)
        fractions = jnp.stack([1.0 - h, h])  # m = h s + (1 - h) t: the first sub-interval is (1 - h)(t - s)
        target, _ = fs.rollout_target(teacher_fn, x_s[sl], s[sl], t[sl], fractions, c=_slice(c, sl))
        # PSD: both teacher calls (and the intermediate point X(x_s; s, m)) are stop-gradient.
        target = jax.lax.stop_gradient(target)
        l_off = fs.mean_squares(pred_all[sl] - target)
    return _combine(l_diag, l_off, s, t, n_diag, logvar_fn)


flowmap_lagrangian.__doc__ = (
    """Lagrangian self-distillation (LSD) loss, 2505.18825; see the module docstring.

    ``stopgrad``: ``"convex"`` (default, the paper's code) or ``"none"``.
""" + _DOC_ARGS)
flowmap_eulerian.__doc__ = (
    """Eulerian self-distillation (ESD) loss, 2505.18825; see the module docstring.

    ``stopgrad``: ``"full"`` (default; stable), ``"convex"`` (gradient through the spatial JVP) or ``"none"``.
""" + _DOC_ARGS)
flowmap_progressive.__doc__ = (
    """Progressive self-distillation (PSD) loss, 2505.18825; see the module docstring.

    ``split``: ``"uniform"`` (PSD-U, ``h ~ U(0, 1)``) or ``"midpoint"`` (PSD-M, ``h = 1/2``).
""" + _DOC_ARGS)

__all__ = ["flow_map_and_time_derivative", "flowmap_eulerian", "flowmap_lagrangian", "flowmap_progressive"]
