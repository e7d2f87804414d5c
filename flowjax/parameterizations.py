"""Conversions among the prediction targets of diffusion and flow models.

"The Principles of Diffusion Models" (arXiv 2510.21890), spec section 3.B, in project notation:
``x_t = alpha_t x1 + sigma_t x0``, ``x1_hat = E[x1 | x_t = x]``, ``x0_hat = E[x0 | x_t = x]`` so that
``x = alpha x1_hat + sigma x0_hat``; ``lambda = log(alpha/sigma)``, ``lambda' = alpha'/alpha - sigma'/sigma``.
A network may output any of

- ``"velocity"``: the flow-matching velocity ``v = alpha' x1_hat + sigma' x0_hat``;
- ``"data"``: ``x1_hat`` ("x-prediction");
- ``"noise"``: ``x0_hat`` ("epsilon-prediction");
- ``"score"``: ``grad log p_t(x) = -x0_hat / sigma``;
- ``"v_sh"``: Salimans & Ho's "v-prediction" (2202.00512), ``v_SH = alpha x0_hat - sigma x1_hat``,
  the velocity with respect to the angle ``atan(sigma/alpha)`` and **not** the FM velocity (for the
  cosine path ``v_SH = -(2/pi) v``). For non-VP paths we use the same linear map, inverted with
  its determinant ``alpha^2 + sigma^2`` (ours).

All five are affine in ``(x1_hat, x0_hat)`` at fixed ``(x, t)``; every conversion goes through
that pair. Errors scale the same way: for any prediction ``p``,
``p_hat - p_cond = k_p(t) (x0_hat - x0)`` with the factor :func:`error_scale` (spec 3.C; derived):
``k_velocity = -sigma lambda'``, ``k_data = -sigma/alpha``, ``k_noise = 1``, ``k_score = -1/sigma``,
``k_v_sh = (alpha^2 + sigma^2)/alpha``.

EDM preconditioning (Karras et al. 2206.00364, table 1): ``D(x_E, s) = c_skip x_E + c_out
F(c_in x_E, c_noise)`` with ``c_skip = s_d^2/(s^2 + s_d^2)``, ``c_out = s s_d / sqrt(s^2 + s_d^2)``,
``c_in = 1/sqrt(s^2 + s_d^2)``, ``c_noise = ln(s)/4``, ``s_d = 0.5``; see :mod:`flowjax.conventions`
for wrapping an EDM denoiser as a project-time model.

Conversions divide by ``alpha`` (singular at ``t = 0``) or ``sigma`` (singular at ``t = 1``);
evaluate them inside ``(0, 1)``.
"""

from __future__ import annotations

from typing import Callable

import jax.numpy as jnp
from jaxtyping import Array, ArrayLike

from flowjax import _checks
from flowjax.paths import AffinePath, broadcast_time

PREDICTIONS: tuple[str, ...] = ("velocity", "data", "noise", "score", "v_sh")
ModelFn = Callable[..., Array]


def _coeffs(path: AffinePath, t: ArrayLike, x: Array):
    tb = broadcast_time(t, x)
    return path.alpha(tb), path.sigma(tb), path.d_alpha(tb), path.d_sigma(tb)


def to_data_noise(pred: Array, x: Array, t: ArrayLike, *, path: AffinePath, prediction: str) -> tuple[Array, Array]:
    """``(x1_hat, x0_hat)`` from a prediction of kind ``prediction`` at ``(x, t)``."""
    _checks.check_choice("prediction", prediction, PREDICTIONS)
    if prediction == "v_sh":
        a, s, _, _ = _coeffs(path, t, x)
        det = a * a + s * s
        return (a * x - s * pred) / det, (s * x + a * pred) / det
    return path.to_data_and_noise(pred, x, t, prediction)


def from_data_noise(x1: Array, x0: Array, x: Array, t: ArrayLike, *, path: AffinePath, prediction: str) -> Array:
    """The prediction of kind ``prediction`` given ``(x1_hat, x0_hat)`` at ``(x, t)``."""
    _checks.check_choice("prediction", prediction, PREDICTIONS)
    a, s, da, ds = _coeffs(path, t, x)
    if prediction == "velocity":
        return da * x1 + ds * x0
    if prediction == "data":
        return x1
    if prediction == "noise":
        return x0
    if prediction == "score":
        return -x0 / s
    return a * x0 - s * x1  # v_sh


def convert(pred, x: Array, t: ArrayLike, *, path: AffinePath, src: str, dst: str) -> Array:
    """Convert a prediction at ``(x, t)`` from kind ``src`` to kind ``dst``.

    ``src`` may also be ``"data_noise"`` with ``pred = (x1_hat, x0_hat)``.
    """
    if src == dst:
        return pred
    if src == "data_noise":
        x1, x0 = pred
    else:
        x1, x0 = to_data_noise(pred, x, t, path=path, prediction=src)
    return from_data_noise(x1, x0, x, t, path=path, prediction=dst)


