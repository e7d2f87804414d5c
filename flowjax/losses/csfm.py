"""CSFM: flow matching from a learned, condition-dependent Gaussian source.

Kim, Park, Jeon & Kim, "Better Source, Better Flow: Learning Condition-Dependent Source Distribution
for Flow Matching", arXiv 2602.05951 (spec ``conditional-source.md``). The paper text was not read;
the method follows the official code (``train_t2i.py``, ``regularization_loss.py``, ``path.py``) as
the spec transcribes it. Project notation (t = 0 source, t = 1 data; the code's ``t_c = 1 - t``):

    x0   = mu_phi(c) + sigma_phi(c) * eps                 (reparameterised source, eps ~ N(0, I))
    x_t  = t x1 + (1 - t) x0,   target  x1 - x0
    L_FM    = mean || v_theta(x_t, t, c) - (x1 - x0) ||^2  (NO stop-gradient: d/dphi flows through
                                                           x_t AND the target; code
                                                           ``diffusion_loss_detach_ut: false``)
    L_KL    = -1/2 mean(1 + log sigma^2 - sigma^2)         (variance-only KL to unit variance)
    L_align = mean_tokens || mu_hat - x1_hat ||^2          (= mean_tokens (2 - 2 cos))
    L = L_FM + lambda_KL L_KL + lambda_align L_align,      lambda_KL = 5, lambda_align = 1 (code)

Paper defaults: ``fixed_std = 1`` (sigma not learned, so ``L_KL = 0``: the strongest variance
regularisation); time ``t = 1 - tau``, ``tau = s t'/(1 + (s - 1) t')`` with ``s = sqrt(D/4096)``
(:func:`csfm_time_sampler`, which is :func:`flowjax.timesteps.shifted`).

Checked against the released code (``src/stage2/text_encoders/regularization_loss.py``): the
variance-only KL is ``-0.5 * mean(1 + log_var - var)`` (``var_only_kld_loss``, mean reduction), as
here; the same file's ``token_cosine_loss`` normalises per token over channels, the axis used here.

Ours / derived (not the paper's):
- ``align_axis``: the code normalises along the last axis of ``[B, C, H, W]`` (the W axis); the
  intended per-token cosine is over channels, so the default here is the channel axis (last axis
  in the project's channels-last layout). The reduction sums the squared difference over that axis
  and averages over the rest (``2 - 2 cos`` per token); the code's ``mean_flat`` additionally
  divides by the size of that axis, so ``lambda_align = 1`` there corresponds to ``1/C`` here
  with ``align_reduction="sum"``; ``align_reduction="mean"`` reproduces the code's scale.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array

from flowjax import _checks
from flowjax.losses.cfm import call_with_condition, mean_squared
from flowjax.paths import broadcast_time
from flowjax.sources import conditional_gaussian_source
from flowjax.timesteps import TimeSampler, shifted, uniform

ALIGN_REDUCTIONS = ("sum", "mean")


def variance_kl(logvar: Array) -> Array:
    """``-1/2 mean(1 + logvar - exp(logvar))``: the KL of ``N(., sigma^2)`` to ``N(., 1)`` without the
    mean term (CSFM code, ``regularization_loss.py``). Zero at ``logvar = 0``; its gradient is
    ``(exp(logvar) - 1) / (2 N)`` per element for ``N`` elements."""
    return -0.5 * jnp.mean(1.0 + logvar - jnp.exp(logvar))


def directional_alignment(mu: Array, x1: Array, *, axis: int = -1, reduction: str = "sum",
                          eps: float = 1e-12) -> Array:
    """``mean || mu/||mu|| - x1/||x1|| ||^2`` with the norm taken along ``axis`` (CSFM "normalized_l2").

    ``reduction="sum"`` sums the squared difference over ``axis`` (so each token contributes
    ``2 - 2 cos(mu, x1)``) and averages over the remaining axes; ``"mean"`` averages over all
    elements (the code's ``mean_flat``). ``x1`` carries data only; ``mu`` carries the gradient.
    """
    _checks.check_same_shape("mu", mu, "x1", x1)
    _checks.check_choice("reduction", reduction, ALIGN_REDUCTIONS)
    # safe norm: finite (zero) gradient at mu = 0, e.g. a zero-initialised source table
    def _norm(a):
        return jnp.sqrt(jnp.maximum(jnp.sum(a * a, axis=axis, keepdims=True), eps * eps))

    mh = mu / _norm(mu)
    xh = x1 / _norm(x1)
    sq = (mh - xh) ** 2
    if reduction == "sum":
        return jnp.mean(jnp.sum(sq, axis=axis))
    return jnp.mean(sq)


def csfm_time_shift(dim: int, *, base_dim: int = 4096) -> float:
    """The code's resolution shift ``s = sqrt(D / base_dim)`` (``s = sqrt(48)`` for 768x16x16 latents)."""
    _checks.check_positive_int("dim", dim)
    return math.sqrt(dim / base_dim)


def csfm_time_sampler(dim: int, *, base_dim: int = 4096, base: TimeSampler | None = None) -> TimeSampler:
    """The code's shifted-uniform time in project time: ``t = 1 - s t'/(1 + (s-1) t')``, ``t' ~ U(0,1)``.

    For ``s > 1`` this concentrates ``t`` near 0 (the source end).
    """
    return shifted(base or uniform(), csfm_time_shift(dim, base_dim=base_dim))


def csfm(
    v_fn: Callable[..., Array],
    key: Array,
    x1: Array,
    *,
    mu: Array,
    logvar: Array | None = None,
    fixed_std: float | None = 1.0,
    lambda_kl: float = 5.0,
    lambda_align: float = 1.0,
    align_axis: int = -1,
    align_reduction: str = "sum",
    detach_target: bool = False,
    time_sampler: TimeSampler | None = None,
    c: Any = None,
) -> tuple[Array, dict[str, Array]]:
    """CSFM loss (2602.05951): FM from ``x0 = mu + sigma eps`` plus variance KL and directional alignment.

    Args:
      v_fn: velocity model ``v(x, t, c=...)`` (closes over theta).
      key: PRNG key (split like :func:`flowjax.losses.cfm`: noise, unused coupling key, time).
      x1: data ``(n, ...)``.
      mu: source means ``mu_phi(c)`` of shape ``x1.shape``, computed by the caller from the source
        network's parameters phi (the gradient to phi flows through it).
      logvar: learned ``log sigma^2`` (same shape), used only when ``fixed_std`` is None; clamped to
        ``[-10, 10]``.
      fixed_std: the fixed source std (paper 1.0; then ``L_KL = 0``); None to learn ``sigma``.
      lambda_kl: weight of :func:`variance_kl` (code 5).
      lambda_align: weight of :func:`directional_alignment` (code 1; 0 disables it).
      align_axis: the axis of the per-token cosine (channels; see module doc).
      align_reduction: ``"sum"`` (``2 - 2 cos`` per token) or ``"mean"`` (the code's mean_flat).
      detach_target: stop the gradient through ``x_t`` and the target into ``mu, sigma`` (an
        ablation; the paper keeps the gradient, so default False).
      time_sampler: default ``U[0, 1]``; :func:`csfm_time_sampler` is the paper's shifted one.
      c: condition passed to ``v_fn``.

    Returns:
      ``(loss, {"fm", "kl", "align", "source_std"})``.
    """
    _checks.check_float_array("x1", x1, min_ndim=2)
    _checks.check_float_array("mu", mu, min_ndim=2)
    _checks.check_same_shape("mu", mu, "x1", x1)
    _checks.check_choice("align_reduction", align_reduction, ALIGN_REDUCTIONS)
    if lambda_kl < 0 or lambda_align < 0:
        raise ValueError(f"`lambda_kl` and `lambda_align` must be >= 0, got {lambda_kl} and {lambda_align}.")
    time_sampler = time_sampler or uniform()
    n = x1.shape[0]
    k0, _, kt = jax.random.split(key, 3)
    x0, lv = conditional_gaussian_source(k0, mu, logvar, fixed_std=fixed_std)
    if detach_target:
        x0 = jax.lax.stop_gradient(x0)
    # No stop-gradient here (paper/code default): the source parameters get gradient through both
    # x_t and the target x1 - x0 of L_FM.
    t = time_sampler(kt, n).astype(x1.dtype)
    tb = broadcast_time(t, x1)
    x_t = tb * x1 + (1.0 - tb) * x0
    pred = call_with_condition(v_fn, x_t, t, c=c)
    fm = jnp.mean(mean_squared(pred - (x1 - x0)))
    kl = variance_kl(lv) if fixed_std is None else jnp.zeros((), x1.dtype)
    align = (directional_alignment(mu, x1, axis=align_axis, reduction=align_reduction)
             if lambda_align > 0 else jnp.zeros((), x1.dtype))
    loss = fm + lambda_kl * kl + lambda_align * align
    return loss, {"fm": fm, "kl": kl, "align": align, "source_std": jnp.mean(jnp.exp(0.5 * lv))}


__all__ = [
    "csfm",
    "csfm_time_sampler",
    "csfm_time_shift",
    "directional_alignment",
    "variance_kl",
]
