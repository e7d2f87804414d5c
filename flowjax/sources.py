"""Source distributions for flow matching: norm alignment, directionally-pruned sampling, the 2-D
source-design simulation, and the condition-dependent Gaussian source.

Project notation: ``t = 0`` source, ``t = 1`` data, ``x_t = t x1 + (1 - t) x0`` (linear path).

**Lee, Kim & Lee, "Is There a Better Source Distribution than Gaussian?", arXiv 2512.18184**
(spec ``source-distributions.md``; the method is taken from the official SourceFM code as the
spec reports it, the paper text was not read):

- Norm-aligned training (paper §3.1 / code ``x0 *= 27.1981/55.4185``): ``x0 = s eps`` with
  ``s = E||x1|| / E||eps||``, used in training *and* sampling (:func:`norm_alignment_scale`).
  Ours: ``E||eps||`` is the exact chi mean ``sqrt(2) Gamma((d+1)/2) / Gamma(d/2)``
  (:func:`expected_gaussian_norm`) rather than the code's Monte-Carlo constant 55.4185.
- Directionally-pruned sampling (inference only, paper §3.2 / code): candidate axes ``+-u_k`` from a
  PCA of the L2-normalised data; the data-sparse axes are ``R = {a : max_n <a, x_n/||x_n||> <= tau_axis}``
  (:func:`data_sparse_axes`); a Gaussian draw is accepted iff ``max_{a in R} <eps/||eps||, a> <= tau_inf``,
  with batched redraws (``proposals`` candidates per missing sample, accepted ones kept at random)
  (:func:`pruned_sample`, :func:`pruned_gaussian`). Ours: the sampler can start from a given noise
  batch and only redraw its rejected rows, so pruned and unpruned samples share seeds (the spec's
  evaluation rule); every returned row is still an independent draw from the truncated Gaussian.
- The exact acceptance probability for orthonormal axes (:func:`acceptance_probability`) is derived,
  not from the paper: ``(1 + <eps_hat, a>)/2 ~ Beta((d-1)/2, (d-1)/2)`` for a uniform direction, and
  the product over axes ignores the weak dependence between projections.
- The 2-D simulation (``simulations/run_whole_simulation.py`` as the spec transcribes it):
  :func:`simulation_target` (three directional clusters, weights [0.05, 0.30, 0.65] of 1024 fixed
  points, radius ``sqrt(chi2(625))``), :func:`circle_source` (uniform angle, radius
  ``sqrt(chi2(3072))``), :func:`directional_source` (DirICFM: directions within ``cos >= min_cos`` of a
  base angle, mode ratios matched), one-sided rejection of the data's second principal direction
  (:func:`pruned_sample` with ``axes = -p2``, ``tau = 0.98``), and the NN-based metrics
  (:func:`nearest_neighbour_metrics`). Ours: JAX keys instead of the script's seed 124142 (so the
  base angles differ from the paper's), and the coverage rule (fraction of optimally matched pairs
  closer than ``eps``) is our reading of "coverage at eps = 0.5 (one-to-one matching)".

**Kim, Park, Jeon & Kim, "Better Source, Better Flow" (CSFM), arXiv 2602.05951** (spec
``conditional-source.md``; taken from the official code): the learned source
``q_phi(x0 | c) = N(mu_phi(c), sigma^2 I)`` sampled by reparameterisation
(:func:`conditional_gaussian_source`). The loss lives in :mod:`flowjax.losses.csfm`.

:func:`gaussian_bridge_velocity` is the closed-form marginal velocity between two isotropic
Gaussians under the independent coupling (standard result, used as a test oracle).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import betainc, gammaln
from jaxtyping import Array, ArrayLike

from flowjax import _checks

# ------------------------------------------------------------------------------------------------
# norm alignment (2512.18184 §3.1)
# ------------------------------------------------------------------------------------------------
CIFAR10_DATA_NORM = 27.1981  # E||x1|| of CIFAR-10 in [-1, 1] (SourceFM code constant)
CIFAR10_GAUSSIAN_NORM_CODE = 55.4185  # the code's empirical E||eps|| at d = 3072 (exact: 55.4211)


def expected_gaussian_norm(dim: int) -> float:
    """``E||eps||`` for ``eps ~ N(0, I_d)``: the chi mean ``sqrt(2) Gamma((d+1)/2) / Gamma(d/2)`` (exact)."""
    _checks.check_positive_int("dim", dim)
    return float(math.sqrt(2.0) * math.exp(math.lgamma((dim + 1) / 2) - math.lgamma(dim / 2)))


def norm_alignment_scale(x1: ArrayLike, *, gaussian_norm: float | None = None) -> float:
    """Norm-alignment factor ``s = E||x1|| / E||eps||`` (2512.18184 §3.1) from a data batch ``(n, ...)``.

    ``E||x1||`` is the sample mean of the per-example L2 norms; ``E||eps||`` is exact
    (:func:`expected_gaussian_norm` of ``d = prod(x1.shape[1:])``) unless ``gaussian_norm`` is given
    (e.g. the code's 55.4185 for CIFAR). The source is then ``x0 = s eps`` for training AND sampling.
    """
    x1 = jnp.asarray(x1)
    _checks.check_float_array("x1", x1, min_ndim=2)
    d = int(np.prod(x1.shape[1:]))
    data_norm = float(jnp.mean(jnp.linalg.norm(x1.reshape(x1.shape[0], -1), axis=-1)))
    g = expected_gaussian_norm(d) if gaussian_norm is None else float(gaussian_norm)
    if g <= 0:
        raise ValueError(f"`gaussian_norm` must be positive, got {gaussian_norm}.")
    return data_norm / g


def scaled_gaussian(key: Array, shape: Sequence[int], *, scale: float = 1.0, dtype=jnp.float32) -> Array:
    """``x0 = scale * eps``, ``eps ~ N(0, I)``: the norm-aligned source with ``scale = s``."""
    return scale * jax.random.normal(key, tuple(shape), dtype)


# ------------------------------------------------------------------------------------------------
# directionally-pruned sampling (2512.18184 §3.2)
# ------------------------------------------------------------------------------------------------
def principal_directions(x: ArrayLike) -> Array:
    """PCA components (rows, orthonormal, by decreasing variance) of the L2-normalised, flattened,
    centred data ``x (n, ...)``: the ``u_k`` of step 2 (preprocessing; run eagerly)."""
    x = jnp.asarray(x)
    _checks.check_float_array("x", x, min_ndim=2)
    xf = x.reshape(x.shape[0], -1)
    xh = xf / jnp.linalg.norm(xf, axis=-1, keepdims=True)
    xc = xh - jnp.mean(xh, axis=0, keepdims=True)
    _, _, vt = jnp.linalg.svd(xc, full_matrices=True)
    return vt


def data_sparse_axes(x: ArrayLike, *, tau_axis: float = 0.01, components: ArrayLike | None = None) -> tuple[Array, Array]:
    """The rejected (data-sparse) axes ``R = {a in {+u_k, -u_k} : max_n <a, x_n/||x_n||> <= tau_axis}``.

    Paper default ``tau_axis = 0.01`` (CIFAR-10 with flips). Flip augmentation, if the training data
    used it, must already be in ``x``. These are the axes the sampler stays AWAY from.

    Args:
      x: data ``(n, ...)`` (flattened internally).
      tau_axis: the selection threshold on the maximum cosine.
      components: optional precomputed ``u_k`` rows ``(k, d)``; default :func:`principal_directions`.

    Returns:
      ``(axes (r, d), max_cos (2k,))``: the selected unit axes and ``m_a`` for every candidate
      ``[+u_1..+u_k, -u_1..-u_k]``. Not jittable (the number of axes depends on the data).
    """
    x = jnp.asarray(x)
    _checks.check_float_array("x", x, min_ndim=2)
    xf = x.reshape(x.shape[0], -1)
    xh = xf / jnp.linalg.norm(xf, axis=-1, keepdims=True)
    u = principal_directions(x) if components is None else jnp.asarray(components, xh.dtype)
    if u.ndim != 2 or u.shape[1] != xh.shape[1]:
        raise ValueError(f"`components` must have shape (k, {xh.shape[1]}), got {tuple(u.shape)}.")
    cand = jnp.concatenate([u, -u], axis=0)
    max_cos = jnp.max(xh @ cand.T, axis=0)
    keep = np.asarray(max_cos <= tau_axis)
    return cand[keep], max_cos


def max_axis_cosine(x: Array, axes: Array) -> Array:
    """``max_{a in R} <x/||x||, a>`` per row of ``x (n, ...)``; ``-inf`` when ``R`` is empty."""
    xf = x.reshape(x.shape[0], -1)
    if axes.shape[0] == 0:
        return jnp.full((x.shape[0],), -jnp.inf, xf.dtype)
    xh = xf / jnp.linalg.norm(xf, axis=-1, keepdims=True)
    return jnp.max(xh @ axes.T.astype(xf.dtype), axis=-1)


def pruned_sample(
    key: Array,
    propose: Callable[[Array, int], Array],
    n: int,
    axes: ArrayLike,
    *,
    tau: float,
    proposals: int = 10,
    max_rounds: int = 50,
    x_init: Array | None = None,
) -> tuple[Array, Array]:
    """Rejection sampling that keeps a direction away from the axes ``R`` (2512.18184 §3.2, batched).

    A draw ``x`` is accepted iff ``max_{a in R} <x/||x||, a> <= tau``. Each round proposes
    ``proposals * n`` candidates with ``propose(key, m) -> (m, ...)``, and fills the still-missing
    rows with accepted candidates taken in random order, so every returned row is an independent
    draw from the proposal conditioned on acceptance. Jittable (fixed-size ``while_loop``).

    Args:
      key: PRNG key.
      propose: the base sampler, e.g. ``lambda k, m: jax.random.normal(k, (m, d))``.
      n: number of samples.
      axes: the rejected unit axes ``(r, d)`` (``r = 0``: no pruning).
      tau: the inference threshold ``tau_inf`` (paper 0.048 at d = 3072; re-derive for other d,
        a few standard deviations of ``N(0, 1/d)``).
      proposals: candidates per missing sample and round (paper 10).
      max_rounds: rounds before giving up; rows still missing then are NaN (never silently wrong).
      x_init: optional initial batch ``(n, ...)`` (round 0): accepted rows are kept as they are, so
        pruned and unpruned sampling share their seeds.

    Returns:
      ``(x (n, ...), acceptance_rate)``: the samples and accepted/proposed over all rounds.
    """
    _checks.check_positive_int("n", n)
    _checks.check_positive_int("proposals", proposals)
    axes = jnp.asarray(axes)
    k0, key = jax.random.split(key)
    x = propose(k0, n) if x_init is None else x_init
    _checks.check_float_array("x_init", x, min_ndim=2)
    _checks.check_batch_size("x_init", x, n)
    if axes.ndim != 2 or axes.shape[1] != int(np.prod(x.shape[1:])):
        raise ValueError(f"`axes` must have shape (r, {int(np.prod(x.shape[1:]))}), got {tuple(axes.shape)}.")
    ok = max_axis_cosine(x, axes) <= tau
    m = proposals * n

    def cond(state):
        _, ok, _, r, _, _ = state
        return jnp.logical_and(jnp.logical_not(jnp.all(ok)), r < max_rounds)

    def body(state):
        x, ok, key, r, n_acc, n_prop = state
        key, kp, ko = jax.random.split(key, 3)
        cand = propose(kp, m).astype(x.dtype)
        acc = max_axis_cosine(cand, axes) <= tau
        prio = jnp.where(acc, jax.random.uniform(ko, (m,)), 2.0)  # accepted first, in random order
        order = jnp.argsort(prio)
        cand_sorted = cand[order]
        num_acc = jnp.sum(acc)
        missing = jnp.logical_not(ok)
        rank = jnp.cumsum(missing) - 1  # the j-th missing row takes the j-th accepted candidate
        fill = missing & (rank < num_acc)
        src = cand_sorted[jnp.clip(rank, 0, m - 1)]
        shape = (n,) + (1,) * (x.ndim - 1)
        x = jnp.where(fill.reshape(shape), src, x)
        return x, ok | fill, key, r + 1, n_acc + num_acc, n_prop + m

    n_acc0 = jnp.sum(ok)
    x, ok, _, _, n_acc, n_prop = jax.lax.while_loop(cond, body, (x, ok, key, 0, n_acc0, jnp.asarray(n)))
    x = jnp.where(ok.reshape((n,) + (1,) * (x.ndim - 1)), x, jnp.nan)
    return x, n_acc / n_prop


def pruned_gaussian(
    key: Array,
    shape: Sequence[int],
    axes: ArrayLike,
    *,
    tau: float,
    scale: float = 1.0,
    proposals: int = 10,
    max_rounds: int = 50,
    x_init: Array | None = None,
    dtype=jnp.float32,
) -> tuple[Array, Array]:
    """Directionally-pruned Gaussian source ``x0 = scale * eps``, ``eps ~ N(0, I)`` truncated to
    ``max_{a in R} <eps_hat, a> <= tau`` (2512.18184 §3.2; inference only, never for training).

    ``shape = (n, ...)``; ``scale`` is the norm-alignment factor (1 for a standard source). With
    ``x_init`` (unscaled noise ``eps``), accepted rows are kept and only rejected ones are redrawn.
    Returns ``(x0, acceptance_rate)``; see :func:`pruned_sample`.
    """
    shape = tuple(int(s) for s in shape)
    eps, rate = pruned_sample(
        key, lambda k, m: jax.random.normal(k, (m,) + shape[1:], dtype), shape[0], axes,
        tau=tau, proposals=proposals, max_rounds=max_rounds, x_init=x_init,
    )
    return scale * eps, rate


def acceptance_probability(dim: int, tau: float, num_axes: int) -> float:
    """``prod_{a in R} P(<eps_hat, a> <= tau)`` for ``|R|`` orthonormal axes (derived, not the paper's).

    For a uniform direction in ``R^d``, ``(1 + <eps_hat, a>)/2 ~ Beta((d-1)/2, (d-1)/2)``. The
    product ignores the weak negative dependence between projections (accurate to well under 1%
    at ``tau >= 2.5/sqrt(d)``, spec §6.3).
    """
    _checks.check_positive_int("dim", dim)
    if dim < 2:
        raise ValueError(f"`dim` must be >= 2, got {dim}.")
    a = (dim - 1) / 2.0
    z = min(max((1.0 + tau) / 2.0, 0.0), 1.0)
    p = float(betainc(jnp.float64(a) if jax.config.jax_enable_x64 else a, a, z))
    return p ** int(num_axes)


# ------------------------------------------------------------------------------------------------
# the 2-D simulation (2512.18184, simulations/run_whole_simulation.py)
# ------------------------------------------------------------------------------------------------
SIM_MODE_WEIGHTS = (0.05, 0.30, 0.65)
SIM_NUM_POINTS = 1024
SIM_TARGET_DOF = 625
SIM_SOURCE_DOF = 3072


def mode_counts(n: int, weights: Sequence[float]) -> tuple[int, ...]:
    """Floor of ``n w_k``; the remainder goes to the largest mode ([51, 307, 666] for the paper's case)."""
    w = np.asarray(weights, np.float64)
    if w.ndim != 1 or np.any(w < 0) or not np.isclose(w.sum(), 1.0):
        raise ValueError(f"`weights` must be non-negative and sum to 1, got {tuple(weights)}.")
    counts = np.floor(n * w).astype(int)
    counts[int(np.argmax(w))] += n - counts.sum()
    return tuple(int(c) for c in counts)


def chi_radius(key: Array, shape: Sequence[int], dof: int, dtype=jnp.float32) -> Array:
    """``sqrt(chi2(dof))`` radii: the norm of a ``dof``-dimensional standard Gaussian."""
    return jnp.sqrt(jax.random.chisquare(key, float(dof), tuple(shape), dtype))


def _polar(r: Array, ang: Array) -> Array:
    return jnp.stack([r * jnp.cos(ang), r * jnp.sin(ang)], -1)


def simulation_target(
    key: Array,
    *,
    n: int = SIM_NUM_POINTS,
    weights: Sequence[float] = SIM_MODE_WEIGHTS,
    spread_deg: float = 10.0,
    jitter_deg: float = 1.0,
    dof: int = SIM_TARGET_DOF,
    base_angles: ArrayLike | None = None,
) -> tuple[Array, Array, Array]:
    """The simulation's fixed target set: ``(points (n, 2), mode labels (n,), base angles (K,))``.

    Mode ``k`` has ``n_k`` points (:func:`mode_counts`) at angles
    ``theta_k + linspace(-spread, +spread, n_k) + N(0, jitter^2)`` and radius ``sqrt(chi2(dof))``
    (about 25 for 625); base angles ``theta_k ~ U[0, 2 pi)`` unless given.
    """
    counts = mode_counts(n, weights)
    kb, kj, kr = jax.random.split(key, 3)
    if base_angles is None:
        base = jax.random.uniform(kb, (len(counts),), jnp.float32, 0.0, 2 * jnp.pi)
    else:
        base = jnp.asarray(base_angles, jnp.float32)
    offs = jnp.concatenate([jnp.linspace(-spread_deg, spread_deg, c) for c in counts]) * (jnp.pi / 180)
    labels = jnp.concatenate([jnp.full((c,), k, jnp.int32) for k, c in enumerate(counts)])
    ang = base[labels] + offs + jitter_deg * (jnp.pi / 180) * jax.random.normal(kj, (n,), jnp.float32)
    return _polar(chi_radius(kr, (n,), dof), ang), labels, base


def circle_source(key: Array, n: int, *, dof: int = SIM_SOURCE_DOF, dtype=jnp.float32) -> Array:
    """The simulation's "circle" source: uniform angle, radius ``sqrt(chi2(dof))`` (about 55.4 for 3072),
    mimicking the norm concentration of a 3072-d Gaussian and its norm mismatch with the data."""
    ka, kr = jax.random.split(key)
    ang = jax.random.uniform(ka, (n,), dtype, 0.0, 2 * jnp.pi)
    return _polar(chi_radius(kr, (n,), dof, dtype), ang)


def directional_source(
    key: Array,
    n: int,
    base_angles: ArrayLike,
    weights: Sequence[float],
    *,
    min_cos: float = 0.9,
    dof: int = SIM_SOURCE_DOF,
    dtype=jnp.float32,
) -> Array:
    """DirICFM source: a mode ``k ~ weights``, then a direction uniform within ``cos >= min_cos`` of
    ``theta_k`` and a ``sqrt(chi2(dof))`` radius (scenario 6: 0.9, scenario 8 "Tight": 0.98)."""
    km, ka, kr = jax.random.split(key, 3)
    base = jnp.asarray(base_angles, dtype)
    k = jax.random.categorical(km, jnp.log(jnp.asarray(weights, dtype)), shape=(n,))
    half = jnp.arccos(jnp.asarray(min_cos, dtype))
    ang = base[k] + jax.random.uniform(ka, (n,), dtype, -1.0, 1.0) * half
    return _polar(chi_radius(kr, (n,), dof, dtype), ang)


def nearest_neighbour_metrics(gen: ArrayLike, target: ArrayLike, *, bad_radius: float = 1.0,
                              coverage_eps: float = 0.5, matching: bool = True) -> dict[str, float]:
    """The simulation's NN metrics of generated points against the target set.

    - ``mean_nn``: mean over generated points of the distance to the nearest target;
    - ``pct_bad``: percentage of generated points whose NN distance exceeds ``bad_radius``;
    - ``coverage``: with ``len(gen) == len(target)``, the fraction of pairs of the optimal
      one-to-one (W2) matching closer than ``coverage_eps`` (our reading of the paper's
      "coverage at eps = 0.5 (one-to-one matching)"), and ``w2``, the exact W2 of that matching
      (uniform weights). Both need ``matching`` (an ``O(n^3)`` assignment on the host, scipy).
    """
    gen, target = jnp.asarray(gen), jnp.asarray(target)
    d2 = jnp.sum((gen[:, None] - target[None]) ** 2, -1)
    nn = jnp.sqrt(jnp.min(d2, 1))
    out = {"mean_nn": float(jnp.mean(nn)), "pct_bad": float(100 * jnp.mean(nn > bad_radius))}
    if matching and gen.shape[0] == target.shape[0]:
        from scipy.optimize import linear_sum_assignment

        d2n = np.asarray(d2, np.float64)
        r, c = linear_sum_assignment(d2n)
        out["coverage"] = float(np.mean(np.sqrt(d2n[r, c]) < coverage_eps))
        out["w2"] = float(np.sqrt(np.mean(d2n[r, c])))
    return out


# ------------------------------------------------------------------------------------------------
# condition-dependent Gaussian source (2602.05951) and the Gaussian-to-Gaussian oracle
# ------------------------------------------------------------------------------------------------
LOGVAR_CLAMP = (-10.0, 10.0)  # CSFM code's clamp on the learned log-variance


def conditional_gaussian_source(key: Array, mu: Array, logvar: Array | None = None, *,
                                fixed_std: float | None = 1.0) -> tuple[Array, Array]:
    """``x0 = mu_phi(c) + sigma_phi(c) * eps`` (CSFM, 2602.05951 §3.1, reparameterised).

    With ``fixed_std`` (paper default 1.0) ``sigma`` is that constant and ``logvar`` is ignored;
    otherwise ``sigma = exp(logvar / 2)`` with ``logvar`` clamped to ``[-10, 10]`` (code).
    Returns ``(x0, logvar_used)`` (``logvar_used = 2 log fixed_std`` broadcast when fixed).
    """
    _checks.check_float_array("mu", mu, min_ndim=1)
    if fixed_std is not None:
        if fixed_std <= 0:
            raise ValueError(f"`fixed_std` must be positive, got {fixed_std}.")
        lv = jnp.full(mu.shape, 2.0 * math.log(fixed_std), mu.dtype)
    else:
        if logvar is None:
            raise ValueError("`logvar` is required when `fixed_std` is None.")
        _checks.check_same_shape("mu", mu, "logvar", logvar)
        lv = jnp.clip(logvar, *LOGVAR_CLAMP)
    eps = jax.random.normal(key, mu.shape, mu.dtype)
    return mu + jnp.exp(0.5 * lv) * eps, lv


def gaussian_bridge_velocity(x: Array, t: Array, *, m0: ArrayLike, s0: float, m1: ArrayLike, s1: float) -> Array:
    """Marginal velocity of the linear path between ``N(m0, s0^2 I)`` and ``N(m1, s1^2 I)`` under the
    independent coupling: ``x_t ~ N(m_t, s_t^2 I)`` with ``m_t = (1-t) m0 + t m1``,
    ``s_t^2 = (1-t)^2 s0^2 + t^2 s1^2`` and

        v(x, t) = (m1 - m0) + ((t s1^2 - (1-t) s0^2) / s_t^2) (x - m_t).

    ``x (n, d)``, ``t (n,)``; ``m0, m1`` broadcast against ``x`` (e.g. ``(n, d)`` per-sample means).
    """
    tt = t[:, None]
    m0 = jnp.broadcast_to(jnp.asarray(m0, x.dtype), x.shape)
    m1 = jnp.broadcast_to(jnp.asarray(m1, x.dtype), x.shape)
    mt = (1 - tt) * m0 + tt * m1
    var = (1 - tt) ** 2 * s0**2 + tt**2 * s1**2
    return (m1 - m0) + (tt * s1**2 - (1 - tt) * s0**2) / var * (x - mt)


__all__ = [
    "CIFAR10_DATA_NORM",
    "CIFAR10_GAUSSIAN_NORM_CODE",
    "SIM_MODE_WEIGHTS",
    "acceptance_probability",
    "chi_radius",
    "circle_source",
    "conditional_gaussian_source",
    "data_sparse_axes",
    "directional_source",
    "expected_gaussian_norm",
    "gaussian_bridge_velocity",
    "max_axis_cosine",
    "mode_counts",
    "nearest_neighbour_metrics",
    "norm_alignment_scale",
    "principal_directions",
    "pruned_gaussian",
    "pruned_sample",
    "scaled_gaussian",
    "simulation_target",
]