def to_x1(pred, x, t, *, path, prediction):
    """``x1_hat`` (data / "x") from any prediction."""
    return to_data_noise(pred, x, t, path=path, prediction=prediction)[0]


def to_x0(pred, x, t, *, path, prediction):
    """``x0_hat`` (noise / epsilon) from any prediction."""
    return to_data_noise(pred, x, t, path=path, prediction=prediction)[1]


def to_velocity(pred, x, t, *, path, prediction):
    """FM velocity ``v = alpha' x1_hat + sigma' x0_hat`` from any prediction."""
    return convert(pred, x, t, path=path, src=prediction, dst="velocity")


def to_score(pred, x, t, *, path, prediction):
    """Score ``-x0_hat / sigma`` from any prediction (Gaussian source)."""
    return convert(pred, x, t, path=path, src=prediction, dst="score")


def tweedie_data(score: Array, x: Array, t: ArrayLike, *, path: AffinePath) -> Array:
    """Tweedie's formula ``x1_hat = (x + sigma^2 s) / alpha``."""
    a, s, _, _ = _coeffs(path, t, x)
    return (x + s * s * score) / a


def velocity_from_score(score: Array, x: Array, t: ArrayLike, *, path: AffinePath) -> Array:
    """PF-ODE drift from the score: ``v = (alpha'/alpha) x + sigma^2 lambda' s`` (spec 3.B/3.D)."""
    a, s, da, _ = _coeffs(path, t, x)
    dlam = path.d_log_snr(broadcast_time(t, x))
    return (da / a) * x + s * s * dlam * score


def error_scale(prediction: str, t: ArrayLike, *, path: AffinePath, like: Array | None = None) -> Array:
    """``k_p(t)`` with ``p_hat - p_cond = k_p(t) (x0_hat - x0)`` (see the module docstring)."""
    _checks.check_choice("prediction", prediction, PREDICTIONS)
    t = jnp.asarray(t) if like is None else broadcast_time(t, like)
    a, s = path.alpha(t), path.sigma(t)
    if prediction == "velocity":
        return -s * path.d_log_snr(t)
    if prediction == "data":
        return -s / a
    if prediction == "noise":
        return jnp.ones_like(a)
    if prediction == "score":
        return -1.0 / s
    return (a * a + s * s) / a


def wrap(fn: ModelFn, *, path: AffinePath, src: str, dst: str) -> ModelFn:
    """A model ``fn(x, t, **kw)`` predicting ``src``, seen as one predicting ``dst``."""
    _checks.check_choice("src", src, PREDICTIONS)
    _checks.check_choice("dst", dst, PREDICTIONS)
    if src == dst:
        return fn

    def wrapped(x: Array, t: Array, **kwargs) -> Array:
        return convert(fn(x, t, **kwargs), x, t, path=path, src=src, dst=dst)

    return wrapped


def edm_coefficients(sigma: ArrayLike, *, sigma_data: float = 0.5) -> tuple[Array, Array, Array, Array]:
    """EDM preconditioning ``(c_skip, c_out, c_in, c_noise)`` at noise level ``sigma`` (2206.00364, table 1)."""
    sigma = jnp.asarray(sigma)
    total = sigma**2 + sigma_data**2
    return sigma_data**2 / total, sigma * sigma_data / jnp.sqrt(total), 1.0 / jnp.sqrt(total), 0.25 * jnp.log(sigma)


def edm_precondition(raw_fn: ModelFn, *, sigma_data: float = 0.5) -> ModelFn:
    """The EDM denoiser ``D(x_E, sigma) = c_skip x_E + c_out F(c_in x_E, c_noise)`` of a raw net ``F``.

    ``raw_fn(x, c_noise, **kw)`` takes ``c_noise`` of shape ``(n,)``; the result ``D(x_E, sigma, **kw)``
    (``sigma`` of shape ``(n,)``) predicts ``x1`` in EDM's variables ``x_E = x1 + sigma x0``.
    The training target for ``F`` is ``(x1 - c_skip x_E) / c_out`` (EDM's effective target).
    """

    def denoiser(x: Array, sigma: Array, **kwargs) -> Array:
        sigma = jnp.asarray(sigma, x.dtype)
        c_skip, c_out, c_in, c_noise = edm_coefficients(sigma, sigma_data=sigma_data)
        cs, co, ci = (broadcast_time(c, x) for c in (c_skip, c_out, c_in))
        return cs * x + co * raw_fn(ci * x, c_noise, **kwargs)

    return denoiser


__all__ = [
    "PREDICTIONS",
    "convert",
    "edm_coefficients",
    "edm_precondition",
    "error_scale",
    "from_data_noise",
    "to_data_noise",
    "to_score",
    "to_velocity",
    "to_x0",
    "to_x1",
    "tweedie_data",
    "velocity_from_score",
    "wrap",
]
