"""The standard diffusion / flow solver zoo, for any affine path and any prediction type.

"The Principles of Diffusion Models" (arXiv 2510.21890), spec section 3.E, in project notation
(``t = 0`` noise, ``t = 1`` data, ``x_t = alpha_t x1 + sigma_t x0``, ``lambda = log(alpha/sigma)``,
``h = lambda_t - lambda_s > 0`` for a step ``s -> t``). A model is wrapped once into a
:class:`PredictionModel` that yields ``v`` or ``(x1_hat, x0_hat)`` from whatever the network
predicts (:mod:`flowjax.parameterizations`); every step function then works for every path and
every prediction.

Step functions (pure; ``model`` is a :class:`PredictionModel`, ``t`` and ``t_next`` scalars):

- generic ODE solvers on ``v``: :func:`euler_step`, :func:`midpoint_step`, :func:`heun_step`
  (EDM's 2nd order), :func:`rk4_step`;
- :func:`ddim_step` (Song et al. 2010.02502), DDIM(eta) ``x_t = alpha_t x1_hat + sqrt(sigma_t^2 - c^2) x0_hat
  + c xi``, ``c = eta sigma_tilde``, ``sigma_tilde^2 = sigma_t^2 (1 - e^{-2h})`` (``eta = 1``: DDPM ancestral);
- exponential integrators (Lu et al. 2206.00927 DPM-Solver; 2211.01095 DPM-Solver++):
  noise form :func:`dpm_solver1_step`, :func:`dpm_solver2_step` (``r = 1/2``),
  :func:`dpm_solver3_step` (``r1 = 1/3, r2 = 2/3``); data form :func:`dpmpp_1_step`,
  :func:`dpmpp_2s_step`, multistep :func:`dpmpp_2m_step`, :func:`dpmpp_3m_step` (history of data
  predictions); :func:`unipc_step` (Zhao et al. 2302.04867, UniP-p predictor + UniC corrector,
  B(h) = "bh1" or "bh2", data prediction);
- :func:`exp_em_step`: exponential-integrator Euler-Maruyama for the marginal-preserving SDE family
  ``dx = [v + (eps_t^2/2) s] dt + eps_t dW`` (data form; derived here, see its docstring).

Full samplers: :func:`sample` runs any solver over a time grid (``lax.scan``; multistep warm-up
with lower orders as in the reference implementations; UniPC skips the corrector on the last
step), :func:`sample_adaptive` runs diffrax's adaptive solvers on the PF-ODE. NFE per solver:
:func:`nfe`. Theoretical global orders: :data:`ORDERS`.

On the linear path DDIM(0) = DPM-Solver++(1) = Euler (tested). Exponential integrators need finite
``lambda`` at every grid point: use grids inside ``(0, 1)`` (``t_max < 1``) and, if wanted,
``final_denoise=True`` to return ``x1_hat`` at the last time.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike

from flowjax import _checks
from flowjax.parameterizations import PREDICTIONS, from_data_noise, to_data_noise
from flowjax.paths import AffinePath, linear_path


# ------------------------------------------------------------------------------------------
# The model
# ------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class PredictionModel:
    """A network ``fn(x, t[, c=c])`` predicting ``prediction`` on ``path``, seen through every target.

    ``t`` may be a scalar (broadcast to ``(n,)`` before the call) or ``(n,)``.
    """

    fn: Callable[..., Array]
    path: AffinePath
    prediction: str = "velocity"
    c: Any = None

    def __post_init__(self):
        _checks.check_choice("prediction", self.prediction, PREDICTIONS)

    def raw(self, x: Array, t: ArrayLike) -> tuple[Array, Array]:
        t = jnp.asarray(t, x.dtype)
        tt = jnp.broadcast_to(t, (x.shape[0],)) if t.ndim == 0 else t
        out = self.fn(x, tt) if self.c is None else self.fn(x, tt, c=self.c)
        return out, tt

    def data_noise(self, x: Array, t: ArrayLike) -> tuple[Array, Array]:
        """``(x1_hat, x0_hat)`` at ``(x, t)`` (one network call)."""
        out, tt = self.raw(x, t)
        return to_data_noise(out, x, tt, path=self.path, prediction=self.prediction)

    def velocity(self, x: Array, t: ArrayLike) -> Array:
        """PF-ODE velocity ``v(x, t)`` (one network call; no conversion for velocity models)."""
        out, tt = self.raw(x, t)
        if self.prediction == "velocity":
            return out
        x1, x0 = to_data_noise(out, x, tt, path=self.path, prediction=self.prediction)
        return from_data_noise(x1, x0, x, tt, path=self.path, prediction="velocity")


def as_model(fn: Callable[..., Array] | PredictionModel, *, path: AffinePath | None = None,
             prediction: str = "velocity", c: Any = None) -> PredictionModel:
    if isinstance(fn, PredictionModel):
        return fn
    return PredictionModel(fn, path or linear_path(), prediction, c)


def _lam(path: AffinePath, t):
    return path.log_snr(jnp.asarray(t))


# ------------------------------------------------------------------------------------------
# Generic ODE steps on v
# ------------------------------------------------------------------------------------------
def euler_step(model: PredictionModel, x: Array, t, t_next) -> Array:
    """``x' = x + h v(x, t)``, ``h = t' - t`` (1 NFE)."""
    return x + (t_next - t) * model.velocity(x, t)


def midpoint_step(model: PredictionModel, x: Array, t, t_next) -> Array:
    """Explicit midpoint: ``x' = x + h v(x + (h/2) v(x, t), t + h/2)`` (2 NFE)."""
    h = t_next - t
    xm = x + 0.5 * h * model.velocity(x, t)
    return x + h * model.velocity(xm, t + 0.5 * h)


