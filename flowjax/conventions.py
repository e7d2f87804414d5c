"""Adapters between other codebases' time / noise conventions and the project's.

Project convention (NOTATION.md): ``t = 0`` noise, ``t = 1`` data, ``x_t = alpha_t x1 + sigma_t x0``,
velocity ``v = dx/dt``, average velocity ``u(x, s, t)`` with ``X_{s,t}(x) = x + (t - s) u(x, s, t)``.
Every ``from_*`` adapter turns a model written in another convention into a project-convention
callable; the matching ``to_*`` adapter goes back, and ``to_*(from_*(m))`` is ``m`` (tested).

- **MeanFlow** (Geng et al. 2505.13447): ``z_t = (1 - t) x + t eps`` (``t = 1`` noise), ``v = eps - x``,
  ``z_r = z_t - (t - r) u(z_t, r, t)`` for ``r < t``. Project: ``t_p = 1 - t``; hence
  ``u_proj(x, s, t) = -u_MF(x, r = 1 - t, t = 1 - s)`` and ``v_proj(x, t) = -v_MF(x, 1 - t)``.
- **diffusers / SD3 / Flux flow matching** (``FlowMatchEulerDiscreteScheduler``): ``x = (1 - sig) x1 +
  sig eps``, the network takes ``timestep = sig * num_train_timesteps`` and predicts
  ``v_sig = eps - x1 = -v``; project ``t = 1 - sig``.
- **EDM / VE** (Karras et al. 2206.00364): ``x_E = x1 + sig_E x0`` and a denoiser
  ``D(x_E, sig_E) ~ E[x1 | x_E]``. By SNR equivalence (spec 3.A) ``sig_E = sigma_t / alpha_t`` and
  ``x_E = x_t / alpha_t`` on any project path, so ``x1_hat(x, t) = D(x / alpha_t, sigma_t / alpha_t)``.
- **Diffusion ("book") time** (the monograph, DDPM, score SDEs): ``tau = T (1 - t)``, data at
  ``tau = 0``. Noise, data and score predictions are unchanged; a velocity ``dx/dtau`` is
  ``-v_proj / T``.
"""

from __future__ import annotations

from typing import Callable

import jax.numpy as jnp
from jaxtyping import Array

from flowjax import _checks
from flowjax.parameterizations import PREDICTIONS, convert
from flowjax.paths import AffinePath, broadcast_time, linear_path
from flowjax.schedules import time_from_edm_sigma

ModelFn = Callable[..., Array]


# -- MeanFlow ----------------------------------------------------------------------------------
def from_meanflow(u_mf: ModelFn) -> ModelFn:
    """MeanFlow's ``u(z, r, t)`` (t = 1 noise, ``r < t``) as a project ``u(x, s, t)``."""

    def u(x: Array, s: Array, t: Array, **kwargs) -> Array:
        return -u_mf(x, 1.0 - t, 1.0 - s, **kwargs)

    return u


def to_meanflow(u: ModelFn) -> ModelFn:
    """A project ``u(x, s, t)`` as MeanFlow's ``u(z, r, t)``."""

    def u_mf(z: Array, r: Array, t: Array, **kwargs) -> Array:
        return -u(z, 1.0 - t, 1.0 - r, **kwargs)

    return u_mf


def from_meanflow_velocity(v_mf: ModelFn) -> ModelFn:
    """MeanFlow / rectified-flow-with-t=1-noise velocity ``v(z, t) = eps - x`` as a project ``v(x, t)``."""
    return lambda x, t, **kwargs: -v_mf(x, 1.0 - t, **kwargs)


def to_meanflow_velocity(v: ModelFn) -> ModelFn:
    """A project ``v(x, t)`` in MeanFlow's time and sign."""
    return lambda z, t, **kwargs: -v(z, 1.0 - t, **kwargs)


