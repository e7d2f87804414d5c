"""MeanFlow (Geng, Deng, Bai, Kolter, He, arXiv 2505.13447): one-step generation by regressing the
average velocity onto the MeanFlow identity, with a forward-mode JVP.

Project notation (t = 0 noise, t = 1 data, ``X_{s,t}(x) = x + (t - s) u(x, s, t)``). Along the flow
``x_s``, ``X_{s,t}(x_s)`` does not depend on ``s``; differentiating in ``s`` gives the MeanFlow
(Eulerian) identity

    u(x_s, s, t) = v(x_s, s) + (t - s) (d_s u + (grad_x u) v)(x_s, s, t).

Training (the official JAX code, translated; splitmeanflow.md sec. 3.3):

    x_s = (1 - s) x0 + s x1,   v_c = x1 - x0 (the path's conditional velocity)
    (u, du) = jvp((x, a, b) -> u_theta(x, a, b), (x_s, s, t), (v_g, 1, 0))
    u_tgt = sg(v_g + clip(t - s, 0, 1) du)
    l = sum_dims (u - u_tgt)^2,   loss = mean_b  l / sg((l + c)^p)

with ``v_g = v_c`` without guidance. The tangent is 1 on the *start* time ``s`` and 0 on ``t``, and the
target carries a ``+`` sign; the paper (time reversed, ``tau = 1`` noise) writes
``u_tgt = v - (t - r) du/dt`` with the tangent on its ``t`` (the noisier end). Conversion:
``u_proj(x, s, t) = -u_MF(x, r = 1 - t, t_MF = 1 - s)`` (:func:`from_meanflow_time`).

Classifier-free guidance folded into the target (paper sec. 4.2 / code ``guidance_fn``):
``v_g = omega v_c + kappa u(x_s, s, s | c) + (1 - omega - kappa) u(x_s, s, s | null)``, both inner calls
without gradient, active only for ``s`` inside ``guidance_interval`` (project time); samples whose label
was dropped (probability ``label_dropout``) get the null label and ``v_g = v_c``.

What is the paper's / the official code's: the identity, the JVP target with stop-gradient, the
clip of ``(t - s)``, the adaptive weight (p = 1, c = 0.01 in the code; the text's c = 1e-3 is
recalled, unverified), the time sampler (logit-normal(-0.4, 1) in paper time == (+0.4, 1) in project
time, 75 % of the batch with ``s = t``), CFG with (omega, kappa). Ours: the project-time translation,
the general affine ``path`` option (the identity holds for any path), the guidance interval stated on
the project start time ``s`` (code: ``[t_start, t_end]`` on paper ``t``, i.e. ``[1 - t_end, 1 - t_start]``).
The official repository could not be re-read for this implementation; its facts come from
splitmeanflow.md, which read it in full.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array

from flowjax import _checks
from flowjax.losses import _fewstep as fs
from flowjax.paths import AffinePath, linear_path
from flowjax.timesteps import TimeSampler, logit_normal

AverageVelocityFn = Callable[..., Array]


def meanflow_time_pairs(
    mean: float = 0.4, std: float = 1.0, *, fm_fraction: float = 0.75
) -> Callable[[Array, int], tuple[Array, Array]]:
    """MeanFlow's ``(s, t)`` sampler in project time.

    ``a, b = sigmoid(N(mean, std^2))``, ``s = min(a, b)``, ``t = max(a, b)``; the first
    ``round(fm_fraction * n)`` rows get ``t = s`` (code ``data_proportion = 0.75``: the fraction with
    ``r = t``). Paper time's ``P_mean = -0.4`` is ``mean = +0.4`` here.
    """
    fs.check_fraction("fm_fraction", fm_fraction)
    pairs = fs.sorted_pairs(logit_normal(mean, std))

    def sample(key: Array, n: int) -> tuple[Array, Array]:
        s, t, _ = fs.draw_times(key, n, pair_sampler=pairs, fm_fraction=fm_fraction, fm_sampler=None, dtype=jnp.float32)
        return s, t

    return sample


def from_meanflow_time(u_mf: AverageVelocityFn) -> AverageVelocityFn:
    """Wrap a paper-time MeanFlow model ``u_MF(z, r, t)`` (tau = 1 noise, ``z_r = z_t - (t - r) u_MF``)
    as a project-time ``u(x, s, t) = -u_MF(x, 1 - t, 1 - s)``."""

    def u(x, s, t, **kw):
        return -u_mf(x, 1.0 - t, 1.0 - s, **kw)

    return u


def to_meanflow_time(u: AverageVelocityFn) -> AverageVelocityFn:
    """Inverse of :func:`from_meanflow_time`: ``u_MF(z, r, t) = -u(z, 1 - t, 1 - r)``."""

    def u_mf(z, r, t, **kw):
        return -u(z, 1.0 - t, 1.0 - r, **kw)

    return u_mf


def meanflow_target(
    u_fn: AverageVelocityFn, x: Array, s: Array, t: Array, v: Array, *, c: Any = None, clip: bool = True
) -> tuple[Array, Array]:
    """``(u, u_tgt)`` with ``(u, du) = jvp(u_fn, (x, s, t), (v, 1, 0))`` and
    ``u_tgt = v + clip(t - s, 0, 1) du`` (no stop-gradient here; :func:`meanflow` applies it).

    With the exact average velocity and the exact marginal ``v`` this target equals ``u`` (the
    MeanFlow identity); ``s = t`` gives ``u_tgt = v``. ``clip=False`` uses the signed ``t - s``
    (needed for ``s > t``, e.g. BiFM's inversion intervals).
    """

    def f(xx, ss, tt):
        return fs.call_u(u_fn, xx, ss, tt, c)

    u, du = jax.jvp(f, (x, s, t), (v, jnp.ones_like(s), jnp.zeros_like(t)))
    gap = jnp.clip(t - s, 0.0, 1.0) if clip else t - s
    return u, v + fs.bcast(gap, x) * du


def meanflow(
    u_fn: AverageVelocityFn,
    key: Array,
    x1: Array,
    *,
    x0: Array | None = None,
    path: AffinePath | None = None,
    time_sampler: Callable[[Array, int], tuple[Array, Array]] | None = None,
    fm_fraction: float = 0.75,
    norm_p: float = 1.0,
    norm_eps: float = 0.01,
    c: Array | None = None,
    omega: float = 1.0,
    kappa: float = 0.0,
    guidance_interval: tuple[float, float] = (0.0, 1.0),
    label_dropout: float = 0.0,
    null_label: int | None = None,
) -> tuple[Array, dict[str, Array]]:
    """MeanFlow loss (2505.13447, eq. for ``u_tgt`` with the adaptive weight), project time.

    Args:
      u_fn: average velocity ``u_fn(x, s, t)`` (``s, t`` of shape ``(n,)``), ``u_fn(..., c=labels)``
        when conditioned. Must be differentiable by ``jax.jvp``.
      key: PRNG key.
      x1: data ``(n, ...)``.
      x0: noise of the same shape (default standard normal).
      path: affine path (default linear, MeanFlow's); ``v_c`` is its conditional velocity.
      time_sampler: ``(key, n) -> (s, t)`` with ``s <= t``; default
        ``meanflow_time_pairs(0.4, 1.0, fm_fraction=fm_fraction)``. Used as given when passed.
      fm_fraction: share of the batch with ``s = t`` (paper/code 0.75), used by the default sampler.
      norm_p, norm_eps: adaptive weight ``1 / sg((l + c)^p)`` (code: p = 1.0, c = 0.01; p = 0 is L2).
      c: integer class labels ``(n,)`` (or any condition pytree when no guidance is used).
      omega, kappa: CFG scales folded into the target (``omega = 1, kappa = 0``: no guidance; the
        repo's ImageNet default is ``omega = 1, kappa = 0.5``). Effective scale ``omega / (1 - kappa)``.
      guidance_interval: ``[lo, hi]`` in project time; guidance applies where ``lo <= s <= hi``.
      label_dropout: probability of replacing a label by ``null_label`` (code 0.1 for CFG runs).
      null_label: the null class index (``num_classes`` for :class:`flowjax.nets.MLP`); required
        when guidance or label dropout is on.

    Returns:
      ``(loss, aux)`` with ``aux = {"mse": mean over samples of sum_dims (u - u_tgt)^2 / dims,
      "fm_fraction": share of s = t rows}``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> u = lambda x, s, t: jnp.zeros_like(x)
      >>> loss, aux = meanflow(u, jax.random.key(0), jnp.ones((8, 2)))
    """
    fs.check_inputs(x1, x0, c)
    fs.check_fraction("fm_fraction", fm_fraction)
    fs.check_fraction("label_dropout", label_dropout)
    if norm_p < 0 or norm_eps < 0:
        raise ValueError(f"`norm_p` and `norm_eps` must be >= 0, got {norm_p}, {norm_eps}.")
    guided = (omega != 1.0) or (kappa != 0.0)
    if (guided or label_dropout > 0) and null_label is None:
        raise ValueError("`null_label` is required when guidance (omega != 1 or kappa != 0) or label_dropout > 0 is used.")
    if (guided or label_dropout > 0) and (c is None or not jnp.issubdtype(jnp.asarray(c).dtype, jnp.integer)):
        raise ValueError("guidance and label dropout need integer class labels `c` of shape (n,).")
    lo, hi = guidance_interval
    if not (0.0 <= lo <= hi <= 1.0):
        raise ValueError(f"`guidance_interval` must satisfy 0 <= lo <= hi <= 1, got {guidance_interval}.")
    path = path or linear_path()
    time_sampler = time_sampler or meanflow_time_pairs(fm_fraction=fm_fraction)
    n = x1.shape[0]

    k0, kt, kd = jax.random.split(key, 3)
    if x0 is None:
        x0 = jax.random.normal(k0, x1.shape, x1.dtype)
    s, t = time_sampler(kt, n)
    s, t = s.astype(x1.dtype), t.astype(x1.dtype)
    x_s, v_c = path.sample(x0, x1, s)

    v_g = v_c
    if label_dropout > 0:
        dropped = jax.random.uniform(kd, (n,)) < label_dropout
        c = jnp.where(dropped, null_label, c)
    else:
        dropped = jnp.zeros((n,), bool)
    if guided:
        null = jnp.full_like(c, null_label)
        # CFG folded into the target (MeanFlow sec. 4.2, code guidance_fn); no gradient through
        # the two instantaneous-velocity calls (train=False in the code).
        u_cond = jax.lax.stop_gradient(u_fn(x_s, s, s, c=c))
        u_null = jax.lax.stop_gradient(u_fn(x_s, s, s, c=null))
        guided_v = omega * v_c + kappa * u_cond + (1.0 - omega - kappa) * u_null
        active = (~dropped) & (s >= lo) & (s <= hi)
        v_g = jnp.where(fs.bcast(active, x1), guided_v, v_c)

    u, u_tgt = meanflow_target(u_fn, x_s, s, t, v_g, c=c)
    # MeanFlow eq. (10)/(11): the whole target u_tgt (including the JVP term) is stop-gradient.
    u_tgt = jax.lax.stop_gradient(u_tgt)
    l = fs.sum_squares(u - u_tgt)
    loss = jnp.mean(fs.adaptive_weighted(l, p=norm_p, eps=norm_eps))
    dims = x1[0].size
    return loss, {"mse": jnp.mean(l) / dims, "fm_fraction": jnp.mean((s == t).astype(x1.dtype))}


__all__ = ["from_meanflow_time", "meanflow", "meanflow_target", "meanflow_time_pairs", "to_meanflow_time"]
