"""W-CFM: Weighted Conditional Flow Matching (Calvo-Ordoñez et al., arXiv 2507.22270).

Keep independent pairs ``(x0, x1) ~ mu ⊗ nu`` as in I-CFM, and weight each pair's CFM error by the
Gibbs kernel of its transport cost (paper, Sec. 3; project notation, linear path):

    L_WCFM(theta; eps) = E_{t, x0, x1} [ w_eps(x0, x1) || v_theta(x_t, t) - (x1 - x0) ||^2 ],
    w_eps(x0, x1) = exp(-(c(x0, x1) - c_ref) / eps),   c = ||x0 - x1||_2   (unsquared).

Writing ``Z = E[w]`` and ``pi~ = w mu⊗nu / Z``, ``L_WCFM = Z E_{pi~} ||v - (x1 - x0)||^2``, so the
minimiser is the marginal CFM field of the tilted coupling ``pi~`` (an entropic-OT-like plan without
Schrodinger potentials), whose marginals are tilted: ``nu~(x1) ∝ nu(x1) tau(x1)``,
``tau(x1) = E_{x0 ~ mu}[w(x0, x1)]``. ``eps -> inf`` gives I-CFM exactly.

What is the paper's and what is ours:
- Paper: the weighted loss, the unsquared Euclidean cost, the epsilon rule of thumb ``eps = kappa sqrt(d)``
  (kappa from the elbow of the tilt's relative variance), the entropic-OT reading and the tilt.
- Ours (spec wcfm.md): the fixed shift ``c_ref`` (it only rescales the loss by a global constant), and
  the optional per-batch normalisations (``normalize="mean"`` / ``"batch_min"``), which are
  implementation conveniences that change the expected objective at small batch; the ``sigma``
  smoothing of torchcfm's I-CFM; generic affine paths.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array

from flowjax import _checks
from flowjax.couplings import WEIGHT_NORMALISATIONS, COSTS, gibbs_weights, pair_cost
from flowjax.losses.cfm import call_with_condition, mean_squared
from flowjax.paths import AffinePath, linear_path
from flowjax.timesteps import TimeSampler, uniform


def wcfm(
    v_fn: Callable[..., Array],
    key: Array,
    x1: Array,
    *,
    x0: Array | None = None,
    epsilon: float = 1.0,
    cost: str = "euclidean",
    c_ref: float = 0.0,
    normalize: str = "none",
    path: AffinePath | None = None,
    time_sampler: TimeSampler | None = None,
    sigma: float = 0.0,
    c: Any = None,
) -> tuple[Array, dict[str, Array]]:
    """W-CFM loss (2507.22270, Eq. of Sec. 3.1): Gibbs-weighted CFM on independent pairs.

    Args:
      v_fn: velocity model ``v_fn(x_t, t)`` (or ``v_fn(x_t, t, c=c)``).
      key: PRNG key.
      x1: data batch ``(n, ...)``.
      x0: source batch (same shape), default standard Gaussian; pairs are taken AS GIVEN
        (independent); do not combine with an OT pairing (the weights assume independent pairs).
      epsilon: the Gibbs temperature ``eps`` (> 0; ``inf`` gives I-CFM bitwise); may be traced.
      cost: ``"euclidean"`` (paper) or ``"sqeuclidean"``.
      c_ref: a fixed cost shift chosen before training (e.g. the median cost of random pairs); it
        only rescales the loss by a global constant, avoiding underflow.
      normalize: ``"none"`` (paper), ``"mean"`` or ``"batch_min"`` (see ``gibbs_weights``).
      path: affine path (default linear, the paper's).
      time_sampler: default ``U[0, 1]``.
      sigma: torchcfm's Gaussian smoothing ``x_t += sigma * noise`` (0 in the paper's image runs).
      c: condition passed to ``v_fn``.

    Returns:
      ``(loss, aux)`` with ``loss = mean_i w_i ||v - target||^2 / dim`` and aux ``mse`` (unweighted),
      ``weight_mean``, ``weight_ess`` (effective sample size fraction ``(sum w)^2 / (n sum w^2)``).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> v = lambda x, t: jnp.zeros_like(x)
      >>> loss, aux = wcfm(v, jax.random.key(0), jnp.ones((8, 2)), epsilon=1.0)
    """
    _checks.check_float_array("x1", x1, min_ndim=1)
    _checks.check_choice("cost", cost, COSTS)
    _checks.check_choice("normalize", normalize, WEIGHT_NORMALISATIONS)
    if not isinstance(epsilon, jax.core.Tracer) and not epsilon > 0:
        raise ValueError(f"`epsilon` must be positive (inf allowed), got {epsilon}.")
    if sigma < 0:
        raise ValueError(f"`sigma` must be >= 0, got {sigma}.")
    n = x1.shape[0]
    if x0 is not None:
        _checks.check_float_array("x0", x0, min_ndim=1)
        _checks.check_same_shape("x0", x0, "x1", x1)
    if c is not None:
        for leaf in jax.tree.leaves(c):
            _checks.check_batch_size("c", leaf, n)
    path = path or linear_path()
    time_sampler = time_sampler or uniform()

    # Same key layout as flowjax.losses.cfm (k0: source, kc: coupling [unused], kt: time), so that
    # epsilon = inf reproduces the I-CFM loss bitwise.
    k0, kc, kt = jax.random.split(key, 3)
    if x0 is None:
        x0 = jax.random.normal(k0, x1.shape, x1.dtype)
    # Weights depend on data only; stop_gradient makes explicit that no gradient flows through them.
    w = jax.lax.stop_gradient(gibbs_weights(x0, x1, epsilon=epsilon, cost=cost, c_ref=c_ref, normalize=normalize))

    t = time_sampler(kt, n).astype(x1.dtype)
    x_t, dx_t = path.sample(x0, x1, t)
    if sigma > 0:
        x_t = x_t + sigma * jax.random.normal(kc, x_t.shape, x_t.dtype)
    pred = call_with_condition(v_fn, x_t, t, c=c)
    per_sample = mean_squared(pred - dx_t)
    loss = jnp.mean(w * per_sample)
    aux = {
        "mse": jnp.mean(per_sample),
        "weight_mean": jnp.mean(w),
        "weight_ess": jnp.sum(w) ** 2 / (n * jnp.maximum(jnp.sum(w**2), jnp.finfo(w.dtype).tiny)),
    }
    return loss, aux


def epsilon_rule_of_thumb(dim: int, kappa: float) -> float:
    """The paper's heuristic ``eps = kappa * sqrt(d)`` (CIFAR-10: d = 3072, eps = 5, kappa ~ 0.09)."""
    _checks.check_positive_int("dim", dim)
    if not kappa > 0:
        raise ValueError(f"`kappa` must be positive, got {kappa}.")
    return float(kappa) * math.sqrt(dim)


