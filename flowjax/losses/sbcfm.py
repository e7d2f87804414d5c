"""The OT-CFM family of Tong et al. (arXiv 2302.00482, TMLR 2024), at parity with torchcfm's matchers.

All in project time (t = 0 source, t = 1 data), which is also the paper's and torchcfm's.

- :func:`icfm` — I-CFM / OT-CFM with torchcfm's Gaussian smoothing:
  ``x_t = alpha_t x1 + sigma_t x0 + s eps``, target ``alpha'_t x1 + sigma'_t x0``; with an OT coupling
  (``flowjax.couplings.ot_exact`` / ``ot_sinkhorn`` / ``ot_entropic``) it is OT-CFM.
- :func:`vpcfm` — variance-preserving (trigonometric) CFM (torchcfm's
  ``VariancePreservingConditionalFlowMatcher``): ``x_t = cos(pi t/2) x0 + sin(pi t/2) x1 + s eps``,
  target ``pi/2 (cos(pi t/2) x1 - sin(pi t/2) x0)``.
- :func:`target_cfm` with :func:`target_path` — Lipman et al. (2210.02747) with ``sigma_min``:
  ``x_t = t x1 + (1 - (1 - sigma_min) t) x0``, target ``x1 - (1 - sigma_min) x0`` (torchcfm's
  ``TargetConditionalFlowMatcher``; its ``(x1 - (1-s) x_t)/(1 - (1-s) t)`` is the same number).
- :func:`sbcfm` — Schrodinger-bridge CFM: pairs from the entropic OT plan with ``reg = 2 sigma^2``
  (the static Schrodinger bridge for the Brownian reference ``sigma W``), the Brownian-bridge path

      x_t = t x1 + (1 - t) x0 + sigma sqrt(t (1 - t)) eps,
      u_t = (1 - 2t) / (2 t (1 - t)) (x_t - t x1 - (1 - t) x0) + (x1 - x0),

  and optionally the score target ``grad log p_t(x_t | x0, x1) = -eps / (sigma sqrt(t(1-t)))`` (the
  score/flow matching of SF2M, Tong et al. 2307.03672), so that the bridge SDE
  ``dx = [v + sigma^2/2 s] dt + sigma dW`` (see :func:`sb_sde`) samples the bridge marginals.

What is the papers' and what is ours: the paths, targets, ``reg = 2 sigma^2`` and the sampled
plan are the paper's / torchcfm's. Ours: the score head is trained in the noise-weighted form
``|| sigma_t s_theta + eps ||^2`` whose minimiser is the true marginal score (torchcfm's
``lambda_t s + eps`` with ``lambda_t = 2 sigma_t / sigma^2`` makes its network learn ``sigma^2/2``
times the score instead); and the ``u_t`` target is computed in the equivalent ``eps`` form
``sigma (1 - 2t) / (2 sqrt(t(1-t))) eps + (x1 - x0)`` (no 0/0 at the ends).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array

from flowjax import _checks
from flowjax.couplings import Coupling, independent, ot_entropic
from flowjax.losses.cfm import call_with_condition, gather_condition, labels_for_coupling, mean_squared
from flowjax.paths import AffinePath, broadcast_time, cosine_path, linear_path
from flowjax.timesteps import TimeSampler, uniform


def target_path(sigma_min: float = 1e-4) -> AffinePath:
    """Lipman et al.'s CondOT path with ``sigma_min``: ``alpha_t = t``, ``sigma_t = 1 - (1 - sigma_min) t``.

    Note ``sigma_1 = sigma_min > 0``: the data end is smoothed by ``sigma_min x0``.
    """
    if not 0 <= sigma_min < 1:
        raise ValueError(f"`sigma_min` must lie in [0, 1), got {sigma_min}.")
    k = 1.0 - sigma_min
    return AffinePath(
        name=f"target(sigma_min={sigma_min:g})",
        alpha=lambda t: t,
        sigma=lambda t: 1.0 - k * t,
        d_alpha=lambda t: jnp.ones_like(t),
        d_sigma=lambda t: -k * jnp.ones_like(t),
    )


def _validate(x1, x0, c):
    _checks.check_float_array("x1", x1, min_ndim=1)
    if x0 is not None:
        _checks.check_float_array("x0", x0, min_ndim=1)
        if x0.shape[1:] != x1.shape[1:]:
            raise ValueError(f"`x0` and `x1` must have the same feature shape, got {x0.shape} and {x1.shape}.")
    if c is not None:
        for leaf in jax.tree.leaves(c):
            _checks.check_batch_size("c", leaf, x1.shape[0])


def _pair(key, x0, x1, coupling, c):
    """Apply a coupling; pools larger than the batch are allowed (see ``couplings.pooled``)."""
    i0, i1 = coupling(key, x0, x1, labels=labels_for_coupling(c))
    return x0[i0], x1[i1], gather_condition(c, i1)


def icfm(
    v_fn: Callable[..., Array],
    key: Array,
    x1: Array,
    *,
    x0: Array | None = None,
    sigma: float = 0.0,
    path: AffinePath | None = None,
    coupling: Coupling | None = None,
    time_sampler: TimeSampler | None = None,
    c: Any = None,
) -> tuple[Array, dict[str, Array]]:
    """I-CFM / OT-CFM with Gaussian smoothing (Tong et al. 2302.00482, Eq. 14-16; torchcfm).

    ``x_t = alpha_t x1 + sigma_t x0 + sigma eps``, target ``alpha'_t x1 + sigma'_t x0``. ``coupling``
    may be given pools (``x0``, ``x1`` of ``m`` rows) and return ``n <= m`` pairs (e.g.
    ``couplings.pooled(ot_exact(), n)``): the loss then trains on the ``n`` pairs.

    Returns ``(loss, {"mse": ...})``.
    """
    _validate(x1, x0, c)
    if sigma < 0:
        raise ValueError(f"`sigma` must be >= 0, got {sigma}.")
    path = path or linear_path()
    coupling = coupling or independent()
    time_sampler = time_sampler or uniform()
    k0, kc, kt, ke = jax.random.split(key, 4)
    if x0 is None:
        x0 = jax.random.normal(k0, x1.shape, x1.dtype)
    x0, x1, c = _pair(kc, x0, x1, coupling, c)
    n = x1.shape[0]
    t = time_sampler(kt, n).astype(x1.dtype)
    x_t, target = path.sample(x0, x1, t)
    if sigma > 0:
        x_t = x_t + sigma * jax.random.normal(ke, x_t.shape, x_t.dtype)
    per_sample = mean_squared(call_with_condition(v_fn, x_t, t, c=c) - target)
    loss = jnp.mean(per_sample)
    return loss, {"mse": loss}


def vpcfm(v_fn, key, x1, *, x0=None, sigma: float = 0.0, coupling=None, time_sampler=None, c=None):
    """Variance-preserving CFM (torchcfm): :func:`icfm` on the trigonometric path ``cos/sin(pi t / 2)``."""
    return icfm(v_fn, key, x1, x0=x0, sigma=sigma, path=cosine_path(), coupling=coupling, time_sampler=time_sampler, c=c)


def target_cfm(v_fn, key, x1, *, x0=None, sigma_min: float = 1e-4, time_sampler=None, c=None):
    """Lipman et al.'s flow matching with ``sigma_min`` (2210.02747, Eq. 20-23): :func:`icfm` on :func:`target_path`."""
    return icfm(v_fn, key, x1, x0=x0, path=target_path(sigma_min), time_sampler=time_sampler, c=c)


