"""Analytic oracle: the exact flow from N(0, I) to a Gaussian mixture along any affine path.

For a standard Gaussian source and data ``p1 = sum_k w_k N(mu_k, diag(s_k^2))``, every marginal of an
affine path ``x_t = alpha_t x1 + sigma_t x0`` is again a mixture,

    p_t(x) = sum_k w_k N(x; alpha_t mu_k, diag(alpha_t^2 s_k^2 + sigma_t^2)),

and the posterior means are closed form. With ``c_k = alpha_t^2 s_k^2 + sigma_t^2`` and
responsibilities ``gamma_k(x) ∝ w_k N(x; alpha_t mu_k, c_k)``:

    E[x1 | x_t = x, k] = mu_k + alpha_t s_k^2 / c_k (x - alpha_t mu_k)
    E[x0 | x_t = x, k] = sigma_t / c_k (x - alpha_t mu_k)
    v(x, t) = sum_k gamma_k (alpha'_t E[x1|x,k] + sigma'_t E[x0|x,k])
    score(x, t) = -E[x0 | x_t = x] / sigma_t = -sum_k gamma_k (x - alpha_t mu_k) / c_k

The flow map ``X_{s,t}`` and the average velocity ``u(x, s, t)`` have no closed form; they come from
a high-accuracy adaptive diffrax solve (Dopri8, tight tolerances; use float64 for ~1e-9 accuracy).
These are the exact answers the project's tests compare every loss and sampler against.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import diffrax
import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp
from jaxtyping import Array, ArrayLike

from flowjax.paths import AffinePath, linear_path


def _as_time_vector(t: ArrayLike, n: int, dtype) -> Array:
    t = jnp.asarray(t, dtype)
    if t.ndim == 0:
        return jnp.full((n,), t, dtype)
    if t.shape != (n,):
        raise ValueError(f"time must be a scalar or have shape ({n},), got {t.shape}.")
    return t


@dataclasses.dataclass(frozen=True)
class GaussianMixtureFlow:
    """Exact flow from ``N(0, I_d)`` (t=0) to a Gaussian mixture (t=1) along ``path``.

    Args:
      means: ``(K, d)`` component means.
      stds: ``(K,)`` isotropic or ``(K, d)`` diagonal component standard deviations (> 0).
      weights: ``(K,)`` mixture weights (normalised here).
      path: the affine path (default linear).
      rtol, atol: tolerances of the flow-map solve.

    All methods take ``x`` of shape ``(n, d)`` and ``t`` a scalar or ``(n,)``.
    """

    means: Any
    stds: Any
    weights: Any
    path: AffinePath = dataclasses.field(default_factory=linear_path)
    rtol: float = 1e-10
    atol: float = 1e-10

    def __post_init__(self):
        means = jnp.asarray(self.means)
        if means.ndim != 2:
            raise ValueError(f"`means` must have shape (K, d), got {means.shape}.")
        k, d = means.shape
        stds = jnp.asarray(self.stds, means.dtype)
        if stds.ndim == 1 and stds.shape == (k,):
            stds = jnp.broadcast_to(stds[:, None], (k, d))
        if stds.shape != (k, d):
            raise ValueError(f"`stds` must have shape ({k},) or ({k}, {d}), got {stds.shape}.")
        weights = jnp.asarray(self.weights, means.dtype)
        if weights.shape != (k,):
            raise ValueError(f"`weights` must have shape ({k},), got {weights.shape}.")
        object.__setattr__(self, "means", means)
        object.__setattr__(self, "stds", stds)
        object.__setattr__(self, "weights", weights / jnp.sum(weights))

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    # -- closed-form quantities -------------------------------------------------------------
    def _moments(self, x: Array, t: ArrayLike):
        """Per-component terms at (x, t): responsibilities, centred x, variances, schedule values."""
        t = _as_time_vector(t, x.shape[0], x.dtype)[:, None, None]  # (n, 1, 1)
        a, s = self.path.alpha(t), self.path.sigma(t)
        var = a**2 * self.stds[None] ** 2 + s**2  # (n, K, d)
        centred = x[:, None, :] - a * self.means[None]  # (n, K, d)
        log_norm = -0.5 * jnp.sum(centred**2 / var + jnp.log(2 * jnp.pi * var), axis=-1)  # (n, K)
        log_joint = jnp.log(self.weights)[None] + log_norm
        gamma = jax.nn.softmax(log_joint, axis=-1)[..., None]  # (n, K, 1)
        return gamma, centred, var, a, s, t, log_joint

    def posterior_means(self, x: Array, t: ArrayLike) -> tuple[Array, Array]:
        """``(E[x1 | x_t = x], E[x0 | x_t = x])``."""
        gamma, centred, var, a, s, _, _ = self._moments(x, t)
        ex1 = self.means[None] + a * self.stds[None] ** 2 / var * centred
        ex0 = s / var * centred
        return jnp.sum(gamma * ex1, axis=1), jnp.sum(gamma * ex0, axis=1)

    def velocity(self, x: Array, t: ArrayLike) -> Array:
        """Marginal velocity ``v(x, t) = E[alpha' x1 + sigma' x0 | x_t = x]``."""
        ex1, ex0 = self.posterior_means(x, t)
        tv = _as_time_vector(t, x.shape[0], x.dtype)[:, None]
        return self.path.d_alpha(tv) * ex1 + self.path.d_sigma(tv) * ex0

    def score(self, x: Array, t: ArrayLike) -> Array:
        """``grad_x log p_t(x)`` (finite for every t where ``sigma_t > 0`` or stds > 0)."""
        gamma, centred, var, *_ = self._moments(x, t)
        return -jnp.sum(gamma * centred / var, axis=1)

    def log_prob(self, x: Array, t: ArrayLike = 1.0) -> Array:
        """``log p_t(x)``, shape ``(n,)``."""
        *_, log_joint = self._moments(x, t)
        return logsumexp(log_joint, axis=-1)

    # -- sampling ----------------------------------------------------------------------------
    def sample_data(self, key: Array, n: int) -> Array:
        """Draw ``n`` samples of ``p1``."""
        kc, kn = jax.random.split(key)
        comp = jax.random.choice(kc, self.weights.shape[0], (n,), p=self.weights)
        eps = jax.random.normal(kn, (n, self.dim), self.means.dtype)
        return self.means[comp] + self.stds[comp] * eps

    def sample_source(self, key: Array, n: int) -> Array:
        return jax.random.normal(key, (n, self.dim), self.means.dtype)

    def sample_marginal(self, key: Array, n: int, t: ArrayLike) -> Array:
        """Draw ``x_t = alpha_t x1 + sigma_t x0`` from the path at time ``t``."""
        k0, k1 = jax.random.split(key)
        x0, x1 = self.sample_source(k0, n), self.sample_data(k1, n)
        return self.path.sample(x0, x1, _as_time_vector(t, n, x1.dtype))[0]

    # -- flow map by a high-accuracy solve -----------------------------------------------------
    def _flow_map_one(self, x: Array, s: Array, t: Array) -> Array:
        # Reparametrise time as s + tau (t - s), tau in [0, 1]: handles both directions and s == t.
        def field(tau, y, args):
            time = s + tau * (t - s)
            return (t - s) * self.velocity(y[None], time)[0]

        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(field),
            diffrax.Dopri8(),
            t0=0.0,
            t1=1.0,
            dt0=None,
            y0=x,
            stepsize_controller=diffrax.PIDController(rtol=self.rtol, atol=self.atol),
            max_steps=100_000,
        )
        return sol.ys[-1]

    def flow_map(self, x: Array, s: ArrayLike, t: ArrayLike) -> Array:
        """``X_{s,t}(x)``: solve ``dx/dtau = v(x, tau)`` from time ``s`` to time ``t`` (either order)."""
        n = x.shape[0]
        s = _as_time_vector(s, n, x.dtype)
        t = _as_time_vector(t, n, x.dtype)
        return jax.vmap(self._flow_map_one)(x, s, t)

    def average_velocity(self, x: Array, s: ArrayLike, t: ArrayLike) -> Array:
        """``u(x, s, t) = (X_{s,t}(x) - x) / (t - s)``, and ``v(x, t)`` where ``s == t``."""
        n = x.shape[0]
        s = _as_time_vector(s, n, x.dtype)
        t = _as_time_vector(t, n, x.dtype)
        same = (t == s)[:, None]
        gap = jnp.where(same, 1.0, (t - s)[:, None])
        moved = (self.flow_map(x, s, t) - x) / gap
        return jnp.where(same, self.velocity(x, t), moved)


def gaussian_flow(mean: ArrayLike, std: ArrayLike, path: AffinePath | None = None) -> GaussianMixtureFlow:
    """A single-Gaussian data distribution ``N(mean, diag(std^2))`` as a one-component mixture."""
    mean = jnp.atleast_1d(jnp.asarray(mean))
    std = jnp.broadcast_to(jnp.asarray(std, mean.dtype), mean.shape)
    return GaussianMixtureFlow(mean[None], std[None], jnp.ones((1,), mean.dtype), path=path or linear_path())
