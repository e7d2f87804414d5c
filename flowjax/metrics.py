"""Sample-quality and likelihood metrics.

All functions take two sample sets ``x (n, ...)`` and ``y (m, ...)`` (trailing axes are
flattened to ``d`` features) unless stated otherwise.

- :func:`sliced_wasserstein`: sliced 2-Wasserstein distance (Rabin et al. 2011; Bonneel et al.
  2015), ``SW2(x, y)^2 = E_theta W2^2(theta^T x, theta^T y)`` with ``theta`` uniform on the unit
  sphere; each 1D ``W2`` between empirical measures is computed exactly from their quantile
  functions (also for ``n != m``); the expectation over ``theta`` is a Monte Carlo mean over
  ``num_projections`` directions.
- :func:`mmd`: squared maximum mean discrepancy (Gretton et al., JMLR 2012) with a multi-scale
  RBF kernel ``k(a, b) = mean_l exp(-|a - b|^2 / (2 h_l^2))``; unbiased U-statistic (default) or
  biased V-statistic.
- :func:`energy_distance`: Szekely's energy distance ``2 E|X - Y| - E|X - X'| - E|Y - Y'|``
  (V-statistic by default: non-negative and zero iff the two empirical measures are equal).
- :func:`wasserstein2_exact`: exact 2-Wasserstein distance between two uniform empirical measures,
  solved as an assignment problem with ott-jax's Hungarian solver (``ott.tools.unreg.hungarian``);
  sets of different sizes are replicated to their least common multiple, which is exact for
  uniform weights.
- :func:`bits_per_dim`: NLL in nats to bits per dimension, with the discretisation correction.
- :func:`frechet_distance`: Frechet distance between Gaussians fitted to two feature sets (the
  FID formula, Heusel et al., arXiv:1706.08500), computed in float64 with symmetric eigen-
  decompositions; :func:`digits_fd` applies it to features of the project's own digits
  classifier (see :func:`load_digits_classifier`).

The pairwise statistics (MMD, energy distance) are computed in row blocks so that memory stays
below ``max_block_elems`` floats; they are jit-compatible (sizes static). SW2 and W2 are jit-
compatible too; the Frechet distance runs on the host in float64.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, PRNGKeyArray

from flowjax import _checks

DEFAULT_MMD_BANDWIDTHS: tuple[float, ...] = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


def _as_sets(x: ArrayLike, y: ArrayLike, name_x: str = "x", name_y: str = "y") -> tuple[Array, Array]:
    x, y = jnp.asarray(x), jnp.asarray(y)
    for name, a in ((name_x, x), (name_y, y)):
        _checks.check_float_array(name, a, min_ndim=1)
        if a.shape[0] < 1:
            raise ValueError(f"`{name}` must hold at least one sample, got shape {tuple(a.shape)}.")
        _checks.check_finite(name, a)
    x = x.reshape(x.shape[0], -1)
    y = y.reshape(y.shape[0], -1)
    if x.shape[1] != y.shape[1]:
        raise ValueError(
            f"`{name_x}` and `{name_y}` must have the same number of features per sample, got {x.shape[1]} and {y.shape[1]}."
        )
    dtype = jnp.result_type(x.dtype, y.dtype)
    return x.astype(dtype), y.astype(dtype)


def _pairwise_sum(a: Array, b: Array, fn: Callable[[Array], Array], max_block_elems: int) -> Array:
    """``sum_{i, j} fn(|a_i - b_j|^2)`` in row blocks of ``a`` (exact differences, no cancellation)."""
    n, d = a.shape
    m = b.shape[0]
    block = int(max(1, min(n, max_block_elems // max(1, m * d))))
    nb = -(-n // block)
    pad = nb * block - n
    a_p = jnp.pad(a, ((0, pad), (0, 0))).reshape(nb, block, d)
    mask = (jnp.arange(nb * block) < n).reshape(nb, block)

    def body(args):
        ab, mk = args
        d2 = jnp.sum(jnp.square(ab[:, None, :] - b[None, :, :]), axis=-1)
        return jnp.sum(jnp.where(mk[:, None], fn(d2), jnp.zeros((), d2.dtype)))

    return jnp.sum(jax.lax.map(body, (a_p, mask)))


def _safe_sqrt(d2: Array) -> Array:
    # sqrt with a finite (zero) gradient at 0, where |x_i - x_i| sits.
    pos = d2 > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, d2, jnp.ones((), d2.dtype))), jnp.zeros((), d2.dtype))


# --------------------------------------------------------------------------------------------
# Sliced Wasserstein
# --------------------------------------------------------------------------------------------
def random_directions(key: PRNGKeyArray, num: int, dim: int, dtype=jnp.float32) -> Array:
    """``num`` directions uniform on the unit sphere in ``dim`` dimensions, shape ``(num, dim)``."""
    z = jax.random.normal(key, (num, dim), dtype)
    return z / jnp.linalg.norm(z, axis=-1, keepdims=True)


def _w2_sq_1d_sorted(a: Array, b: Array) -> Array:
    """Exact ``W2^2`` between uniform empirical measures given sorted samples along the last axis.

    ``W2^2 = int_0^1 (F^{-1}(u) - G^{-1}(u))^2 du``; both quantile functions are step functions,
    constant between consecutive points of ``{i / n} U {j / m}``.
    """
    n, m = a.shape[-1], b.shape[-1]
    if n == m:
        return jnp.mean(jnp.square(a - b), axis=-1)
    dtype = a.dtype
    u = jnp.sort(jnp.concatenate([jnp.arange(1, n + 1, dtype=dtype) / n, jnp.arange(1, m + 1, dtype=dtype) / m]))
    widths = jnp.diff(u, prepend=jnp.zeros((1,), dtype))
    mids = u - widths / 2
    ia = jnp.clip(jnp.floor(mids * n).astype(jnp.int32), 0, n - 1)
    ib = jnp.clip(jnp.floor(mids * m).astype(jnp.int32), 0, m - 1)
    diff = jnp.take(a, ia, axis=-1) - jnp.take(b, ib, axis=-1)  # (..., n + m)
    return jnp.sum(widths.reshape((1,) * (diff.ndim - 1) + (-1,)) * jnp.square(diff), axis=-1)


def sliced_wasserstein(
    x: ArrayLike,
    y: ArrayLike,
    *,
    key: PRNGKeyArray | None = None,
    num_projections: int = 128,
    projections: ArrayLike | None = None,
    squared: bool = False,
) -> Array:
    """Sliced 2-Wasserstein distance ``SW2(x, y) = sqrt(mean_theta W2^2(theta^T x, theta^T y))``.

    Args:
      x, y: samples ``(n, ...)`` and ``(m, ...)``.
      key: PRNG key of the random directions (required unless ``projections`` is given).
      num_projections: number of random directions ``L``.
      projections: optional explicit directions ``(L, d)`` (rows are normalised here).
      squared: return ``SW2^2`` instead of ``SW2``.

    Returns:
      Scalar. For ``d = 1`` it equals the exact ``W2``. For two Gaussians ``N(m1, s1^2 I)`` and
      ``N(m2, s2^2 I)`` in ``d`` dimensions the population value is
      ``SW2^2 = |m1 - m2|^2 / d + (s1 - s2)^2``.
    """
    x, y = _as_sets(x, y)
    d = x.shape[1]
    if projections is None:
        if key is None:
            raise ValueError("`key` is required to draw random projections (or pass `projections`).")
        _checks.check_positive_int("num_projections", num_projections)
        theta = random_directions(key, num_projections, d, x.dtype)
    else:
        theta = jnp.asarray(projections, x.dtype)
        if theta.ndim != 2 or theta.shape[1] != d:
            raise ValueError(f"`projections` must have shape (L, {d}), got {tuple(theta.shape)}.")
        theta = theta / jnp.linalg.norm(theta, axis=-1, keepdims=True)
    px = jnp.sort(theta @ x.T, axis=-1)  # (L, n)
    py = jnp.sort(theta @ y.T, axis=-1)  # (L, m)
    sw2 = jnp.mean(_w2_sq_1d_sorted(px, py))
    return sw2 if squared else jnp.sqrt(sw2)


# --------------------------------------------------------------------------------------------
# MMD and energy distance
# --------------------------------------------------------------------------------------------
def mmd(
    x: ArrayLike,
    y: ArrayLike,
    *,
    bandwidths: Sequence[float] = DEFAULT_MMD_BANDWIDTHS,
    unbiased: bool = True,
    squared: bool = True,
    max_block_elems: int = 2**24,
) -> Array:
    """Squared MMD with a multi-scale RBF kernel (Gretton et al., "A kernel two-sample test", JMLR 2012).

    ``k(a, b) = (1/L) sum_l exp(-|a - b|^2 / (2 h_l^2))`` (so ``k(a, a) = 1``) and

        MMD^2 = E k(X, X') + E k(Y, Y') - 2 E k(X, Y).

    Args:
      x, y: samples ``(n, ...)`` and ``(m, ...)``.
      bandwidths: the ``h_l``; the defaults suit data of unit scale in a few dimensions; rescale
        them with the typical distance between points for other data.
      unbiased: U-statistic (the within-set sums skip ``i = j``; unbiased, can be slightly
        negative; needs ``n, m >= 2``) or V-statistic (biased, ``>= 0``, exactly 0 for ``x = y``).
      squared: return ``MMD^2`` (default) or ``sqrt(max(MMD^2, 0))``.
      max_block_elems: memory cap of one block of pairwise differences.
    """
    x, y = _as_sets(x, y)
    h = jnp.asarray(tuple(bandwidths), x.dtype)
    if h.ndim != 1 or h.shape[0] < 1:
        raise ValueError(f"`bandwidths` must be a non-empty sequence, got {bandwidths!r}.")
    if not all(float(b) > 0 for b in bandwidths):
        raise ValueError(f"`bandwidths` must be positive, got {tuple(bandwidths)!r}.")
    n, m = x.shape[0], y.shape[0]
    if unbiased and (n < 2 or m < 2):
        raise ValueError(f"unbiased MMD needs at least 2 samples per set, got {n} and {m}.")
    inv = 1.0 / (2.0 * h**2)

    def kernel(d2: Array) -> Array:
        return jnp.mean(jnp.exp(-d2[..., None] * inv.reshape((1,) * d2.ndim + (-1,))), axis=-1)

    kxx = _pairwise_sum(x, x, kernel, max_block_elems)
    kyy = _pairwise_sum(y, y, kernel, max_block_elems)
    kxy = _pairwise_sum(x, y, kernel, max_block_elems)
    if unbiased:
        # k(a, a) = 1 on the diagonal: remove it exactly.
        val = (kxx - n) / (n * (n - 1)) + (kyy - m) / (m * (m - 1)) - 2 * kxy / (n * m)
    else:
        val = kxx / n**2 + kyy / m**2 - 2 * kxy / (n * m)
    return val if squared else jnp.sqrt(jnp.maximum(val, 0.0))


def energy_distance(
    x: ArrayLike,
    y: ArrayLike,
    *,
    unbiased: bool = False,
    max_block_elems: int = 2**24,
) -> Array:
    """Energy distance ``2 E|X - Y| - E|X - X'| - E|Y - Y'|`` (Szekely & Rizzo, 2013).

    The V-statistic (default) equals the energy distance between the two empirical measures: it
    is ``>= 0``, symmetric, zero iff the multisets coincide, and in 1D equals
    ``2 int (F_n - G_m)^2``. ``unbiased=True`` divides the within-set sums by ``n (n - 1)``
    (U-statistic; can be slightly negative). Its square root is a metric on distributions.
    """
    x, y = _as_sets(x, y)
    n, m = x.shape[0], y.shape[0]
    if unbiased and (n < 2 or m < 2):
        raise ValueError(f"unbiased energy distance needs at least 2 samples per set, got {n} and {m}.")
    dxx = _pairwise_sum(x, x, _safe_sqrt, max_block_elems)
    dyy = _pairwise_sum(y, y, _safe_sqrt, max_block_elems)
    dxy = _pairwise_sum(x, y, _safe_sqrt, max_block_elems)
    if unbiased:
        return 2 * dxy / (n * m) - dxx / (n * (n - 1)) - dyy / (m * (m - 1))
    return 2 * dxy / (n * m) - dxx / n**2 - dyy / m**2


# --------------------------------------------------------------------------------------------
# Exact W2 (ott-jax)
# --------------------------------------------------------------------------------------------
@functools.partial(jax.jit, static_argnums=2)
def _w2_assignment(x: Array, y: Array, size: int) -> Array:
    from ott.geometry import pointcloud
    from ott.tools import unreg

    xr = jnp.repeat(x, size // x.shape[0], axis=0)
    yr = jnp.repeat(y, size // y.shape[0], axis=0)
    _, out = unreg.hungarian(pointcloud.PointCloud(xr, yr))
    i, j = out.paired_indices[0], out.paired_indices[1]
    return jnp.mean(jnp.sum(jnp.square(xr[i] - yr[j]), axis=-1))


def wasserstein2_exact(x: ArrayLike, y: ArrayLike, *, squared: bool = False, max_size: int = 2048) -> Array:
    """Exact ``W2`` between the uniform empirical measures of ``x (n, ...)`` and ``y (m, ...)``.

    ``W2^2 = min_pi sum_ij pi_ij |x_i - y_j|^2`` over couplings with uniform marginals. For
    ``n = m`` a permutation is optimal (Birkhoff), found with ott-jax's Hungarian solver
    (``ott.tools.unreg.hungarian``, optax's JAX implementation, ``O(n^3)``); the cost is then
    recomputed from exact differences. For ``n != m`` both sets are replicated to
    ``lcm(n, m)`` points, which leaves the uniform measures unchanged, so the assignment on the
    replicas is again exact. Meant for small sets: ``lcm(n, m) <= max_size``.
    """
    x, y = _as_sets(x, y)
    n, m = x.shape[0], y.shape[0]
    size = n * m // math.gcd(n, m)
    if size > max_size:
        raise ValueError(
            f"exact W2 solves an assignment of size lcm(n, m) = {size} > max_size = {max_size}; "
            "use sliced_wasserstein for large sets or raise max_size."
        )
    w2 = _w2_assignment(x, y, size)
    return w2 if squared else jnp.sqrt(w2)


# --------------------------------------------------------------------------------------------
# Likelihood
# --------------------------------------------------------------------------------------------
def bits_per_dim(nll_nats: ArrayLike, dims: int, *, bin_width: float | None = None) -> Array:
    """Convert a negative log-likelihood in nats (per example) to bits per dimension.

        bpd = (nll - D log(bin_width)) / (D log 2)

    Args:
      nll_nats: ``-log p(x)`` in nats, a scalar or per-example array, of the model's *continuous*
        density in the space the model sees.
      dims: ``D``, the number of dimensions of one example (e.g. ``H * W * C``).
      bin_width: for discrete data (pixels) evaluated with a continuous (dequantised) density,
        the spacing of the discrete levels in model space, e.g. ``2 / 255`` for 8-bit images
        scaled as ``2 k / 255 - 1``; the correction ``-D log(bin_width)`` turns the density into
        the probability of a bin. ``None``: no correction.

    Example: uniform noise on ``[-1, 1]^D`` has ``nll = D log 2``; with ``bin_width = 2 / 256``
    that is exactly 8 bits per dimension.
    """
    _checks.check_positive_int("dims", dims)
    nll = jnp.asarray(nll_nats)
    if bin_width is not None:
        if not bin_width > 0:
            raise ValueError(f"`bin_width` must be positive, got {bin_width!r}.")
        nll = nll - dims * math.log(bin_width)
    return nll / (dims * math.log(2.0))


# --------------------------------------------------------------------------------------------
# Frechet distance
# --------------------------------------------------------------------------------------------
def _sqrtm_psd(c: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((c + c.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance_from_moments(mu1: ArrayLike, cov1: ArrayLike, mu2: ArrayLike, cov2: ArrayLike) -> float:
    """``|mu1 - mu2|^2 + tr(C1 + C2 - 2 (C1^{1/2} C2 C1^{1/2})^{1/2})``, in float64.

    The squared 2-Wasserstein distance between ``N(mu1, C1)`` and ``N(mu2, C2)``. The cross term
    uses the symmetric PSD matrix ``C1^{1/2} C2 C1^{1/2}`` (same trace of square root as the
    usual ``(C1 C2)^{1/2}``), so only symmetric eigendecompositions are needed: no complex
    parts, negative rounding eigenvalues clipped at 0. A result within rounding of 0 is clipped
    to 0.
    """
    mu1, mu2 = np.asarray(mu1, np.float64).ravel(), np.asarray(mu2, np.float64).ravel()
    c1, c2 = np.atleast_2d(np.asarray(cov1, np.float64)), np.atleast_2d(np.asarray(cov2, np.float64))
    d = mu1.shape[0]
    if mu2.shape != (d,) or c1.shape != (d, d) or c2.shape != (d, d):
        raise ValueError(
            f"moments must be mu (d,), cov (d, d) with one d; got {mu1.shape}, {c1.shape}, {mu2.shape}, {c2.shape}."
        )
    for name, a in (("mu1", mu1), ("cov1", c1), ("mu2", mu2), ("cov2", c2)):
        if not np.all(np.isfinite(a)):
            raise ValueError(f"`{name}` contains NaN or Inf values.")
    s1 = _sqrtm_psd(c1)
    mid = s1 @ c2 @ s1
    eig = np.linalg.eigvalsh((mid + mid.T) / 2)
    tr_sqrt = float(np.sum(np.sqrt(np.clip(eig, 0.0, None))))
    val = float(np.sum((mu1 - mu2) ** 2) + np.trace(c1) + np.trace(c2) - 2.0 * tr_sqrt)
    scale = float(np.trace(c1) + np.trace(c2) + np.sum(mu1**2) + np.sum(mu2**2))
    return max(val, 0.0) if val > -1e-9 * max(scale, 1.0) else val


def frechet_distance(feats_x: ArrayLike, feats_y: ArrayLike) -> float:
    """Frechet distance between Gaussians fitted to two feature sets ``(n, k)`` and ``(m, k)``.

    Means and unbiased (``ddof=1``) covariances in float64, then
    :func:`frechet_distance_from_moments`. This is the FID formula (Heusel et al.,
    arXiv:1706.08500) on whatever features are passed.
    """
    fx = np.asarray(feats_x, np.float64)
    fy = np.asarray(feats_y, np.float64)
    for name, f in (("feats_x", fx), ("feats_y", fy)):
        if f.ndim != 2 or f.shape[0] < 2:
            raise ValueError(f"`{name}` must have shape (n >= 2, k), got {f.shape}.")
    if fx.shape[1] != fy.shape[1]:
        raise ValueError(f"feature widths differ: {fx.shape[1]} and {fy.shape[1]}.")
    return frechet_distance_from_moments(
        fx.mean(0), np.cov(fx, rowvar=False, ddof=1), fy.mean(0), np.cov(fy, rowvar=False, ddof=1)
    )


# --------------------------------------------------------------------------------------------
# Digits Frechet distance (own classifier)
# --------------------------------------------------------------------------------------------
def load_digits_classifier(data_dir: Any = None, *, retrain: bool = False):
    """The project's digits feature network, trained once and cached; see
    :mod:`flowjax._digits_classifier` for the architecture, training recipe and cache layout."""
    from flowjax import _digits_classifier

    return _digits_classifier.load_digits_classifier(data_dir, retrain=retrain)


def digits_features(images: ArrayLike, *, data_dir: Any = None) -> np.ndarray:
    """Penultimate-layer features ``(n, 64)`` of the digits classifier for images in ``[-1, 1]``
    of shape ``(n, 8, 8, 1)``, ``(n, 8, 8)`` or ``(n, 64)``."""
    return load_digits_classifier(data_dir).features(images)


def digits_fd(images_x: ArrayLike, images_y: ArrayLike, *, data_dir: Any = None) -> float:
    """Frechet distance between two sets of 8x8 digit images in the project classifier's features.

    The digits analogue of FID: :func:`frechet_distance` of the 64-dimensional penultimate
    features of :func:`load_digits_classifier` (an MLP the project trains itself on the digits
    train split, deterministic, cached under the data directory). Images must be scaled like
    :func:`flowjax.data.load_digits_arrays` (``[-1, 1]``). Values are comparable only between
    runs that use the same classifier (same config hash).
    """
    clf = load_digits_classifier(data_dir)
    return frechet_distance(clf.features(images_x), clf.features(images_y))


__all__ = [
    "DEFAULT_MMD_BANDWIDTHS",
    "bits_per_dim",
    "digits_fd",
    "digits_features",
    "energy_distance",
    "frechet_distance",
    "frechet_distance_from_moments",
    "load_digits_classifier",
    "mmd",
    "random_directions",
    "sliced_wasserstein",
    "wasserstein2_exact",
]
