"""One denoising loss for every prediction target and time weighting.

"The Principles of Diffusion Models" (arXiv 2510.21890), spec section 3.C, in project notation.
With ``x_t = alpha_t x1 + sigma_t x0`` and any prediction ``p`` (see :mod:`flowjax.parameterizations`),
``p_hat - p_cond = k_p(t) (x0_hat - x0)`` (derived), so every denoising loss is an epsilon-MSE with a
time weight ``w(t)``:

    L = E_t E_{x0, x1} w(t) |x0_hat(x_t, t) - x0|^2
      = E_t E (w(t) / k_p(t)^2) |p_hat(x_t, t) - p_cond|^2            (computed in p's own space)

Named weightings ``w(t)`` (on the epsilon error):

============  ================================  =============================================
name          ``w(t)``                           the familiar loss
============  ================================  =============================================
``velocity``  ``sigma^2 lambda'^2``               flow matching ``|v_hat - v_cond|^2`` (linear: ``1/t^2``)
``noise``     ``1``                              DDPM "simple" epsilon-MSE = Song's sigma^2-weighted DSM
``data``      ``sigma^2 / alpha^2``              x-prediction ``|x1_hat - x1|^2``
``score``     ``1 / sigma^2``                    unweighted DSM ``|s_hat - s_cond|^2``
``v_sh``      ``((alpha^2+sigma^2)/alpha)^2``     Salimans-Ho v-MSE
``elbo``      ``lambda'``                        continuous-time -ELBO, diffusion term (uniform in lambda; Kingma
                                                 et al. 2107.00630): with ``reduce="sum"`` and uniform ``t``, the
                                                 loss is that term in nats per sample
============  ================================  =============================================

A callable ``w(t)`` is also accepted; :func:`sd3_weighting` gives SD3's (Esser et al. 2403.03206,
section 3.1) logit-normal and cosmap densities ``pi(t)`` folded into the FM weight,
``w = sigma^2 lambda'^2 pi(t)``, so that uniform ``t`` with this weight has the same expectation as
FM with ``t ~ pi`` (equivalently pass ``time_sampler=logit_normal(...)`` and ``weighting="velocity"``).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array

from flowjax import _checks
from flowjax.losses.cfm import call_with_condition, mean_squared
from flowjax.parameterizations import PREDICTIONS, error_scale, from_data_noise
from flowjax.paths import AffinePath, linear_path
from flowjax.timesteps import TimeSampler, uniform

WEIGHTINGS: tuple[str, ...] = ("velocity", "noise", "data", "score", "v_sh", "elbo")
_ALIASES = {"fm": "velocity", "eps": "noise", "epsilon": "noise", "x": "data", "dsm": "score"}


def epsilon_weight(weighting: str | Callable[[Array], Array], t: Array, *, path: AffinePath) -> Array:
    """``w(t)`` on the epsilon error for a named weighting (table in the module docstring) or a callable."""
    if callable(weighting):
        return weighting(t)
    name = _ALIASES.get(weighting, weighting)
    _checks.check_choice("weighting", name, WEIGHTINGS)
    if name == "elbo":
        return path.d_log_snr(t)
    return error_scale(name, t, path=path) ** 2


def logit_normal_density(t: Array, mean: float = 0.0, std: float = 1.0) -> Array:
    """Density of ``t = sigmoid(n)``, ``n ~ N(mean, std^2)`` (project time; SD3's ``m`` is ``-mean``)."""
    logit = jnp.log(t) - jnp.log1p(-t)
    return jnp.exp(-0.5 * ((logit - mean) / std) ** 2) / (std * jnp.sqrt(2 * jnp.pi) * t * (1 - t))


def cosmap_density(t: Array) -> Array:
    """SD3's CosMap density ``pi(t) = 2 / (pi - 2 pi t + 2 pi t^2)`` (symmetric, so the same in project time)."""
    return 2.0 / (jnp.pi - 2 * jnp.pi * t + 2 * jnp.pi * t**2)


def sd3_weighting(path: AffinePath | None = None, *, density: str = "logit_normal", mean: float = 0.0, std: float = 1.0):
    """SD3-style weighting ``w(t) = sigma^2 lambda'^2 pi(t)`` for uniformly drawn ``t`` (2403.03206, section 3.1).

    ``density``: ``"logit_normal"`` (``mean``, ``std``; SD3's best: ``m = 0, s = 1``) or ``"cosmap"``.
    """
    path = path or linear_path()
    _checks.check_choice("density", density, ("logit_normal", "cosmap"))
    dens = (lambda t: logit_normal_density(t, mean, std)) if density == "logit_normal" else cosmap_density
    return lambda t: error_scale("velocity", t, path=path) ** 2 * dens(t)


def denoising_loss(
    fn: Callable[..., Array],
    key: Array,
    x1: Array,
    *,
    path: AffinePath | None = None,
    prediction: str = "velocity",
    weighting: str | Callable[[Array], Array] = "velocity",
    time_sampler: TimeSampler | None = None,
    x0: Array | None = None,
    c: Any = None,
    reduce: str = "mean",
) -> tuple[Array, dict[str, Array]]:
    """The unified denoising loss ``E_t w(t) |x0_hat - x0|^2``, evaluated in ``prediction``'s space.

    Args:
      fn: the model ``fn(x_t, t) -> prediction`` (``t`` of shape ``(n,)``), or ``fn(x_t, t, c=c)``.
      key: PRNG key (split as in :func:`flowjax.losses.cfm`: noise, coupling (unused), time).
      x1: data batch ``(n, ...)``.
      path: affine path (default linear).
      prediction: what ``fn`` outputs: ``"velocity" | "data" | "noise" | "score" | "v_sh"``.
      weighting: a name from :data:`WEIGHTINGS` (aliases ``fm, eps, x, dsm``) or ``w(t)`` on the epsilon
        error. When the weighting is the prediction's own (e.g. ``velocity``/``velocity``), the native
        MSE is used with weight exactly 1.
      time_sampler: ``t ~ p(t)`` (default uniform on ``[0, 1]``; keep ``t`` away from the path's
        singular ends for weights such as ``score`` or ``elbo``).
      x0: source batch (default standard Gaussian).
      c: condition passed to ``fn``.
      reduce: ``"mean"`` (over feature dimensions) or ``"sum"`` (``|.|^2`` proper; use for ``elbo``).

    Returns:
      ``(loss, {"eps_mse": unweighted |x0_hat - x0|^2, "native_mse": unweighted |p_hat - p_cond|^2})``.
    """
    _checks.check_float_array("x1", x1, min_ndim=1)
    _checks.check_choice("prediction", prediction, PREDICTIONS)
    _checks.check_choice("reduce", reduce, ("mean", "sum"))
    if not callable(weighting):
        _checks.check_choice("weighting", _ALIASES.get(weighting, weighting), WEIGHTINGS)
    if x0 is not None:
        _checks.check_float_array("x0", x0, min_ndim=1)
        _checks.check_same_shape("x0", x0, "x1", x1)
    path = path or linear_path()
    time_sampler = time_sampler or uniform()
    n = x1.shape[0]

    k0, _, kt = jax.random.split(key, 3)
    if x0 is None:
        x0 = jax.random.normal(k0, x1.shape, x1.dtype)
    t = time_sampler(kt, n).astype(x1.dtype)
    x_t, _ = path.sample(x0, x1, t)
    target = from_data_noise(x1, x0, x_t, t, path=path, prediction=prediction)
    pred = call_with_condition(fn, x_t, t, c=c)
    err = pred - target
    per_sample = mean_squared(err)
    if reduce == "sum":
        per_sample = per_sample * (err.size // n)
    k2 = error_scale(prediction, t, path=path) ** 2
    name = None if callable(weighting) else _ALIASES.get(weighting, weighting)
    if name == prediction:
        weight = jnp.ones_like(t)
    else:
        weight = epsilon_weight(weighting, t, path=path) / k2
    loss = jnp.mean(weight * per_sample)
    return loss, {"eps_mse": jnp.mean(per_sample / k2), "native_mse": jnp.mean(per_sample)}


__all__ = [
    "WEIGHTINGS",
    "cosmap_density",
    "denoising_loss",
    "epsilon_weight",
    "logit_normal_density",
    "sd3_weighting",
]
