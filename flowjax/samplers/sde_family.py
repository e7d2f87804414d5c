"""The PF-ODE and the marginal-preserving SDE family, with any diffusion ``eps_t``.

"The Principles of Diffusion Models" (arXiv 2510.21890), spec section 3.D, in project time
(``t = 0`` noise, ``t = 1`` data, ``x_t = alpha_t x1 + sigma_t x0``, ``s = grad log p_t = -x0_hat/sigma``):

    PF-ODE:           dx/dt = v(x, t) = (alpha'/alpha) x + sigma^2 lambda' s
    marginal family:  dx = [v + (eps_t^2 / 2) s] dt + eps_t dW,   any eps_t >= 0   (same marginals p_t)
    reverse SDE:      eps_t^2 = g_t^2 = 2 sigma_t^2 lambda'_t
    forward noising SDE (tau = 1 - t): dx = f x dtau + g dW,  f = -alpha'/alpha,  g^2 = 2 sigma^2 lambda'

(Song et al. 2011.13456; Fokker-Planck: the extra drift ``(eps^2/2) s`` cancels the diffusion's
``(eps^2/2) Laplacian``.) Choices of ``eps_t``: :func:`zero_diffusion` (the ODE),
:func:`reverse_sde_diffusion` (``eta g_t``), :func:`flow_grpo_diffusion` (Liu et al. 2505.05470:
``a sqrt(t_F/(1 - t_F))`` in its noise-level time ``t_F = 1 - t``, i.e. ``a sqrt((1 - t)/t)`` on the
linear path; ``a = 0.7``; we write it ``a exp(-lambda/2)`` on other paths, ours), and
:func:`dance_grpo_diffusion` (Xue et al. 2505.07818: a constant ``eta``).
On the linear path ``g_t^2 = 2 (1 - t)/t``, so Flow-GRPO's ``eps`` is ``(a/sqrt 2) g``.

Integrators: Euler-Maruyama (:func:`em_step`; :func:`em_transition` exposes the Gaussian transition
``N(mean, std^2)`` whose log-density RL methods need) and the exponential integrator
:func:`flowjax.samplers.solvers.exp_em_step`. :func:`sample_sde` runs either over a grid.
:func:`pf_ode_log_likelihood` is the instantaneous change of variables along the PF-ODE for a model
of any prediction type.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike

from flowjax import _checks
from flowjax.paths import AffinePath, linear_path
from flowjax.samplers.ode import log_likelihood, standard_normal_log_prob
from flowjax.samplers.solvers import PredictionModel, as_model, exp_em_step

Diffusion = Callable[[Array], Array]


# ------------------------------------------------------------------------------------------
# Diffusion coefficients
# ------------------------------------------------------------------------------------------
def reverse_sde_g2(path: AffinePath, t: ArrayLike) -> Array:
    """``g_t^2 = 2 sigma_t^2 lambda'_t`` (the reverse-SDE / forward-noising diffusion squared)."""
    t = jnp.asarray(t)
    return 2.0 * path.sigma(t) ** 2 * path.d_log_snr(t)


def forward_sde_coefficients(path: AffinePath, t: ArrayLike) -> tuple[Array, Array]:
    """``(f, g^2)`` of the forward noising SDE ``dx = f x dtau + g dW`` in ``tau = 1 - t`` at project time ``t``."""
    t = jnp.asarray(t)
    return -path.d_alpha(t) / path.alpha(t), reverse_sde_g2(path, t)


def zero_diffusion() -> Diffusion:
    """``eps_t = 0``: the PF-ODE."""
    return lambda t: jnp.zeros_like(jnp.asarray(t))


def reverse_sde_diffusion(path: AffinePath | None = None, eta: float = 1.0) -> Diffusion:
    """``eps_t = eta g_t`` with ``g_t^2 = 2 sigma^2 lambda'`` (``eta = 1``: the reverse SDE)."""
    path = path or linear_path()
    if eta < 0:
        raise ValueError(f"`eta` must be non-negative, got {eta}.")
    return lambda t: eta * jnp.sqrt(reverse_sde_g2(path, t))


def flow_grpo_diffusion(path: AffinePath | None = None, a: float = 0.7) -> Diffusion:
    """Flow-GRPO's ``eps_t = a sqrt((1 - t)/t)`` on the linear path (``a exp(-lambda_t/2)`` generally)."""
    path = path or linear_path()
    if a < 0:
        raise ValueError(f"`a` must be non-negative, got {a}.")
    return lambda t: a * jnp.exp(-0.5 * path.log_snr(jnp.asarray(t)))


def dance_grpo_diffusion(eta: float) -> Diffusion:
    """DanceGRPO's constant ``eps_t = eta`` (no default: the value is a per-model hyperparameter)."""
    if eta < 0:
        raise ValueError(f"`eta` must be non-negative, got {eta}.")
    return lambda t: jnp.full_like(jnp.asarray(t, float), eta)


# ------------------------------------------------------------------------------------------
# Drifts and steps
# ------------------------------------------------------------------------------------------
def pf_ode_drift(model: PredictionModel, x: Array, t: ArrayLike) -> Array:
    """``v(x, t) = (alpha'/alpha) x + sigma^2 lambda' s`` (the model's velocity)."""
    return model.velocity(x, t)


