"""Affine probability paths and conversions between parameterisations.

Project convention (NOTATION.md): ``t = 0`` is the source (noise), ``t = 1`` is the data, and an
affine path is

    x_t = alpha(t) * x1 + sigma(t) * x0,   alpha(0) = sigma(1) = 0,  alpha(1) = sigma(0) = 1,

with conditional velocity ``dx_t = alpha'(t) x1 + sigma'(t) x0``. A path is a frozen record of pure
functions (optax-style); build one with :func:`linear_path`, :func:`cosine_path`,
:func:`vp_path` or :func:`polynomial_path`.

A network may predict the velocity ``v``, the data ``x1``, the noise ``x0`` (epsilon) or the score.
For a Gaussian source the four are affine functions of each other at fixed ``(x_t, t)``:

    [x_t]   [alpha   sigma ] [x1]
    [ v ] = [alpha'  sigma'] [x0],      score = -E[x0 | x_t] / sigma.

Example:
    >>> import jax, jax.numpy as jnp
    >>> path = linear_path()
    >>> x0, x1 = jnp.zeros((4, 2)), jnp.ones((4, 2))
    >>> xt, dxt = path.sample(x0, x1, jnp.full((4,), 0.25))
    >>> float(xt[0, 0]), float(dxt[0, 0])
    (0.25, 1.0)
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Literal

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike

Prediction = Literal["velocity", "data", "noise", "score"]
PREDICTIONS: tuple[str, ...] = ("velocity", "data", "noise", "score")

ScalarFn = Callable[[Array], Array]


def broadcast_time(t: ArrayLike, x: Array) -> Array:
    """Reshape a scalar or per-sample time of shape ``(batch,)`` to broadcast against ``x``."""
    t = jnp.asarray(t, dtype=x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else None)
    if t.ndim == 0:
        return t
    if t.ndim != 1 or t.shape[0] != x.shape[0]:
        raise ValueError(
            f"time must be a scalar or have shape ({x.shape[0]},) to match x of shape {x.shape}, got {t.shape}."
        )
    return t.reshape((-1,) + (1,) * (x.ndim - 1))


@dataclasses.dataclass(frozen=True)
class AffinePath:
    """An affine probability path ``x_t = alpha(t) x1 + sigma(t) x0`` (project time, t=1 data).

    Attributes:
      name: a short identifier (``"linear"``, ``"cosine"``, ...).
      alpha, sigma: the schedule, functions of a time array (elementwise).
      d_alpha, d_sigma: their time derivatives.
      inv_log_snr: optional closed-form inverse of :meth:`log_snr`, ``lambda -> t`` (``None``: the
        inverse is found by bisection, see :meth:`time_from_log_snr`; lambda must be increasing).
    """

    name: str
    alpha: ScalarFn
    sigma: ScalarFn
    d_alpha: ScalarFn
    d_sigma: ScalarFn
    inv_log_snr: ScalarFn | None = None

    # -- sampling --------------------------------------------------------------------------
    def sample(self, x0: Array, x1: Array, t: ArrayLike) -> tuple[Array, Array]:
        """Return ``(x_t, dx_t)``: the point on the path and the conditional velocity target."""
        tb = broadcast_time(t, x1)
        xt = self.alpha(tb) * x1 + self.sigma(tb) * x0
        dxt = self.d_alpha(tb) * x1 + self.d_sigma(tb) * x0
        return xt, dxt

    def log_snr(self, t: ArrayLike) -> Array:
        """Half log signal-to-noise ratio ``lambda_t = log(alpha_t / sigma_t)``."""
        t = jnp.asarray(t)
        return jnp.log(self.alpha(t)) - jnp.log(self.sigma(t))

    def d_log_snr(self, t: ArrayLike) -> Array:
        """``d lambda / dt = alpha'/alpha - sigma'/sigma``."""
        t = jnp.asarray(t)
        return self.d_alpha(t) / self.alpha(t) - self.d_sigma(t) / self.sigma(t)

    def time_from_log_snr(self, lam: ArrayLike) -> Array:
        """Inverse of :meth:`log_snr`: the time ``t`` with ``lambda_t = lam`` (elementwise).

        Uses ``inv_log_snr`` when the path has one, otherwise 80 bisection steps on ``[0, 1]``
        (exact to the float resolution; needs ``lambda_t`` increasing, which holds for every path
        here). Values of ``lam`` outside ``(lambda_0, lambda_1)`` clip to the end points.
        """
        lam = jnp.asarray(lam)
        if not jnp.issubdtype(lam.dtype, jnp.floating):
            lam = lam.astype(float)
        if self.inv_log_snr is not None:
            return self.inv_log_snr(lam)

        def body(_, bounds):
            lo, hi = bounds
            mid = 0.5 * (lo + hi)
            below = self.log_snr(mid) < lam
            return jnp.where(below, mid, lo), jnp.where(below, hi, mid)

        lo, hi = jax.lax.fori_loop(0, 80, body, (jnp.zeros_like(lam), jnp.ones_like(lam)))
        return 0.5 * (lo + hi)

    # -- conversions between predictions --------------------------------------------------
    def to_data_and_noise(self, pred: Array, x_t: Array, t: ArrayLike, prediction: Prediction) -> tuple[Array, Array]:
        """Map a prediction of kind ``prediction`` at ``(x_t, t)`` to ``(x1_hat, x0_hat)``."""
        tb = broadcast_time(t, x_t)
        a, s, da, ds = self.alpha(tb), self.sigma(tb), self.d_alpha(tb), self.d_sigma(tb)
        if prediction == "velocity":
            det = a * ds - s * da
            x1 = (ds * x_t - s * pred) / det
            x0 = (a * pred - da * x_t) / det
        elif prediction == "data":
            x1 = pred
            x0 = (x_t - a * pred) / s
        elif prediction == "noise":
            x0 = pred
            x1 = (x_t - s * pred) / a
        elif prediction == "score":
            x0 = -s * pred
            x1 = (x_t - s * x0) / a
        else:
            raise ValueError(f"`prediction` must be one of {PREDICTIONS}, got {prediction!r}.")
        return x1, x0

    def convert(self, pred: Array, x_t: Array, t: ArrayLike, *, src: Prediction, dst: Prediction) -> Array:
        """Convert a prediction at ``(x_t, t)`` from parameterisation ``src`` to ``dst``.

        Conversions divide by ``alpha``, ``sigma`` or ``alpha sigma' - sigma alpha'``; at the path's
        end points some of them are singular (e.g. data -> velocity at ``t = 1``), as in the paper.
        """
        if src == dst:
            return pred
        x1, x0 = self.to_data_and_noise(pred, x_t, t, src)
        tb = broadcast_time(t, x_t)
        if dst == "data":
            return x1
        if dst == "noise":
            return x0
        if dst == "velocity":
            return self.d_alpha(tb) * x1 + self.d_sigma(tb) * x0
        if dst == "score":
            return -x0 / self.sigma(tb)
        raise ValueError(f"`dst` must be one of {PREDICTIONS}, got {dst!r}.")

    def velocity_from(self, pred: Array, x_t: Array, t: ArrayLike, prediction: Prediction) -> Array:
        """Shorthand for ``convert(pred, x_t, t, src=prediction, dst="velocity")``."""
        return self.convert(pred, x_t, t, src=prediction, dst="velocity")


def linear_path() -> AffinePath:
    """Rectified flow / CondOT path: ``alpha_t = t``, ``sigma_t = 1 - t`` (Lipman et al. 2210.02747)."""
    return AffinePath(
        name="linear",
        alpha=lambda t: t,
        sigma=lambda t: 1.0 - t,
        d_alpha=lambda t: jnp.ones_like(t),
        d_sigma=lambda t: -jnp.ones_like(t),
        inv_log_snr=jax.nn.sigmoid,
    )


def cosine_path() -> AffinePath:
    """Trigonometric (variance-preserving) path: ``alpha_t = sin(pi t / 2)``, ``sigma_t = cos(pi t / 2)``."""
    half_pi = jnp.pi / 2
    return AffinePath(
        name="cosine",
        alpha=lambda t: jnp.sin(half_pi * t),
        sigma=lambda t: jnp.cos(half_pi * t),
        d_alpha=lambda t: half_pi * jnp.cos(half_pi * t),
        d_sigma=lambda t: -half_pi * jnp.sin(half_pi * t),
        inv_log_snr=lambda lam: jnp.arctan(jnp.exp(lam)) / half_pi,
    )


def vp_path(beta_min: float = 0.1, beta_max: float = 20.0) -> AffinePath:
    """Variance-preserving path of score SDEs (Song et al. 2011.13456) in project time.

    With diffusion time ``tau = 1 - t`` and ``beta(tau) = beta_min + tau (beta_max - beta_min)``:
    ``alpha_t = exp(-1/2 int_0^tau beta)``, ``sigma_t = sqrt(1 - alpha_t^2)``. Note ``alpha_0`` is
    ``exp(-(beta_min + beta_max)/4)`` (about 0.0066 for the defaults), not exactly 0: the VP path
    reaches pure noise only in the limit, as in the paper.
    """
    if not (0.0 <= beta_min < beta_max):
        raise ValueError(f"need 0 <= beta_min < beta_max, got beta_min={beta_min}, beta_max={beta_max}.")
    db = beta_max - beta_min

    def log_alpha(t):
        tau = 1.0 - t
        return -0.5 * (beta_min * tau + 0.5 * db * tau**2)

    def alpha(t):
        return jnp.exp(log_alpha(t))

    def sigma(t):
        return jnp.sqrt(-jnp.expm1(2.0 * log_alpha(t)))

    def d_alpha(t):
        beta = beta_min + (1.0 - t) * db
        return 0.5 * beta * alpha(t)

    def d_sigma(t):
        # sigma sigma' = -alpha alpha'; sigma' diverges like (1 - t)^(-1/2) at the data end, where
        # it only ever multiplies terms that vanish with sigma. Clamp to keep it finite at t = 1.
        a = alpha(t)
        return -a * d_alpha(t) / jnp.maximum(sigma(t), jnp.finfo(jnp.result_type(t, float)).tiny ** 0.5)

    def inv_log_snr(lam):
        # alpha^2 = sigmoid(2 lam), and log alpha = -(beta_min tau + db tau^2 / 2) / 2 is a quadratic
        # in tau = 1 - t; take its non-negative root (tau = 0 <=> alpha = 1).
        log_alpha = 0.5 * jax.nn.log_sigmoid(2.0 * lam)
        if db == 0.0:
            tau = -2.0 * log_alpha / beta_min
        else:
            tau = (-beta_min + jnp.sqrt(beta_min**2 - 4.0 * db * log_alpha)) / db
        return jnp.clip(1.0 - tau, 0.0, 1.0)

    return AffinePath(name="vp", alpha=alpha, sigma=sigma, d_alpha=d_alpha, d_sigma=d_sigma, inv_log_snr=inv_log_snr)


def polynomial_path(n: float = 2.0) -> AffinePath:
    """Polynomial convex path ``alpha_t = t^n``, ``sigma_t = 1 - t^n`` (flow_matching's polynomial scheduler)."""
    if n <= 0:
        raise ValueError(f"`n` must be positive, got {n}.")
    return AffinePath(
        name=f"polynomial{n:g}",
        alpha=lambda t: t**n,
        sigma=lambda t: 1.0 - t**n,
        d_alpha=lambda t: n * t ** (n - 1),
        d_sigma=lambda t: -n * t ** (n - 1),
        inv_log_snr=lambda lam: jax.nn.sigmoid(lam) ** (1.0 / n),
    )


def path_by_name(name: str, **kwargs) -> AffinePath:
    """Build a path from a config string (configs may name paths; the library takes values)."""
    factories = {"linear": linear_path, "cosine": cosine_path, "vp": vp_path, "polynomial": polynomial_path}
    if name not in factories:
        raise ValueError(f"unknown path {name!r}; choose one of {tuple(factories)}.")
    return factories[name](**kwargs)


__all__ = [
    "AffinePath",
    "PREDICTIONS",
    "Prediction",
    "broadcast_time",
    "cosine_path",
    "linear_path",
    "path_by_name",
    "polynomial_path",
    "vp_path",
]