# ------------------------------------------------------------------------------------------------
# Schrodinger-bridge CFM
# ------------------------------------------------------------------------------------------------
def brownian_bridge(x0: Array, x1: Array, t: Array, eps: Array, *, sigma: float) -> tuple[Array, Array, Array]:
    """Sample the Brownian bridge between ``x0`` and ``x1`` at time ``t`` with noise ``eps``.

    Returns ``(x_t, u_t, score_t)``: ``x_t = t x1 + (1-t) x0 + sigma_t eps`` with
    ``sigma_t = sigma sqrt(t(1-t))``; the conditional flow velocity
    ``u_t = (x1 - x0) + (sigma_t'/sigma_t)(x_t - mu_t)`` with ``sigma_t'/sigma_t = (1-2t)/(2t(1-t))``;
    the conditional score ``-(x_t - mu_t)/sigma_t^2 = -eps/sigma_t``. ``u`` and the score diverge like
    ``t^(-1/2)`` at the ends (as in the paper); ``t`` is clipped to ``[1e-6, 1 - 1e-6]`` here.
    """
    tb = jnp.clip(broadcast_time(t, x1), 1e-6, 1 - 1e-6)
    root = jnp.sqrt(tb * (1 - tb))
    sig_t = sigma * root
    x_t = tb * x1 + (1 - tb) * x0 + sig_t * eps
    u_t = (x1 - x0) + sigma * (1 - 2 * tb) / (2 * root) * eps
    score = -eps / sig_t
    return x_t, u_t, score


