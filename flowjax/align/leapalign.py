"""LeapAlign: reward gradients through a two-leap surrogate of the sampling trajectory (arXiv 2604.15311).

Project convention: ``t = 0`` noise, ``t = 1`` data; Euler grid ``0 = t_0 < ... < t_N = 1``. Spec
``leapalign.md`` §3.1. The leap formula and two-step structure are the paper's (notes); the
connectors, the gradient discount and the similarity weights follow a third-party re-implementation
(FlowBP), as the spec records — the official code was not found.

Given a no-grad rollout ``x_0 .. x_N`` and two step indices ``k <= j``:

    xh_j  = x_k + (t_j - t_k) v(x_k, t_k)                 leap 1 (graded)
    xc_j  = xh_j + sg(x_j - xh_j)                         connector: value x_j, gradient of xh_j
    xin_j = alpha xc_j + (1 - alpha) sg(xc_j)             input-Jacobian path scaled by alpha
    xh_1  = xc_j + (1 - t_j) v(xin_j, t_j)                leap 2 to t = 1 (graded)
    xc_1  = xh_1 + sg(x_N - xh_1)                         value = the real final sample

so ``d xc_1 / d theta = (t_j - t_k) dv_k + (1 - t_j) dv_j + alpha (1 - t_j) (dv/dx)_j (t_j - t_k) dv_k``.
``alpha = 0`` is DRTune-style input stop-gradient, ``alpha = 1`` full two-step backprop; ``k = j``
reduces to a single leap from ``x_j`` (ReFL-like). Per-sample similarity weights (stop-gradient)
``w = 1 / (max(d_j, tau) + max(d_1, tau))`` with ``d_j = mean|xh_j - x_j|``, ``d_1 = mean|xh_1 - x_N|``;
loss ``mean_b w_b relu(C - R_b) * s``.

Ours (not the paper's): ``leap="full"`` (exact backprop reference) and an optional velocity-deviation
regulariser (:func:`velocity_deviation`) that gives the spec's toy an interior optimum.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike

from flowjax import _checks

VelocityFn = Callable[[Array, Array], Array]


def _bt(t: Array, x: Array) -> Array:
    return t.reshape(t.shape + (1,) * (x.ndim - t.ndim))


def euler_rollout(v_fn: VelocityFn, x0: Array, times: ArrayLike) -> Array:
    """All Euler states ``(N + 1, n, ...)`` on the grid ``times``."""
    grid = jnp.asarray(times, x0.dtype)
    n = x0.shape[0]

    def step(x, i):
        t = grid[i]
        x_next = x + (grid[i + 1] - t) * v_fn(x, jnp.full((n,), t, x.dtype))
        return x_next, x_next

    _, xs = jax.lax.scan(step, x0, jnp.arange(grid.shape[0] - 1))
    return jnp.concatenate([x0[None], xs], 0)


def sample_leap_indices(key: Array, num_steps: int, batch: int, *, low: int = 0) -> tuple[Array, Array]:
    """Per-sample ``k < j`` drawn uniformly over the distinct pairs of ``{low, ..., num_steps - 1}``."""
    _checks.check_positive_int("num_steps", num_steps)
    m = num_steps - low
    if m < 2:
        raise ValueError(f"need at least two candidate steps, got range [{low}, {num_steps}).")
    pairs = np.array([(a, b) for a in range(low, num_steps) for b in range(a + 1, num_steps)], np.int32)
    idx = jax.random.randint(key, (batch,), 0, pairs.shape[0])
    p = jnp.asarray(pairs)[idx]
    return p[:, 0], p[:, 1]


def two_leap(
    v_fn: VelocityFn,
    xs: Array,
    times: ArrayLike,
    k: Array,
    j: Array,
    *,
    alpha: float = 0.3,
) -> tuple[Array, dict[str, Array]]:
    """The two-leap surrogate ``xc_1`` (value = ``xs[-1]``) and the leap errors ``d_j, d_1`` per sample.

    Args:
      v_fn: graded velocity ``v(x, t)`` with per-sample ``t`` ``(n,)``.
      xs: the (no-grad) rollout ``(N + 1, n, ...)``.
      times: its grid ``(N + 1,)``.
      k, j: per-sample step indices ``(n,)``, ``0 <= k <= j <= N - 1``.
      alpha: discount of the nested input path of the second call.
    """
    xs = jax.lax.stop_gradient(xs)
    grid = jnp.asarray(times, xs.dtype)
    n = xs.shape[1]
    ar = jnp.arange(n)
    x_k, x_j, x_n = xs[k, ar], xs[j, ar], xs[-1]
    t_k, t_j = grid[k], grid[j]
    axes = tuple(range(1, x_k.ndim))
    xh_j = x_k + _bt(t_j - t_k, x_k) * v_fn(x_k, t_k)
    xc_j = xh_j + jax.lax.stop_gradient(x_j - xh_j)  # connector (spec §3.1)
    xin_j = alpha * xc_j + (1.0 - alpha) * jax.lax.stop_gradient(xc_j)  # discounted input path
    xh_1 = xc_j + _bt(1.0 - t_j, x_k) * v_fn(xin_j, t_j)
    xc_1 = xh_1 + jax.lax.stop_gradient(x_n - xh_1)  # connector to the real final sample
    d_j = jax.lax.stop_gradient(jnp.mean(jnp.abs(xh_j - x_j), axis=axes))
    d_1 = jax.lax.stop_gradient(jnp.mean(jnp.abs(xh_1 - x_n), axis=axes))
    return xc_1, {"d_j": d_j, "d_1": d_1}


def similarity_weights(d_j: Array, d_1: Array, *, tau: float = 0.1) -> Array:
    """``1 / (max(d_j, tau) + max(d_1, tau))`` (stop-gradient)."""
    return jax.lax.stop_gradient(1.0 / (jnp.maximum(d_j, tau) + jnp.maximum(d_1, tau)))


def velocity_deviation(v_fn: VelocityFn, ref_fn: VelocityFn, key: Array, xs: Array, times: ArrayLike) -> Array:
    """Per-sample one-step estimate of ``sum_i (t_{i+1} - t_i) ||v(x_i, t_i) - v_ref(x_i, t_i)||^2`` (ours).

    Not in the paper or the re-implementation: a KL-like regulariser for the spec's toy (for an SDE with
    unit diffusion and these drifts, Girsanov's path KL is half this integral). One step ``i`` is drawn per
    sample with probability ``(t_{i+1} - t_i)`` (uniform on a uniform grid), so the estimate is unbiased,
    is evaluated on the stop-gradient rollout states ``xs`` (no graph through the trajectory) and costs one
    graded call per sample. ``ref_fn`` is the frozen pretrained field (its output is stop-gradient).

    Args:
      v_fn, ref_fn: ``v(x, t)`` with per-sample ``t`` ``(n,)``.
      key: draws the step per sample.
      xs: the rollout ``(N + 1, n, ...)`` (stop-gradient applied here).
      times: its grid ``(N + 1,)``.

    Returns:
      ``(n,)`` per-sample estimates.
    """
    xs = jax.lax.stop_gradient(xs)
    grid = jnp.asarray(times, xs.dtype)
    n = xs.shape[1]
    dt = grid[1:] - grid[:-1]
    i = jax.random.choice(key, dt.shape[0], (n,), p=dt / jnp.sum(dt))
    x_i, t_i = xs[i, jnp.arange(n)], grid[i]
    dv = v_fn(x_i, t_i) - jax.lax.stop_gradient(ref_fn(x_i, t_i))
    return jnp.sum(dv**2, axis=tuple(range(1, dv.ndim))) * jnp.sum(dt)


def leapalign_loss(
    v_fn: VelocityFn,
    key: Array | None,
    x0: Array,
    *,
    reward_fn: Callable[[Array], Array],
    times: ArrayLike,
    alpha: float = 0.3,
    tau: float = 0.1,
    ceiling: float = 0.55,
    scale: float = 1.0,
    weighting: bool = True,
    leap: str = "two",
    ref_fn: VelocityFn | None = None,
    kl_weight: float = 0.0,
) -> tuple[Array, dict[str, Array]]:
    """LeapAlign loss ``mean_b w_b [relu(C - R(xc_1)_b) s + lambda D_b]`` for one batch of noises ``x0``.

    ``leap="two"`` draws ``k < j`` per sample (spec §3.1, the paper's method); ``leap="last"`` uses
    ``k = j = N - 1`` (ReFL-like last-step baseline); ``leap="full"`` backpropagates through the whole
    Euler rollout (exact gradient, the spec's reference (a); feasible at toy scale only; ``w_b = 1``
    unless ``weighting``, whose leap errors are then zero). For "two"/"last" the rollout is made with
    stop-gradient states (no graph kept). With ``kl_weight = lambda > 0`` and a frozen ``ref_fn``, ``D_b``
    is :func:`velocity_deviation` (ours, not the paper's); the similarity weight multiplies the whole
    per-sample objective, so it rescales samples without changing the reward/regulariser trade-off.

    Args:
      v_fn: graded velocity ``v(x, t)``.
      key: draws the leap indices (``"two"``) and the regulariser's step; may be ``None`` when neither
        is used.
      x0: noises ``(n, ...)``.
      reward_fn: ``(n, ...) -> (n,)``.
      times: the Euler grid ``(N + 1,)`` from 0 to 1.
      alpha, tau, ceiling (C), scale (s): spec §3.1 (re-impl defaults 0.3, 0.1, 0.55, 1.0).

    Returns:
      ``(loss, aux)``; aux holds the batch means of the reward (of the real final samples), the weight,
      ``d_j``, ``d_1`` and the regulariser ``D``.
    """
    _checks.check_float_array("x0", x0, min_ndim=1)
    _checks.check_choice("leap", leap, ("two", "last", "full"))
    if kl_weight < 0:
        raise ValueError(f"kl_weight must be >= 0, got {kl_weight}.")
    if kl_weight > 0 and ref_fn is None:
        raise ValueError("kl_weight > 0 needs the reference field ref_fn.")
    needs_key = leap == "two" or kl_weight > 0
    if needs_key and key is None:
        raise ValueError(f"leap={leap!r} with kl_weight={kl_weight} needs a PRNG key.")
    grid = np.asarray(times, np.float64)
    n_steps = grid.size - 1
    n = x0.shape[0]
    k_pair, k_reg = jax.random.split(key) if needs_key else (None, None)
    if leap == "full":
        xs_graded = euler_rollout(v_fn, x0, grid)
        xs = jax.lax.stop_gradient(xs_graded)
        xc_1 = xs_graded[-1]
        zero = jnp.zeros((n,), x0.dtype)
        aux = {"d_j": zero, "d_1": zero}
    else:
        xs = jax.lax.stop_gradient(euler_rollout(v_fn, x0, grid))
        if leap == "two":
            k, j = sample_leap_indices(k_pair, n_steps, n)
        else:
            k = j = jnp.full((n,), n_steps - 1, jnp.int32)
        xc_1, aux = two_leap(v_fn, xs, grid, k, j, alpha=alpha)
    r = reward_fn(xc_1)
    w = similarity_weights(aux["d_j"], aux["d_1"], tau=tau) if weighting else jnp.ones_like(r)
    dev = velocity_deviation(v_fn, ref_fn, k_reg, xs, grid) if kl_weight > 0 else jnp.zeros_like(r)
    loss = jnp.mean(w * (jax.nn.relu(ceiling - r) * scale + kl_weight * dev))
    return loss, {"reward": jnp.mean(r), "weight": jnp.mean(w), "d_j": jnp.mean(aux["d_j"]), "d_1": jnp.mean(aux["d_1"]),
                  "deviation": jnp.mean(dev)}
