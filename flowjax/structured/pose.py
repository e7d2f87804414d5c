"""FMPose3D (Wang, Yu, Mathis, arXiv 2602.05755): 2D→3D pose lifting by conditional flow matching
and Reprojection-based Posterior Expectation Aggregation (RPEA).

Training is plain conditional FM on the linear path with Gaussian source (use
:func:`flowjax.losses.cfm` with ``c = x_2D``): ``L = E ‖v_θ((1−t)x0 + tX, t, c) − (X − x0)‖²``
(paper/code; identical to the project convention). Sampling: H independent ``x0 ~ N(0, I)``,
S Euler steps at ``t_k = k/S`` (:func:`sample_hypotheses`), root joint set to 0. Aggregation
(:func:`rpea`, spec §3.4, read from the official code): per joint ``j`` and hypothesis ``h``

    d_{h,j} = ‖Π(X_{h,j} + root) − c_j‖₂         (unsquared, normalised image units)
    keep the top-k smallest d over h;  w_{h,j} = softmax_h(−d_{h,j}/τ) over the kept, 0 elsewhere
    X̂_j = Σ_h w_{h,j} X_{h,j};  X̂_root = 0.

Guards as in the code: ``d ≤ clamp·τ`` (clamp = 20), root distance 0. The Bayesian reading
(``p(c|X) ∝ exp(−d/τ)`` as a pseudo-likelihood, ``X̂ ≈ E[X | c]``) is the paper's (abstract).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array

from flowjax import _checks, samplers
from flowjax.data.skeleton import project


def zero_root(pose: Array, root_index: int = 0) -> Array:
    """Set the root joint of poses ``(..., J, 3)`` to exactly 0 (the code's output convention)."""
    return pose.at[..., root_index, :].set(0.0)


def sample_hypotheses(
    v_fn: Callable[..., Array],
    key: Array,
    c: Array,
    *,
    num_hypotheses: int,
    steps: int = 3,
    pose_shape: tuple[int, ...],
) -> Array:
    """Draw ``H`` pose hypotheses per condition with ``S`` Euler steps (FMPose3D §3.3).

    ``y ← x0 ~ N(0, I)``; ``y ← y + (1/S) v(y, k/S, c)`` for ``k = 0..S−1``; root set to 0.

    Args:
      v_fn: ``v_fn(y, t, c=c)`` with ``y (N, *pose_shape)``, ``t (N,)``, ``c (N, ...)``.
      key: PRNG key for the H sources.
      c: conditions ``(n, ...)`` (2D keypoints).
      num_hypotheses: H.
      steps: S Euler steps (paper: 3 for humans, 5 for animals).
      pose_shape: shape of one pose, e.g. ``(J, 3)``.
    Returns: hypotheses ``(H, n, *pose_shape)``.
    """
    _checks.check_positive_int("num_hypotheses", num_hypotheses)
    _checks.check_positive_int("steps", steps)
    n = c.shape[0]
    x0 = jax.random.normal(key, (num_hypotheses * n, *pose_shape), c.dtype)
    c_rep = jnp.tile(c, (num_hypotheses,) + (1,) * (c.ndim - 1))
    y = samplers.ode(v_fn, x0, solver="euler", steps=steps, c=c_rep)
    return zero_root(y.reshape(num_hypotheses, n, *pose_shape))


def reprojection_distances(
    hypotheses: Array, keypoints_2d: Array, root: Array, *, project_fn: Callable[[Array], Array] = project,
    root_index: int = 0,
) -> Array:
    """``d_{h,n,j} = ‖Π(X_{h,n,j} + root_n) − c_{n,j}‖₂``; the root joint's distance is 0. Shape (H, n, J)."""
    absolute = hypotheses + root[None, :, None, :]
    d = jnp.linalg.norm(project_fn(absolute) - keypoints_2d[None], axis=-1)
    return d.at[..., root_index].set(0.0)


def rpea_weights(distances: Array, *, tau: float = 0.005, top_k: int = 8, clamp: float | None = 20.0) -> Array:
    """Per-joint RPEA weights over hypotheses (axis 0) from reprojection distances ``(H, ...)``.

    ``softmax_h(−d/τ)`` restricted to the ``k`` smallest distances (ties broken by index);
    ``d`` clamped to ``clamp·τ`` first (code guard; ``None`` disables it). Non-finite → uniform.
    """
    _checks.check_positive_int("top_k", top_k)
    if tau <= 0:
        raise ValueError(f"`tau` must be > 0, got {tau}.")
    h = distances.shape[0]
    k = min(top_k, h)
    d = distances if clamp is None else jnp.minimum(distances, clamp * tau)
    # rank of each hypothesis per joint (0 = smallest distance); keep ranks < k
    order = jnp.argsort(distances, axis=0)
    ranks = jnp.argsort(order, axis=0)
    keep = ranks < k
    logits = jnp.where(keep, -d / tau, -jnp.inf)
    w = jax.nn.softmax(logits, axis=0)
    uniform = keep.astype(w.dtype) / k
    return jnp.where(jnp.all(jnp.isfinite(w), axis=0, keepdims=True), w, uniform)


def rpea(
    hypotheses: Array,
    keypoints_2d: Array,
    root: Array,
    *,
    tau: float = 0.005,
    top_k: int = 8,
    clamp: float | None = 20.0,
    project_fn: Callable[[Array], Array] = project,
    root_index: int = 0,
) -> Array:
    """Reprojection-based Posterior Expectation Aggregation (FMPose3D §3.4; joint-level, as in the code).

    Args:
      hypotheses: root-relative hypotheses ``(H, n, J, 3)``.
      keypoints_2d: the 2D condition ``(n, J, 2)`` in the projection's units.
      root: absolute roots ``(n, 3)`` (ground truth at test time, as in the code).
      tau: temperature τ (test script 0.005; code default 0.002).
      top_k: k hypotheses kept per joint (test script 8; code default 3).
      clamp: distance guard ``d ≤ clamp·τ``.
      project_fn: camera projection ``(..., 3) → (..., 2)``.
    Returns: aggregated poses ``(n, J, 3)`` with the root at 0.
    """
    _checks.check_float_array("hypotheses", hypotheses, ndim=4)
    _checks.check_float_array("keypoints_2d", keypoints_2d, ndim=3)
    _checks.check_float_array("root", root, ndim=2)
    d = reprojection_distances(hypotheses, keypoints_2d, root, project_fn=project_fn, root_index=root_index)
    w = rpea_weights(d, tau=tau, top_k=top_k, clamp=clamp)
    return zero_root(jnp.sum(w[..., None] * hypotheses, axis=0), root_index)


def aggregate_mean(hypotheses: Array) -> Array:
    """Mean of the hypotheses ``(H, n, J, 3)`` → ``(n, J, 3)``."""
    return jnp.mean(hypotheses, axis=0)


def aggregate_argmin(hypotheses: Array, keypoints_2d: Array, root: Array, *, project_fn=project, root_index: int = 0) -> Array:
    """Per-joint hypothesis with the smallest reprojection distance (the τ → 0 limit of RPEA)."""
    d = reprojection_distances(hypotheses, keypoints_2d, root, project_fn=project_fn, root_index=root_index)
    idx = jnp.argmin(d, axis=0)  # (n, J)
    picked = jnp.take_along_axis(hypotheses, idx[None, ..., None], axis=0)[0]
    return zero_root(picked, root_index)


__all__ = [
    "aggregate_argmin",
    "aggregate_mean",
    "reprojection_distances",
    "rpea",
    "rpea_weights",
    "sample_hypotheses",
    "zero_root",
]