def heun_step(model: PredictionModel, x: Array, t, t_next) -> Array:
    """Heun / EDM 2nd order: ``x~ = x + h v(x,t)``, ``x' = x + (h/2)(v(x,t) + v(x~,t'))`` (2 NFE)."""
    h = t_next - t
    v0 = model.velocity(x, t)
    v1 = model.velocity(x + h * v0, t_next)
    return x + 0.5 * h * (v0 + v1)


def rk4_step(model: PredictionModel, x: Array, t, t_next) -> Array:
    """Classical 4th-order Runge-Kutta (4 NFE)."""
    h = t_next - t
    k1 = model.velocity(x, t)
    k2 = model.velocity(x + 0.5 * h * k1, t + 0.5 * h)
    k3 = model.velocity(x + 0.5 * h * k2, t + 0.5 * h)
    k4 = model.velocity(x + h * k3, t_next)
    return x + h / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)


# ------------------------------------------------------------------------------------------
# DDIM(eta)
# ------------------------------------------------------------------------------------------
def ddim_step(model: PredictionModel, x: Array, t, t_next, *, eta: float = 0.0, key: Array | None = None) -> Array:
    """DDIM(eta) from ``t`` to ``t' > t`` (Song et al. 2010.02502, eq. 12, in project time; 1 NFE).

    ``x_t' = alpha_t' x1_hat + sqrt(sigma_t'^2 - c^2) x0_hat + c xi``, ``c = eta sigma_tilde``,
    ``sigma_tilde^2 = sigma_{t|t'}^2 sigma_t'^2 / sigma_t^2``, ``sigma_{t|t'}^2 = sigma_t^2 - (alpha_t/alpha_t')^2 sigma_t'^2``
    (``= sigma_t'^2 (1 - e^{-2h})``). ``eta = 0``: deterministic DDIM = DPM-Solver++(1); ``eta = 1``:
    DDPM ancestral sampling ``N((alpha_t sigma_t'^2/(alpha_t' sigma_t^2)) x_t + (alpha_t' sigma_{t|t'}^2/sigma_t^2) x1_hat, sigma_tilde^2)``.
    ``key`` is required when ``eta > 0``.
    """
    path = model.path
    x1, x0 = model.data_noise(x, t)
    a1, s1 = path.alpha(t_next), path.sigma(t_next)
    h = _lam(path, t_next) - _lam(path, t)
    var_tilde = s1**2 * -jnp.expm1(-2.0 * h)
    c2 = eta**2 * var_tilde
    out = a1 * x1 + jnp.sqrt(jnp.maximum(s1**2 - c2, 0.0)) * x0
    if isinstance(eta, (int, float)) and eta == 0.0:
        return out
    if key is None:
        raise ValueError("ddim_step with eta > 0 needs a PRNG `key`.")
    return out + jnp.sqrt(c2) * jax.random.normal(key, x.shape, x.dtype)