# -- diffusers / SD3 flow matching -------------------------------------------------------------
def from_diffusers_flow(model: ModelFn, *, num_train_timesteps: float = 1000.0) -> ModelFn:
    """A diffusers flow-matching model ``model(x, timestep) -> eps - x1`` as a project ``v(x, t)``."""

    def v(x: Array, t: Array, **kwargs) -> Array:
        return -model(x, (1.0 - t) * num_train_timesteps, **kwargs)

    return v


def to_diffusers_flow(v: ModelFn, *, num_train_timesteps: float = 1000.0) -> ModelFn:
    """A project ``v(x, t)`` as a diffusers flow-matching model ``model(x, timestep)``."""

    def model(x: Array, timestep: Array, **kwargs) -> Array:
        return -v(x, 1.0 - timestep / num_train_timesteps, **kwargs)

    return model


# -- EDM / VE ----------------------------------------------------------------------------------
def from_edm(denoiser: ModelFn, *, path: AffinePath | None = None) -> ModelFn:
    """An EDM denoiser ``D(x_E, sigma_E)`` as a project data predictor ``x1_hat(x, t)`` on ``path``.

    ``x1_hat(x, t) = D(x / alpha_t, sigma_t / alpha_t)`` (SNR equivalence; default linear path, where
    ``sigma_E = (1 - t)/t``). Wrap the result with :func:`flowjax.parameterizations.wrap` to get a velocity.
    """
    path = path or linear_path()

    def data_fn(x: Array, t: Array, **kwargs) -> Array:
        t = jnp.asarray(t, x.dtype)
        a = path.alpha(t)
        return denoiser(x / broadcast_time(a, x), path.sigma(t) / a, **kwargs)

    return data_fn


def to_edm(fn: ModelFn, *, path: AffinePath | None = None, prediction: str = "velocity") -> ModelFn:
    """A project model ``fn(x, t)`` predicting ``prediction`` on ``path`` as an EDM denoiser
    ``D(x_E, sigma_E) = x1_hat(alpha_t x_E, t)`` with ``sigma_t / alpha_t = sigma_E``."""
    _checks.check_choice("prediction", prediction, PREDICTIONS)
    path = path or linear_path()

    def denoiser(x_e: Array, sigma: Array, **kwargs) -> Array:
        sigma = jnp.asarray(sigma, x_e.dtype)
        t = time_from_edm_sigma(sigma, path)
        x = broadcast_time(path.alpha(t), x_e) * x_e
        return convert(fn(x, t, **kwargs), x, t, path=path, src=prediction, dst="data")

    return denoiser


# -- diffusion ("book") time -------------------------------------------------------------------
def from_diffusion_time(fn: ModelFn, *, prediction: str = "noise", horizon: float = 1.0) -> ModelFn:
    """A model in diffusion time ``fn(x, tau)``, ``tau = T (1 - t)`` (data at ``tau = 0``), as a project
    model predicting the same kind. ``prediction="velocity"`` means ``dx/dtau``, which is rescaled to
    ``v = -T dx/dtau``; other kinds are convention-free."""
    _checks.check_choice("prediction", prediction, PREDICTIONS)
    sign = -horizon if prediction == "velocity" else 1.0
    return lambda x, t, **kwargs: sign * fn(x, horizon * (1.0 - t), **kwargs)


def to_diffusion_time(fn: ModelFn, *, prediction: str = "noise", horizon: float = 1.0) -> ModelFn:
    """Inverse of :func:`from_diffusion_time`."""
    _checks.check_choice("prediction", prediction, PREDICTIONS)
    sign = -1.0 / horizon if prediction == "velocity" else 1.0
    return lambda x, tau, **kwargs: sign * fn(x, 1.0 - tau / horizon, **kwargs)


__all__ = [
    "from_diffusers_flow",
    "from_diffusion_time",
    "from_edm",
    "from_meanflow",
    "from_meanflow_velocity",
    "to_diffusers_flow",
    "to_diffusion_time",
    "to_edm",
    "to_meanflow",
    "to_meanflow_velocity",
]