def sbcfm(
    v_fn: Callable[..., Array],
    key: Array,
    x1: Array,
    *,
    x0: Array | None = None,
    sigma: float = 1.0,
    coupling: Coupling | None = None,
    score_fn: Callable[..., Array] | None = None,
    score_weight: float = 1.0,
    time_sampler: TimeSampler | None = None,
    c: Any = None,
) -> tuple[Array, dict[str, Array]]:
    """Schrodinger-bridge CFM (2302.00482, Sec. 4.3 / Alg. 4; score term as SF2M 2307.03672).

    Args:
      v_fn: velocity model.
      key: PRNG key.
      x1: data batch ``(n, ...)``.
      x0: source batch (default standard normal); may be a larger pool if ``coupling`` returns
        fewer pairs.
      sigma: the Brownian reference's noise level ``sigma`` (> 0).
      coupling: default :func:`flowjax.couplings.ot_entropic` with ``reg = 2 sigma^2`` (pairs sampled
        from the flattened plan with replacement, as torchcfm).
      score_fn: optional score model ``s(x_t, t)``; adds ``score_weight * mean ||sigma_t s + eps||^2``.
      score_weight: weight of the score term.
      time_sampler: default ``U[0, 1]``.
      c: condition for the models.

    Returns:
      ``(loss, {"flow_mse", "score_mse"})``.
    """
    _validate(x1, x0, c)
    if not sigma > 0:
        raise ValueError(f"`sigma` must be positive, got {sigma}.")
    coupling = coupling or ot_entropic(2.0 * sigma**2)
    time_sampler = time_sampler or uniform()
    k0, kc, kt, ke = jax.random.split(key, 4)
    if x0 is None:
        x0 = jax.random.normal(k0, x1.shape, x1.dtype)
    x0, x1, c = _pair(kc, x0, x1, coupling, c)
    n = x1.shape[0]
    t = time_sampler(kt, n).astype(x1.dtype)
    eps = jax.random.normal(ke, x1.shape, x1.dtype)
    x_t, u_t, _ = brownian_bridge(x0, x1, t, eps, sigma=sigma)
    flow = jnp.mean(mean_squared(call_with_condition(v_fn, x_t, t, c=c) - u_t))
    aux = {"flow_mse": flow}
    loss = flow
    if score_fn is not None:
        tb = jnp.clip(broadcast_time(t, x1), 1e-6, 1 - 1e-6)
        sig_t = sigma * jnp.sqrt(tb * (1 - tb))
        # noise-weighted score matching: minimiser s = -E[eps | x_t] / sigma_t = grad log p_t (ours)
        score_mse = jnp.mean(mean_squared(sig_t * call_with_condition(score_fn, x_t, t, c=c) + eps))
        aux["score_mse"] = score_mse
        loss = loss + score_weight * score_mse
    return loss, aux


def sb_sde(v_fn, score_fn, key: Array, x0: Array, *, sigma: float, steps: int = 100, t_end: float = 1.0, c: Any = None) -> Array:
    """Euler-Maruyama for the bridge SDE ``dx = [v + sigma^2/2 s] dt + sigma dW`` from t = 0 to ``t_end``.

    With the exact marginal velocity and score of the SB-CFM path, its time-t marginals are the
    path's (the Fokker-Planck equation of this SDE is the continuity equation of ``v``).
    """
    _checks.check_positive_int("steps", steps)
    dt = t_end / steps

    def body(x, inp):
        k, i = inp
        t = jnp.full((x.shape[0],), i * dt, x.dtype)
        drift = call_with_condition(v_fn, x, t, c=c) + 0.5 * sigma**2 * call_with_condition(score_fn, x, t, c=c)
        return x + dt * drift + sigma * jnp.sqrt(dt) * jax.random.normal(k, x.shape, x.dtype), None

    keys = jax.random.split(key, steps)
    x, _ = jax.lax.scan(body, x0, (keys, jnp.arange(steps)))
    return x


def gaussian_sb_cross_covariance(var0: Array, var1: Array, sigma: float) -> Array:
    """Cross-covariance of the entropic-OT (reg ``2 sigma^2``) plan between 1-D ``N(m0, var0)`` and ``N(m1, var1)``.

    ``C = (sqrt(sigma^4 + 4 var0 var1) - sigma^2) / 2`` (Bunne et al., AISTATS 2023, arXiv 2202.05722, 1-D case; re-derived here from the plan's
    Gibbs form: the log-density cross term 2xy/reg fixes C/(var0 var1 - C^2) = 2/reg), so the SB
    marginal variance is ``(1-t)^2 var0 + t^2 var1 + 2 t(1-t) C + sigma^2 t(1-t)``.
    """
    return 0.5 * (jnp.sqrt(sigma**4 + 4 * var0 * var1) - sigma**2)


__all__ = [
    "brownian_bridge",
    "gaussian_sb_cross_covariance",
    "icfm",
    "sb_sde",
    "sbcfm",
    "target_cfm",
    "target_path",
    "vpcfm",
]