# ------------------------------------------------------------------------------------------
# DPM-Solver (noise form) and DPM-Solver++ (data form)
# ------------------------------------------------------------------------------------------
def _mid_time(path: AffinePath, t, t_next, r: float):
    lam_s, lam_t = _lam(path, t), _lam(path, t_next)
    return path.time_from_log_snr(lam_s + r * (lam_t - lam_s))


def dpm_solver1_step(model: PredictionModel, x: Array, t, t_next) -> Array:
    """DPM-Solver-1 (2206.00927, eq. 3.7): ``x_t' = (alpha_t'/alpha_t) x - sigma_t' (e^h - 1) x0_hat`` (1 NFE)."""
    p = model.path
    h = _lam(p, t_next) - _lam(p, t)
    _, e = model.data_noise(x, t)
    return p.alpha(t_next) / p.alpha(t) * x - p.sigma(t_next) * jnp.expm1(h) * e


def dpm_solver2_step(model: PredictionModel, x: Array, t, t_next) -> Array:
    """DPM-Solver-2, singlestep with ``r = 1/2`` (2206.00927, Alg. 1; spec 3.E) (2 NFE)."""
    p = model.path
    h = _lam(p, t_next) - _lam(p, t)
    m = _mid_time(p, t, t_next, 0.5)
    _, e = model.data_noise(x, t)
    u = p.alpha(m) / p.alpha(t) * x - p.sigma(m) * jnp.expm1(0.5 * h) * e
    _, em = model.data_noise(u, m)
    return p.alpha(t_next) / p.alpha(t) * x - p.sigma(t_next) * jnp.expm1(h) * em


def dpm_solver3_step(model: PredictionModel, x: Array, t, t_next) -> Array:
    """DPM-Solver-3, singlestep with ``r1 = 1/3, r2 = 2/3`` (2206.00927, Alg. 2) (3 NFE)."""
    p = model.path
    r1, r2 = 1.0 / 3.0, 2.0 / 3.0
    h = _lam(p, t_next) - _lam(p, t)
    m1, m2 = _mid_time(p, t, t_next, r1), _mid_time(p, t, t_next, r2)
    a0 = p.alpha(t)
    _, e = model.data_noise(x, t)
    u1 = p.alpha(m1) / a0 * x - p.sigma(m1) * jnp.expm1(r1 * h) * e
    _, e1 = model.data_noise(u1, m1)
    d1 = e1 - e
    u2 = (p.alpha(m2) / a0 * x - p.sigma(m2) * jnp.expm1(r2 * h) * e
          - p.sigma(m2) * (r2 / r1) * (jnp.expm1(r2 * h) / (r2 * h) - 1.0) * d1)
    _, e2 = model.data_noise(u2, m2)
    d2 = e2 - e
    return (p.alpha(t_next) / a0 * x - p.sigma(t_next) * jnp.expm1(h) * e
            - p.sigma(t_next) / r2 * (jnp.expm1(h) / h - 1.0) * d2)


def dpmpp_1_step(model: PredictionModel, x: Array, t, t_next) -> Array:
    """DPM-Solver++(1) = DDIM (2211.01095): ``x_t' = (sigma_t'/sigma_t) x + alpha_t' (1 - e^{-h}) x1_hat`` (1 NFE)."""
    p = model.path
    h = _lam(p, t_next) - _lam(p, t)
    d, _ = model.data_noise(x, t)
    return p.sigma(t_next) / p.sigma(t) * x - p.alpha(t_next) * jnp.expm1(-h) * d


def dpmpp_2s_step(model: PredictionModel, x: Array, t, t_next, *, r: float = 0.5) -> Array:
    """DPM-Solver++(2S) (2211.01095, Alg. 1) with intermediate ``lambda_s + r h`` (2 NFE)."""
    return _dpmpp_2s(model, x, t, t_next, r)[0]


def _dpmpp_2s(model: PredictionModel, x: Array, t, t_next, r: float = 0.5) -> tuple[Array, Array]:
    p = model.path
    h = _lam(p, t_next) - _lam(p, t)
    m = _mid_time(p, t, t_next, r)
    d, _ = model.data_noise(x, t)
    u = p.sigma(m) / p.sigma(t) * x - p.alpha(m) * jnp.expm1(-r * h) * d
    dm, _ = model.data_noise(u, m)
    dd = (1.0 - 0.5 / r) * d + (0.5 / r) * dm
    return p.sigma(t_next) / p.sigma(t) * x - p.alpha(t_next) * jnp.expm1(-h) * dd, d