def sde_drift(model: PredictionModel, x: Array, t: ArrayLike, eps_t: ArrayLike) -> Array:
    """``v + (eps_t^2/2) s`` with ``s = -x0_hat/sigma`` (one network call)."""
    p = model.path
    x1, x0 = model.data_noise(x, t)
    t = jnp.asarray(t, x.dtype)
    v = p.d_alpha(t) * x1 + p.d_sigma(t) * x0
    return v - 0.5 * jnp.asarray(eps_t) ** 2 * x0 / p.sigma(t)


def em_transition(model: PredictionModel, x: Array, t, t_next, *, diffusion: Diffusion) -> tuple[Array, Array]:
    """Euler-Maruyama transition ``x' ~ N(mean, std^2 I)``: ``mean = x + h [v + (eps^2/2) s]``,
    ``std = eps_t sqrt(h)`` (drift and ``eps`` at the left end ``t``)."""
    eps = diffusion(jnp.asarray(t, x.dtype))
    h = t_next - t
    return x + h * sde_drift(model, x, t, eps), eps * jnp.sqrt(jnp.abs(h))


def em_step(model: PredictionModel, key: Array, x: Array, t, t_next, *, diffusion: Diffusion) -> Array:
    """One Euler-Maruyama step of the marginal family (1 NFE)."""
    mean, std = em_transition(model, x, t, t_next, diffusion=diffusion)
    return mean + std * jax.random.normal(key, x.shape, x.dtype)


def transition_log_prob(x_next: Array, mean: Array, std: ArrayLike) -> Array:
    """Per-sample ``log N(x_next; mean, std^2 I)`` summed over features (Flow-GRPO's policy log-prob)."""
    std = jnp.asarray(std, x_next.dtype)
    d = x_next[0].size
    z = ((x_next - mean) / std).reshape(x_next.shape[0], -1)
    return -0.5 * jnp.sum(z**2, -1) - d * jnp.log(std) - 0.5 * d * jnp.log(2 * jnp.pi)


def sample_sde(
    fn: Callable[..., Array] | PredictionModel,
    key: Array,
    x: Array,
    *,
    times: ArrayLike,
    path: AffinePath | None = None,
    prediction: str = "velocity",
    diffusion: Diffusion | None = None,
    method: str = "em",
    final_denoise: bool = False,
    return_trajectory: bool = False,
    c: Any = None,
) -> Array:
    """Simulate the marginal-preserving SDE from ``times[0]`` to ``times[-1]``.

    Args:
      fn: the network (any prediction type) or a :class:`~flowjax.samplers.solvers.PredictionModel`.
      key: PRNG key.
      x: the state at ``times[0]``, a sample of ``p_{times[0]}``.
      times: increasing grid; keep ``times[0] > 0`` when ``eps_t`` blows up at ``t = 0`` (the
        reverse SDE on the linear path) and ``times[-1] < 1`` (the score is singular at ``t = 1``).
      diffusion: ``eps(t)`` (default :func:`reverse_sde_diffusion` of ``path``).
      method: ``"em"`` (Euler-Maruyama) or ``"exp_em"`` (exponential integrator, data form).
      final_denoise: return ``x1_hat`` at the last time (one more NFE, no noise), as is customary.
      return_trajectory: return the states at every grid time, shape ``(len(times), n, ...)``.
    """
    _checks.check_float_array("x", x, min_ndim=1)
    _checks.check_choice("method", method, ("em", "exp_em"))
    model = as_model(fn, path=path, prediction=prediction, c=c)
    diffusion = diffusion or reverse_sde_diffusion(model.path)
    times = jnp.asarray(times, x.dtype)
    steps = times.shape[0] - 1
    keys = jax.random.split(key, steps)

    def body(xx, i):
        t, t1 = times[i], times[i + 1]
        if method == "em":
            nxt = em_step(model, keys[i], xx, t, t1, diffusion=diffusion)
        else:
            nxt = exp_em_step(model, xx, t, t1, diffusion=diffusion, key=keys[i])
        return nxt, nxt

    x_end, traj = jax.lax.scan(body, x, jnp.arange(steps))
    if final_denoise:
        x_end, _ = model.data_noise(x_end, times[-1])
    if return_trajectory:
        return jnp.concatenate([x[None], traj[:-1], x_end[None]], axis=0)
    return x_end


def pf_ode_log_likelihood(
    fn: Callable[..., Array] | PredictionModel,
    x1: Array,
    *,
    path: AffinePath | None = None,
    prediction: str = "velocity",
    source_log_prob: Callable[[Array], Array] = standard_normal_log_prob,
    divergence: str = "exact",
    key: Array | None = None,
    solver: str = "tsit5",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    c: Any = None,
) -> Array:
    """``log p_1(x1) = log p_0(x0) - int_0^1 div v(x_t, t) dt`` along the PF-ODE of a model of any
    prediction type (spec 3.D; :func:`flowjax.samplers.log_likelihood` underneath). For paths with
    ``alpha_0 > 0`` (VP) pass the true ``p_0`` as ``source_log_prob``."""
    model = as_model(fn, path=path, prediction=prediction, c=c)
    v = lambda x, t: model.velocity(x, t)  # noqa: E731
    return log_likelihood(v, x1, divergence=divergence, key=key, solver=solver, rtol=rtol, atol=atol,
                          source_log_prob=source_log_prob)


__all__ = [
    "Diffusion",
    "dance_grpo_diffusion",
    "em_step",
    "em_transition",
    "flow_grpo_diffusion",
    "forward_sde_coefficients",
    "pf_ode_drift",
    "pf_ode_log_likelihood",
    "reverse_sde_diffusion",
    "reverse_sde_g2",
    "sample_sde",
    "sde_drift",
    "transition_log_prob",
    "zero_diffusion",
]
