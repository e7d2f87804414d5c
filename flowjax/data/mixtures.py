"""Gaussian-mixture data in d dimensions, backed by the analytic oracle.

A mixture ``p1 = sum_k w_k N(mu_k, diag(s_k^2))`` is described by :class:`MixtureParams`
``(means (K, d), stds (K, d), weights (K,))``; :func:`mixture_flow` turns it into the exact flow
:class:`flowjax.testing.GaussianMixtureFlow` (closed-form velocity, score and density along any
affine path from ``N(0, I)``), and :func:`sample_mixture` draws data with the oracle's
``sample_data`` (so experiments and tests see the very same distribution).

Presets (ours; :data:`MIXTURE_PRESETS`):

- ``"gm1d_bimodal"``: ``0.5 N(-1.5, 0.5^2) + 0.5 N(1.5, 0.5^2)`` in 1D.
- ``"gm1d_asymmetric"``: weights ``(0.7, 0.3)``, means ``(-1, 2)``, stds ``(0.4, 0.8)`` in 1D.
- ``"gm2d_8"``: 8 equal components on a ring, the same distribution as
  ``sample_toy2d("8gaussians")``: radius ``4 / c``, std ``0.5 / c`` with ``c = sqrt(8.25)``, so
  ``E|x|^2 / 2 = 1``.
- ``"gm2d_25"``: the 5x5 grid of equal components at ``{-2, -1, 0, 1, 2}^2 / sqrt(2)``, std
  ``0.05`` (mode-coverage benchmark of e.g. arXiv:2302.00482), per-coordinate variance about 1.

:func:`random_mixture` draws a random d-dimensional mixture from a key (means ``mean_scale *
N(0, I_d)``, isotropic stds, equal or Dirichlet(1) weights).

Example:
    >>> import jax
    >>> params = mixture_preset("gm2d_8")
    >>> x = sample_mixture(params, jax.random.key(0), 128)
    >>> x.shape
    (128, 2)
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, PRNGKeyArray

from flowjax import _checks
from flowjax.paths import AffinePath
from flowjax.testing import GaussianMixtureFlow


class MixtureParams(NamedTuple):
    """A diagonal Gaussian mixture: ``means (K, d)``, ``stds (K, d)`` (> 0), ``weights (K,)`` (sum 1)."""

    means: Array
    stds: Array
    weights: Array

    @property
    def dim(self) -> int:
        return int(self.means.shape[1])

    @property
    def num_components(self) -> int:
        return int(self.means.shape[0])


MIXTURE_PRESETS: tuple[str, ...] = ("gm1d_bimodal", "gm1d_asymmetric", "gm2d_8", "gm2d_25")


def make_mixture(means, stds, weights, *, dtype=jnp.float32) -> MixtureParams:
    """Validate and normalise mixture parameters (stds ``(K,)`` are broadcast to ``(K, d)``).

    Concrete values only (validation runs in numpy, float64, before the cast to ``dtype``)."""
    means = np.asarray(means, dtype=np.float64)
    if means.ndim != 2:
        raise ValueError(f"`means` must have shape (K, d), got {means.shape}.")
    k, d = means.shape
    stds = np.asarray(stds, dtype=np.float64)
    if stds.ndim == 1:
        stds = np.broadcast_to(stds[:, None], (k, d))
    if stds.shape != (k, d):
        raise ValueError(f"`stds` must have shape ({k},) or ({k}, {d}), got {stds.shape}.")
    weights = np.asarray(weights, dtype=np.float64)
    if weights.shape != (k,):
        raise ValueError(f"`weights` must have shape ({k},), got {weights.shape}.")
    for name, arr in (("means", means), ("stds", stds), ("weights", weights)):
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"`{name}` contains NaN or Inf values.")
    if not np.all(stds > 0):
        raise ValueError("`stds` must be positive.")
    if not np.all(weights >= 0) or not weights.sum() > 0:
        raise ValueError("`weights` must be non-negative with a positive sum.")
    weights = weights / weights.sum()
    return MixtureParams(*(jnp.asarray(a, dtype) for a in (means, stds, weights)))


def mixture_preset(name: str, *, dtype=jnp.float32) -> MixtureParams:
    """Parameters of a named preset; see the module docstring."""
    _checks.check_choice("name", name, MIXTURE_PRESETS)
    if name == "gm1d_bimodal":
        return make_mixture([[-1.5], [1.5]], [0.5, 0.5], [0.5, 0.5], dtype=dtype)
    if name == "gm1d_asymmetric":
        return make_mixture([[-1.0], [2.0]], [0.4, 0.8], [0.7, 0.3], dtype=dtype)
    if name == "gm2d_8":
        c = math.sqrt(8.25)
        ang = np.arange(8) * np.pi / 4
        means = (4.0 / c) * np.stack([np.cos(ang), np.sin(ang)], axis=-1)
        return make_mixture(means, np.full(8, 0.5 / c), np.full(8, 1 / 8), dtype=dtype)
    # gm2d_25
    g = np.arange(-2.0, 3.0) / math.sqrt(2.0)
    means = np.stack(np.meshgrid(g, g, indexing="ij"), axis=-1).reshape(25, 2)
    return make_mixture(means, np.full(25, 0.05), np.full(25, 1 / 25), dtype=dtype)


def random_mixture(
    key: PRNGKeyArray,
    *,
    dim: int,
    num_components: int,
    mean_scale: float = 1.0,
    std: float = 0.3,
    equal_weights: bool = True,
    dtype=jnp.float32,
) -> MixtureParams:
    """A random mixture in ``dim`` dimensions: means ``mean_scale * N(0, I)``, stds ``std``,
    weights equal or ``Dirichlet(1, ..., 1)``. Deterministic in ``key``."""
    _checks.check_positive_int("dim", dim)
    _checks.check_positive_int("num_components", num_components)
    if not std > 0:
        raise ValueError(f"`std` must be positive, got {std!r}.")
    k_m, k_w = jax.random.split(key)
    means = mean_scale * jax.random.normal(k_m, (num_components, dim), dtype)
    if equal_weights:
        weights = jnp.full((num_components,), 1.0 / num_components, dtype)
    else:
        # Dirichlet(1, ..., 1) = normalised i.i.d. Exp(1) draws (cheaper than the gamma sampler).
        e = jax.random.exponential(k_w, (num_components,), dtype)
        weights = e / jnp.sum(e)
    return make_mixture(means, jnp.full((num_components,), std, dtype), weights, dtype=dtype)


def mixture_flow(params: MixtureParams, *, path: AffinePath | None = None, **kwargs) -> GaussianMixtureFlow:
    """The analytic oracle for ``params``: exact flow from ``N(0, I)`` along ``path`` (default linear)."""
    if path is not None:
        kwargs["path"] = path
    return GaussianMixtureFlow(params.means, params.stds, params.weights, **kwargs)


def sample_mixture(params: MixtureParams, key: PRNGKeyArray, n: int) -> Array:
    """``n`` samples of the mixture, shape ``(n, d)``: the oracle's ``sample_data(key, n)``."""
    _checks.check_positive_int("n", n)
    return _sample_mixture(params, key, int(n))


@functools.partial(jax.jit, static_argnums=2)
def _sample_mixture(params: MixtureParams, key: PRNGKeyArray, n: int) -> Array:
    return GaussianMixtureFlow(params.means, params.stds, params.weights).sample_data(key, n)


def mixture_moments(params: MixtureParams) -> tuple[Array, Array]:
    """Exact mean ``(d,)`` and covariance ``(d, d)`` of the mixture."""
    w = params.weights
    mean = jnp.sum(w[:, None] * params.means, axis=0)
    centred = params.means - mean[None]
    cov = jnp.einsum("k,ki,kj->ij", w, centred, centred) + jnp.diag(jnp.sum(w[:, None] * params.stds**2, axis=0))
    return mean, cov


__all__ = [
    "MIXTURE_PRESETS",
    "MixtureParams",
    "make_mixture",
    "mixture_flow",
    "mixture_moments",
    "mixture_preset",
    "random_mixture",
    "sample_mixture",
]