History = tuple[tuple[Array, ...], tuple[Array, ...]]  # (data predictions, lambdas), oldest first


def dpmpp_2m_step(model: PredictionModel, x: Array, t, t_next, history: History = ((), ())) -> tuple[Array, History]:
    """DPM-Solver++(2M) (2211.01095, Alg. 2; 1 NFE). ``history`` holds the previous data prediction
    and its ``lambda``; empty on the first step (then the step is DPM-Solver++(1)).

    ``r = h_{i-1}/h_i``, ``D = (1 + 1/(2r)) D_i - (1/(2r)) D_{i-1}``, ``x_{i+1} = (sigma_{i+1}/sigma_i) x_i
    + alpha_{i+1}(1 - e^{-h_i}) D``. Returns ``(x_next, new_history)``.
    """
    p = model.path
    lam_s, lam_t = _lam(p, t), _lam(p, t_next)
    h = lam_t - lam_s
    d, _ = model.data_noise(x, t)
    ds, ls = history
    if len(ds) >= 1:
        r = (lam_s - ls[-1]) / h
        dd = d + 0.5 / r * (d - ds[-1])
    else:
        dd = d
    x_next = p.sigma(t_next) / p.sigma(t) * x - p.alpha(t_next) * jnp.expm1(-h) * dd
    return x_next, ((d,), (lam_s,))


def dpmpp_3m_step(model: PredictionModel, x: Array, t, t_next, history: History = ((), ())) -> tuple[Array, History]:
    """DPM-Solver++(3M) (2211.01095; the multistep third-order update of the reference code; 1 NFE).

    Taylor-expand the data prediction in ``u = lambda - lambda_s``, ``D(u) = D_0 + D' u + D'' u^2/2``, and
    integrate the variation-of-constants formula exactly (derived here):
    ``x_t = (sigma_t/sigma_s) x - alpha_t phi1 D_0 + alpha_t phi2 (h D') - alpha_t phi3 (h^2 D'')`` with
    ``phi1 = e^{-h} - 1``, ``phi2 = phi1/h + 1``, ``phi3 = phi2/h - 1/2``. With ``D1_0 = (D_0 - D_-1)/r0``,
    ``D1_1 = (D_-1 - D_-2)/r1`` (``r_k = h_k/h``): ``h D' ~ D1_0 + r0/(r0+r1) (D1_0 - D1_1)`` and
    ``h^2 D'' ~ 2 (D1_0 - D1_1)/(r0+r1)``. (The factor 2 is ours from this derivation; with it the
    measured order is 3, tested.) Falls back to 2M / 1 while the history is shorter (warm-up).
    """
    p = model.path
    ds, ls = history
    if len(ds) < 2:
        x_next, (d_new, l_new) = dpmpp_2m_step(model, x, t, t_next, history)
        return x_next, (tuple(ds) + d_new, tuple(ls) + l_new)
    lam_s, lam_t = _lam(p, t), _lam(p, t_next)
    h = lam_t - lam_s
    d0, _ = model.data_noise(x, t)
    d_1, d_2 = ds[-1], ds[-2]
    h0, h1 = lam_s - ls[-1], ls[-1] - ls[-2]
    r0, r1 = h0 / h, h1 / h
    d1_0 = (d0 - d_1) / r0
    d1_1 = (d_1 - d_2) / r1
    d1 = d1_0 + r0 / (r0 + r1) * (d1_0 - d1_1)  # ~ h D'
    d2 = 2.0 * (d1_0 - d1_1) / (r0 + r1)  # ~ h^2 D''

    phi1 = jnp.expm1(-h)
    phi2 = phi1 / h + 1.0
    phi3 = phi2 / h - 0.5
    a1 = p.alpha(t_next)
    x_next = p.sigma(t_next) / p.sigma(t) * x - a1 * phi1 * d0 + a1 * phi2 * d1 - a1 * phi3 * d2
    return x_next, ((d_1, d0), (ls[-1], lam_s))


