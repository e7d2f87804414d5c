"""Sampling time grids, SNR-equivalent rescaling, EDM / VE sigmas and schedule transforms.

"The Principles of Diffusion Models" (Lai, Song, Kim, Mitsufuji, Ermon, arXiv 2510.21890), the
spec's section 3.A, in project time (``t = 0`` noise, ``t = 1`` data, ``x_t = alpha_t x1 + sigma_t x0``,
half log-SNR ``lambda_t = log(alpha_t / sigma_t)`` increasing in ``t``).

- **SNR equivalence** (derived, standard): the posterior ``p(x1 | x_t)`` depends on ``x_t`` only
  through ``x_t / alpha_t`` and ``lambda_t``. Two paths ``A``, ``B`` with ``lambda^A_t = lambda^B_{t'}``
  are therefore the same process up to the state scaling ``x^B = (alpha^B_{t'} / alpha^A_t) x^A``.
  VE / EDM (``x_E = x1 + sigma_E x0``, which violates ``alpha_0 = 0``) is handled this way, never
  special-cased: ``sigma_E = sigma_t / alpha_t = exp(-lambda_t)``; on the linear path
  ``t = 1 / (1 + sigma_E)`` and ``x_lin = x_E / (1 + sigma_E)``.
- **Grids** (each returns an increasing ``(steps + 1,)`` array of project times): uniform in ``t``;
  uniform in ``lambda`` (DPM-Solver, Lu et al. 2206.00927); the EDM rho-grid (Karras et al.
  2206.00364, eq. 5) mapped to times through ``sigma_E``; the SD3 / Flux shift (Esser et al.
  2403.03206; Flux's resolution-dependent ``mu``) applied to any grid.
- **Schedule transforms of a trained model**: :func:`reschedule` turns a model trained on one path
  into the same model on another path (so a VP-trained net can be sampled on the linear path's
  grid, or the reverse).
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike

from flowjax import _checks
from flowjax.parameterizations import convert, to_data_noise
from flowjax.paths import AffinePath, broadcast_time

ModelFn = Callable[..., Array]


# ------------------------------------------------------------------------------------------
# Time <-> lambda <-> EDM sigma
# ------------------------------------------------------------------------------------------
def log_snr(path: AffinePath, t: ArrayLike) -> Array:
    """``lambda_t = log(alpha_t / sigma_t)`` (half log-SNR)."""
    return path.log_snr(t)


def d_log_snr(path: AffinePath, t: ArrayLike) -> Array:
    """``dlambda/dt = alpha'/alpha - sigma'/sigma`` (positive)."""
    return path.d_log_snr(t)


def time_from_log_snr(path: AffinePath, lam: ArrayLike) -> Array:
    """The time ``t`` with ``lambda_t = lam`` (closed form where the path has one, else bisection)."""
    return path.time_from_log_snr(lam)


def edm_sigma(path: AffinePath, t: ArrayLike) -> Array:
    """EDM / VE noise level of project time ``t``: ``sigma_E = sigma_t / alpha_t = exp(-lambda_t)``."""
    t = jnp.asarray(t)
    return path.sigma(t) / path.alpha(t)


def time_from_edm_sigma(sigma: ArrayLike, path: AffinePath | None = None) -> Array:
    """Project time with ``sigma_t / alpha_t = sigma`` (default: linear path, ``t = 1 / (1 + sigma)``)."""
    sigma = jnp.asarray(sigma, dtype=float) if not hasattr(sigma, "dtype") else jnp.asarray(sigma)
    if path is None or path.name == "linear":
        return 1.0 / (1.0 + sigma)
    return path.time_from_log_snr(-jnp.log(sigma))


def snr_equivalent(src: AffinePath, dst: AffinePath, t: ArrayLike) -> tuple[Array, Array]:
    """Time and state scale taking path ``src`` at time ``t`` to the SNR-equivalent point of ``dst``.

    Returns ``(t_dst, scale)`` with ``lambda^dst(t_dst) = lambda^src(t)`` and
    ``x^dst = scale * x^src``, ``scale = alpha^dst(t_dst) / alpha^src(t)`` (spec 3.A; e.g. VP -> linear
    is ``t' = alpha/(alpha + sigma)``, ``x' = x / (alpha + sigma)``).
    """
    t = jnp.asarray(t)
    t_dst = dst.time_from_log_snr(src.log_snr(t))
    return t_dst, dst.alpha(t_dst) / src.alpha(t)


# ------------------------------------------------------------------------------------------
# Grids
# ------------------------------------------------------------------------------------------
def _check_interval(t_min: float, t_max: float) -> None:
    if not (0.0 <= t_min < t_max <= 1.0):
        raise ValueError(f"need 0 <= t_min < t_max <= 1, got t_min={t_min}, t_max={t_max}.")


def uniform_grid(steps: int, *, t_min: float = 0.0, t_max: float = 1.0) -> Array:
    """``steps + 1`` times uniform in ``t`` on ``[t_min, t_max]``."""
    _checks.check_positive_int("steps", steps)
    _check_interval(t_min, t_max)
    return jnp.linspace(t_min, t_max, steps + 1)


def log_snr_grid(path: AffinePath, steps: int, *, t_min: float = 1e-3, t_max: float = 1.0 - 1e-3) -> Array:
    """``steps + 1`` times uniform in ``lambda`` between ``lambda(t_min)`` and ``lambda(t_max)``.

    The grid of DPM-Solver (2206.00927, "logSNR" spacing). The end points must have finite
    ``lambda`` (``alpha > 0``, ``sigma > 0``), so ``t_min = 0`` only works for paths with
    ``alpha_0 > 0`` (VP with continuous beta) and ``t_max < 1`` always.
    """
    _checks.check_positive_int("steps", steps)
    _check_interval(t_min, t_max)
    lo, hi = path.log_snr(jnp.asarray(t_min, float)), path.log_snr(jnp.asarray(t_max, float))
    if _checks._is_concrete(lo) and not (np.isfinite(float(lo)) and np.isfinite(float(hi))):
        raise ValueError(
            f"lambda is infinite at t_min={t_min} or t_max={t_max} on path {path.name!r}; move the end points inside (0, 1)."
        )
    lams = jnp.linspace(lo, hi, steps + 1)
    times = path.time_from_log_snr(lams)
    return times.at[0].set(t_min).at[-1].set(t_max)


def edm_sigmas(steps: int, *, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0) -> Array:
    """EDM's decreasing noise levels (2206.00364, eq. 5) with ``steps + 1`` points:
    ``sigma_i = (sigma_max^(1/rho) + i/steps (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho``."""
    _checks.check_positive_int("steps", steps)
    if not (0.0 < sigma_min < sigma_max):
        raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}.")
    if rho <= 0:
        raise ValueError(f"`rho` must be positive, got {rho}.")
    ramp = jnp.linspace(0.0, 1.0, steps + 1)
    lo, hi = sigma_min ** (1.0 / rho), sigma_max ** (1.0 / rho)
    return (hi + ramp * (lo - hi)) ** rho


def edm_grid(
    steps: int,
    *,
    sigma_min: float = 0.002,
    sigma_max: float = 80.0,
    rho: float = 7.0,
    path: AffinePath | None = None,
    to_data: bool = False,
) -> Array:
    """The EDM rho-grid as increasing project times ``t_i = t(sigma_i)`` on ``path`` (default linear).

    ``to_data=True`` follows EDM's sampler: ``steps`` rho-grid levels followed by ``sigma = 0``
    (``t = 1``), still ``steps + 1`` times in all.
    """
    if to_data:
        sig = edm_sigmas(max(steps - 1, 1), sigma_min=sigma_min, sigma_max=sigma_max, rho=rho)[: steps]
        times = time_from_edm_sigma(sig, path)
        return jnp.concatenate([times, jnp.ones((1,), times.dtype)])
    return time_from_edm_sigma(edm_sigmas(steps, sigma_min=sigma_min, sigma_max=sigma_max, rho=rho), path)


def shift_time(t: ArrayLike, shift: float) -> Array:
    """SD3 / Flux time shift in project time: with ``sigma = 1 - t``,
    ``sigma' = shift sigma / (1 + (shift - 1) sigma)`` (2403.03206, resolution-dependent shifting), ``t' = 1 - sigma'``.

    ``shift > 1`` spends more of the grid near noise. ``shift = 1`` is the identity.
    """
    if shift <= 0:
        raise ValueError(f"`shift` must be positive, got {shift}.")
    sig = 1.0 - jnp.asarray(t)
    return 1.0 - shift * sig / (1.0 + (shift - 1.0) * sig)


def shifted_grid(times: ArrayLike, shift: float) -> Array:
    """Apply :func:`shift_time` to a grid (end points 0 and 1 are fixed)."""
    return shift_time(times, shift)


def flux_shift(
    seq_len: int, *, base_shift: float = 0.5, max_shift: float = 1.15, base_len: int = 256, max_len: int = 4096
) -> float:
    """Flux's resolution-dependent shift ``exp(mu)``, ``mu`` linear in the token count.

    ``mu = base_shift + (max_shift - base_shift) (seq_len - base_len) / (max_len - base_len)``; Flux's
    ``exp(mu) / (exp(mu) + 1/t_F - 1)`` (``t_F`` its noise level) is :func:`shift_time` with
    ``shift = exp(mu)``. (Recalled from the public Flux / diffusers code, not from a paper.)
    """
    mu = base_shift + (max_shift - base_shift) * (seq_len - base_len) / (max_len - base_len)
    return float(math.exp(mu))


def edm_lognormal_times(p_mean: float = -1.2, p_std: float = 1.2, *, path: AffinePath | None = None):
    """EDM training noise levels ``ln sigma_E ~ N(p_mean, p_std^2)`` (2206.00364, table 1) as a
    project-time sampler ``fn(key, n) -> t`` on ``path``."""
    if p_std <= 0:
        raise ValueError(f"`p_std` must be positive, got {p_std}.")

    def sample(key: Array, n: int) -> Array:
        sigma = jnp.exp(p_mean + p_std * jax.random.normal(key, (n,)))
        return time_from_edm_sigma(sigma, path)

    return sample


# ------------------------------------------------------------------------------------------
# Schedule transform of a trained model
# ------------------------------------------------------------------------------------------
def reschedule(
    fn: ModelFn,
    *,
    trained_path: AffinePath,
    target_path: AffinePath,
    prediction: str = "velocity",
    output: str = "velocity",
) -> ModelFn:
    """Use a model trained on ``trained_path`` as a model on ``target_path`` (SNR equivalence).

    At ``(x, t)`` of the target path, evaluate the model at the SNR-equivalent point
    ``(x / scale, t_src)`` of the trained path (``lambda^trained(t_src) = lambda^target(t)``), map
    its ``prediction`` to ``(x1_hat, x0_hat)`` (the same on both paths), and return ``output``
    (``"velocity" | "data" | "noise" | "score"``) for the target path. Derived from spec 3.A.

    Example: sample a VP-trained epsilon net on the linear path with Euler,
    ``v = reschedule(eps_net, trained_path=vp_path(), target_path=linear_path(), prediction="noise")``.
    """

    def new_fn(x: Array, t: Array, **kwargs) -> Array:
        t = jnp.asarray(t, x.dtype)
        # the SNR-equivalent point of the trained path: x_trained = scale * x_target at t_trained.
        t_trained, scale = snr_equivalent(target_path, trained_path, t)
        x_trained = broadcast_time(scale, x) * x
        t_call = t_trained if t.ndim else jnp.full((x.shape[0],), t_trained, x.dtype)
        pred = fn(x_trained, t_call, **kwargs)
        x1, x0 = to_data_noise(pred, x_trained, t_call, path=trained_path, prediction=prediction)
        return convert((x1, x0), x, t, path=target_path, src="data_noise", dst=output)

    return new_fn


__all__ = [
    "d_log_snr",
    "edm_grid",
    "edm_lognormal_times",
    "edm_sigma",
    "edm_sigmas",
    "flux_shift",
    "log_snr",
    "log_snr_grid",
    "reschedule",
    "shift_time",
    "shifted_grid",
    "snr_equivalent",
    "time_from_edm_sigma",
    "time_from_log_snr",
    "uniform_grid",
]