def reference_cost(key: Array, x0: Array, x1: Array, *, cost: str = "euclidean", quantile: float = 0.5) -> Array:
    """A fixed ``c_ref``: a quantile (default the median) of the cost over random independent pairs.

    Compute once before training (e.g. over 10^4 pairs) and pass the float as ``c_ref``.
    """
    perm = jax.random.permutation(key, x1.shape[0])
    return jnp.quantile(pair_cost(x0, x1[perm], cost=cost), quantile)


def marginal_tilt(x0: Array, x1: Array, *, epsilon: float, cost: str = "euclidean", c_ref: float = 0.0) -> tuple[Array, Array]:
    """The data-side tilt ``tau(x1_j) = mean_i w(x0_i, x1_j)`` over sample pools, and its relative variance.

    ``Var_nu(tau) / E_nu[tau]^2`` measures how far W-CFM's learned target marginal ``nu~ ∝ nu tau``
    moves from ``nu`` (paper, Sec. 3; used to pick eps at the elbow). Returns ``(tau (m1,), rel_var)``.
    Memory is ``O(m0 m1)``.
    """
    a = x0.reshape(x0.shape[0], -1)
    b = x1.reshape(x1.shape[0], -1)
    sq = jnp.maximum(jnp.sum(a**2, 1)[:, None] + jnp.sum(b**2, 1)[None, :] - 2.0 * a @ b.T, 0.0)
    cmat = sq if cost == "sqeuclidean" else jnp.sqrt(sq)
    tau = jnp.mean(jnp.exp(-(cmat - c_ref) / epsilon), axis=0)
    return tau, jnp.var(tau) / jnp.mean(tau) ** 2


__all__ = ["epsilon_rule_of_thumb", "marginal_tilt", "reference_cost", "wcfm"]