# ------------------------------------------------------------------------------------------
# UniPC
# ------------------------------------------------------------------------------------------
def _unipc_coefficients(h, rks, order: int, variant: str):
    """UniPC's ``B(h)`` and the predictor / corrector weights (2302.04867, Alg. 1-2, data prediction)."""
    hh = -h
    h_phi_1 = jnp.expm1(hh)
    h_phi_k = h_phi_1 / hh - 1.0
    b_h = hh if variant == "bh1" else jnp.expm1(hh)
    fact = 1.0
    rows, b = [], []
    rks_all = list(rks) + [jnp.ones_like(h)]
    for i in range(1, order + 1):
        rows.append(jnp.stack([r ** (i - 1) for r in rks_all]))
        b.append(h_phi_k * fact / b_h)
        fact *= i + 1
        h_phi_k = h_phi_k / hh - 1.0 / fact
    big_r, b = jnp.stack(rows), jnp.stack(b)
    if order == 1:
        rho_p = None
        rho_c = jnp.array([0.5], h.dtype)
    else:
        rho_p = jnp.array([0.5], h.dtype) if order == 2 else jnp.linalg.solve(big_r[:-1, :-1], b[:-1])
        rho_c = jnp.linalg.solve(big_r, b)
    return h_phi_1, b_h, rho_p, rho_c


def unipc_step(
    model: PredictionModel,
    x: Array,
    t,
    t_next,
    history: History,
    *,
    order: int = 2,
    variant: str = "bh2",
    corrector: bool = True,
) -> tuple[Array, History]:
    """One UniPC step (Zhao et al. 2302.04867): UniP-``order`` predictor, then the UniC corrector.

    ``history`` holds the data predictions at the last ``order`` grid points **including the current
    one** (the corrector's evaluation at the previous step, made at the uncorrected point, is reused:
    that is what makes UniC free). The step calls the model once, at the predicted ``x_t'``, unless
    ``corrector=False`` (the last step), when it calls it zero times. Effective order: ``order + 1``
    with the corrector (UniPC's claim), ``order`` without. The current order is
    ``min(order, len(history))`` (warm-up). Returns ``(x_next, new_history)``.
    """
    p = model.path
    ds, ls = history
    k = min(order, len(ds))
    ds, ls = tuple(ds)[-k:], tuple(ls)[-k:]
    m0, lam_s = ds[-1], ls[-1]
    lam_t = _lam(p, t_next)
    h = lam_t - lam_s
    rks = [(ls[-1 - i] - lam_s) / h for i in range(1, k)]
    d1s = [(ds[-1 - i] - m0) / rks[i - 1] for i in range(1, k)]
    h_phi_1, b_h, rho_p, rho_c = _unipc_coefficients(h, rks, k, variant)
    a1 = p.alpha(t_next)
    x_base = p.sigma(t_next) / p.sigma(t) * x - a1 * h_phi_1 * m0
    pred_res = sum((rho_p[i] * d1s[i] for i in range(k - 1)), jnp.zeros_like(x)) if k > 1 else jnp.zeros_like(x)
    x_pred = x_base - a1 * b_h * pred_res
    if not corrector:
        return x_pred, (ds, ls)
    m_t, _ = model.data_noise(x_pred, t_next)
    corr = sum((rho_c[i] * d1s[i] for i in range(k - 1)), jnp.zeros_like(x))
    x_corr = x_base - a1 * b_h * (corr + rho_c[-1] * (m_t - m0))
    keep = max(order, 1)
    new_ds, new_ls = (ds + (m_t,))[-keep:], (ls + (lam_t,))[-keep:]
    return x_corr, (new_ds, new_ls)


# ------------------------------------------------------------------------------------------
# Exponential-integrator Euler-Maruyama for the marginal family
# ------------------------------------------------------------------------------------------
def exp_em_step(
    model: PredictionModel,
    x: Array,
    t,
    t_next,
    *,
    diffusion: Callable[[Array], Array] | None = None,
    eta: float | None = None,
    key: Array | None = None,
) -> Array:
    """Exponential-integrator Euler-Maruyama (data form) for ``dx = [v + (eps^2/2) s] dt + eps dW`` (1 NFE).

    Derived here (spec 3.D/3.E): write ``eps_t^2 = 2 eta_t^2 sigma_t^2 lambda'_t`` (``eta = 1`` is the
    reverse SDE). With ``s = -(x - alpha x1_hat)/sigma^2`` the drift is linear in ``x`` plus a term in
    ``x1_hat``; freezing ``x1_hat`` and ``eta`` over the step and integrating exactly:

        x_t' = (sigma_t'/sigma_t) e^{-eta^2 h} x + alpha_t' (1 - e^{-(1+eta^2) h}) x1_hat
               + sigma_t' sqrt(1 - e^{-2 eta^2 h}) xi.

    ``eta = 0``: DPM-Solver++(1) = DDIM(0); ``eta = 1``: DDPM ancestral = DDIM(1) (SDE-DPM-Solver++(1),
    2211.01095). Give ``eta`` (constant; exact in the step's linear part) or ``diffusion`` (``eps(t)``;
    ``eta`` is then evaluated at the step's lambda-midpoint, a first-order choice of ours).
    """
    p = model.path
    lam_s, lam_t = _lam(p, t), _lam(p, t_next)
    h = lam_t - lam_s
    if eta is None:
        if diffusion is None:
            raise ValueError("exp_em_step needs `eta` or `diffusion`.")
        m = p.time_from_log_snr(0.5 * (lam_s + lam_t))
        eta2 = diffusion(m) ** 2 / (2.0 * p.sigma(m) ** 2 * p.d_log_snr(m))
    else:
        eta2 = jnp.asarray(eta, x.dtype) ** 2
    d, _ = model.data_noise(x, t)
    out = p.sigma(t_next) / p.sigma(t) * jnp.exp(-eta2 * h) * x - p.alpha(t_next) * jnp.expm1(-(1.0 + eta2) * h) * d
    if eta is not None and isinstance(eta, (int, float)) and eta == 0.0:
        return out
    if key is None:
        raise ValueError("exp_em_step with noise needs a PRNG `key`.")
    std = p.sigma(t_next) * jnp.sqrt(-jnp.expm1(-2.0 * eta2 * h))
    return out + std * jax.random.normal(key, x.shape, x.dtype)


# ------------------------------------------------------------------------------------------
# Full samplers
# ------------------------------------------------------------------------------------------
#: Theoretical global order of each deterministic solver as run by :func:`sample` (``eta = 0``).
#: Multistep methods warm up with lower orders, as the reference implementations do; a first step
#: of order ``q`` (local error ``O(h^{q+1})``) caps the global order at ``q + 1``. Hence DPM-Solver++(3M)
#: is globally 2nd order with the standard warm-up and 3rd order with ``warmup="singlestep"`` (its
#: first step by DPM-Solver++(2S), one extra NFE); UniPC-p is order ``p + 1`` (predictor ``p`` plus the
#: corrector), capped at 3 by the standard warm-up (its first step is UniPC-1, order 2). Derived.
ORDERS = {
    "euler": 1, "midpoint": 2, "heun": 2, "rk4": 4, "ddim": 1,
    "dpm_solver1": 1, "dpm_solver2": 2, "dpm_solver3": 3,
    "dpmpp_1": 1, "dpmpp_2s": 2, "dpmpp_2m": 2, "dpmpp_3m": 2, "dpmpp_3m_singlestep": 3,
    "unipc1": 2, "unipc2": 3, "unipc3": 3, "exp_em": 1,
}
_SINGLESTEP = {
    "euler": (euler_step, 1), "midpoint": (midpoint_step, 2), "heun": (heun_step, 2), "rk4": (rk4_step, 4),
    "dpm_solver1": (dpm_solver1_step, 1), "dpm_solver2": (dpm_solver2_step, 2), "dpm_solver3": (dpm_solver3_step, 3),
    "dpmpp_1": (dpmpp_1_step, 1), "dpmpp_2s": (dpmpp_2s_step, 2),
}
_STOCHASTIC = ("ddim", "exp_em")
_MULTISTEP = {"dpmpp_2m": (dpmpp_2m_step, 1), "dpmpp_3m": (dpmpp_3m_step, 2)}
SOLVERS: tuple[str, ...] = tuple(_SINGLESTEP) + _STOCHASTIC + tuple(_MULTISTEP) + ("unipc",)
ADAPTIVE = {"tsit5": diffrax.Tsit5, "dopri5": diffrax.Dopri5, "dopri8": diffrax.Dopri8}


def nfe(solver: str, steps: int, *, heun_final_euler: bool = False, warmup: str = "lower_order") -> int:
    """Network evaluations for ``steps`` steps of ``solver``."""
    _checks.check_choice("solver", solver, SOLVERS)
    if solver == "dpmpp_3m" and warmup == "singlestep":
        return steps + 1
    if solver in _SINGLESTEP:
        per = _SINGLESTEP[solver][1]
        return per * steps - (1 if (solver == "heun" and heun_final_euler) else 0)
    return steps  # ddim, exp_em, multistep, unipc (initial call + one per corrected step)


def _validate_grid(times) -> None:
    if not isinstance(times, jax.core.Tracer):
        grid = np.asarray(times)
        if grid.ndim != 1 or grid.size < 2:
            raise ValueError(f"`times` must be a 1D grid of at least 2 times, got shape {grid.shape}.")
        if not np.all(np.diff(grid) > 0):
            raise ValueError("`times` must be strictly increasing (t = 0 noise -> t = 1 data).")
        _checks.check_time("times", grid)


@dataclasses.dataclass(frozen=True)
class _StepOptions:
    solver: str
    eta: Any
    diffusion: Any
    order: int
    variant: str
    heun_final_euler: bool
    warmup: str
    stochastic: bool


def _step(model: PredictionModel, o: _StepOptions, x, t, t1, key, hist, *, first: bool, final: bool):
    solver = o.solver
    if solver in _SINGLESTEP:
        if solver == "heun" and final and o.heun_final_euler:
            return euler_step(model, x, t, t1), hist
        return _SINGLESTEP[solver][0](model, x, t, t1), hist
    if solver == "ddim":
        return ddim_step(model, x, t, t1, eta=o.eta, key=key if o.stochastic else None), hist
    if solver == "exp_em":
        return exp_em_step(model, x, t, t1, eta=None if o.diffusion is not None else o.eta,
                           diffusion=o.diffusion, key=key if o.stochastic else None), hist
    if solver in _MULTISTEP:
        if solver == "dpmpp_3m" and o.warmup == "singlestep" and first and not final:
            x_next, d0 = _dpmpp_2s(model, x, t, t1)
            return x_next, ((d0,), (_lam(model.path, t),))
        return _MULTISTEP[solver][0](model, x, t, t1, hist)
    return unipc_step(model, x, t, t1, hist, order=o.order, variant=o.variant, corrector=not final)


_jit_step = jax.jit(_step, static_argnames=("model", "o", "first", "final"))


def sample(
    fn: Callable[..., Array] | PredictionModel,
    x: Array,
    *,
    times: ArrayLike,
    solver: str = "dpmpp_2m",
    path: AffinePath | None = None,
    prediction: str = "velocity",
    key: Array | None = None,
    eta: float = 0.0,
    diffusion: Callable[[Array], Array] | None = None,
    order: int = 2,
    variant: str = "bh2",
    heun_final_euler: bool = False,
    warmup: str = "lower_order",
    final_denoise: bool = False,
    scan: bool = True,
    c: Any = None,
) -> Array:
    """Integrate from ``times[0]`` to ``times[-1]`` with ``solver`` (any path, any prediction).

    Args:
      fn: the network ``fn(x, t[, c=c])`` (``t`` of shape ``(n,)``) predicting ``prediction`` on
        ``path``, or a :class:`PredictionModel`.
      x: the state at ``times[0]`` (``(n, ...)``), e.g. noise at ``t = 0`` or an exact marginal sample.
      times: increasing grid (see :mod:`flowjax.schedules`), ``len(times) - 1`` steps.
      solver: one of :data:`SOLVERS`.
      key: PRNG key for stochastic steps (``ddim`` with ``eta > 0``, ``exp_em`` with noise).
      eta: DDIM's ``eta``, or the ``exp_em`` noise scale ``eps = eta g`` when ``diffusion`` is None.
      diffusion: ``eps(t)`` for ``exp_em`` (overrides ``eta``).
      order, variant: UniPC's predictor order (1-3) and ``"bh1" | "bh2"``.
      heun_final_euler: EDM's plain Euler on the last Heun step (for ``t = 1`` singular models).
      warmup: ``"lower_order"`` (reference implementations) or ``"singlestep"`` (DPM-Solver++(3M)
        only: the first step by DPM-Solver++(2S), which keeps global order 3; one more NFE).
      final_denoise: return ``x1_hat(x, times[-1])`` (one more NFE) instead of the state.
      scan: ``True``: one ``lax.scan`` (use under ``jit``); ``False``: a Python loop over a step
        compiled once per (model, options), so grids of different lengths do not recompile
        (convergence studies; the model must be hashable, e.g. a fixed function object).

    Returns:
      the state at ``times[-1]`` (or ``x1_hat`` there).
    """
    _checks.check_float_array("x", x, min_ndim=1)
    _checks.check_choice("solver", solver, SOLVERS)
    _validate_grid(times)
    if solver == "unipc" and order not in (1, 2, 3):
        raise ValueError(f"UniPC `order` must be 1, 2 or 3, got {order}.")
    _checks.check_choice("variant", variant, ("bh1", "bh2"))
    _checks.check_choice("warmup", warmup, ("lower_order", "singlestep"))
    model = as_model(fn, path=path, prediction=prediction, c=c)
    times = jnp.asarray(times, x.dtype)
    steps = times.shape[0] - 1
    stochastic = solver in _STOCHASTIC and (diffusion is not None or eta != 0.0)
    if stochastic and key is None:
        raise ValueError(f"solver {solver!r} with noise needs a PRNG `key`.")
    keys = jax.random.split(key, steps) if stochastic else jnp.zeros((steps,))

    opts = _StepOptions(solver, float(eta) if isinstance(eta, (int, float)) else eta, diffusion, order, variant,
                        heun_final_euler, warmup, stochastic)
    if solver == "unipc":
        d0, _ = model.data_noise(x, times[0])
        hist = ((d0,), (_lam(model.path, times[0]),))
        warm = order - 1
    elif solver in _MULTISTEP:
        hist, warm = ((), ()), _MULTISTEP[solver][1]
    else:
        hist, warm = None, 0
    if not scan:
        # Python loop over one compiled step (cached across calls for the same model and options):
        # grids of any length reuse the compilation.
        for i in range(steps):
            x, hist = _jit_step(model, opts, x, times[i], times[i + 1], keys[i], hist,
                                first=i == 0, final=i == steps - 1)
    else:
        # warm-up steps (history still growing) unrolled, the rest in one scan, the last step peeled.
        i = 0
        while i < min(warm, steps - 1):
            x, hist = _step(model, opts, x, times[i], times[i + 1], keys[i], hist, first=i == 0, final=False)
            i += 1
        if steps - 1 - i > 0:
            def body(carry, j):
                xx, hh = carry
                return _step(model, opts, xx, times[j], times[j + 1], keys[j], hh, first=False, final=False), None

            (x, hist), _ = jax.lax.scan(body, (x, hist), jnp.arange(i, steps - 1))
        x, hist = _step(model, opts, x, times[steps - 1], times[steps], keys[steps - 1], hist,
                        first=steps == 1, final=True)
    if final_denoise:
        x, _ = model.data_noise(x, times[-1])
    return x


def sample_adaptive(
    fn: Callable[..., Array] | PredictionModel,
    x: Array,
    *,
    t0: float,
    t1: float,
    solver: str | diffrax.AbstractSolver = "tsit5",
    path: AffinePath | None = None,
    prediction: str = "velocity",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    c: Any = None,
    max_steps: int = 16_384,
) -> tuple[Array, Array]:
    """Adaptive diffrax solve of the PF-ODE ``dx/dt = v(x, t)``; returns ``(x_t1, nfe)``.

    ``nfe`` counts the field evaluations reported by diffrax (``num_steps`` accepted + rejected
    times the stages, first-same-as-last saving included as diffrax does).
    """
    _checks.check_float_array("x", x, min_ndim=1)
    model = as_model(fn, path=path, prediction=prediction, c=c)
    solver_obj = ADAPTIVE[solver]() if isinstance(solver, str) else solver
    def field(t, y, args):
        return model.velocity(y, t)

    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(field), solver_obj, t0=t0, t1=t1, dt0=None, y0=x,
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol), max_steps=max_steps,
    )
    stages = {"Tsit5": 6, "Dopri5": 6, "Dopri8": 13}.get(type(solver_obj).__name__, 1)
    calls = (sol.stats["num_steps"] + sol.stats["num_rejected_steps"]) * stages + 1
    return sol.ys[-1], calls


__all__ = [
    "ADAPTIVE",
    "ORDERS",
    "PredictionModel",
    "SOLVERS",
    "as_model",
    "ddim_step",
    "dpm_solver1_step",
    "dpm_solver2_step",
    "dpm_solver3_step",
    "dpmpp_1_step",
    "dpmpp_2m_step",
    "dpmpp_2s_step",
    "dpmpp_3m_step",
    "euler_step",
    "exp_em_step",
    "heun_step",
    "midpoint_step",
    "nfe",
    "rk4_step",
    "sample",
    "sample_adaptive",
    "unipc_step",
]
