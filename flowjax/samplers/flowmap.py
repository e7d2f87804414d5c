"""Few-step generation with a learned flow map (average velocity), in either time direction.

Project convention (NOTATION.md): ``t = 0`` noise, ``t = 1`` data; an average-velocity model
``u(x, s, t)`` defines the flow map ``X_{s,t}(x) = x + (t - s) u(x, s, t)``. On a time grid
``t_0, t_1, ..., t_k`` the k-step sampler composes these maps,

    x <- x + (t_{i+1} - t_i) u(x, t_i, t_{i+1}),   i = 0, ..., k - 1,

which is the sampler of MeanFlow (Geng et al. 2505.13447), SplitMeanFlow (2507.16884), flow maps
(Boffi et al. 2505.18825), shortcut models (Frans et al. 2410.12557; step ``d = t_{i+1} - t_i``),
SnapFlow (2604.05656) and BiFM (2603.24942). A decreasing grid (``t_0 = 1 > ... > t_k = 0``)
inverts data to noise with the same weights (BiFM's inversion; signed-interval ``u``, so there is
no sign flip). A grid ``t_i = t_{i+1}`` step is the identity.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike

from flowjax import _checks

FlowMapFn = Callable[..., Array]


def _call(u_fn: FlowMapFn, x: Array, s: Array, t: Array, c: Any) -> Array:
    return u_fn(x, s, t) if c is None else u_fn(x, s, t, c=c)


def _time_grid(times: ArrayLike, n: int, dtype) -> Array:
    """``times`` as an array of shape ``(k + 1, n)`` (one grid per sample)."""
    grid = jnp.asarray(times, dtype)
    if grid.ndim == 1:
        grid = jnp.broadcast_to(grid[:, None], (grid.shape[0], n))
    return grid


def validate_times(times: ArrayLike, n: int) -> None:
    """Check a flow-map time grid: shape ``(k+1,)`` or ``(k+1, n)``, k >= 1, values in [0, 1],
    monotone (non-decreasing or non-increasing) along the grid axis."""
    arr = jnp.asarray(times)
    if arr.ndim not in (1, 2):
        raise ValueError(f"`times` must have shape (k+1,) or (k+1, n), got shape {tuple(arr.shape)}.")
    if arr.shape[0] < 2:
        raise ValueError(f"`times` needs at least 2 entries (k >= 1 steps), got shape {tuple(arr.shape)}.")
    if arr.ndim == 2 and arr.shape[1] != n:
        raise ValueError(f"`times` of shape (k+1, n) must have n = {n} columns, got shape {tuple(arr.shape)}.")
    if not jnp.issubdtype(arr.dtype, jnp.floating) and not jnp.issubdtype(arr.dtype, jnp.integer):
        raise TypeError(f"`times` must be numeric, got dtype {arr.dtype}.")
    if not isinstance(arr, jax.core.Tracer):
        vals = np.asarray(arr, dtype=np.float64)
        if not np.all(np.isfinite(vals)):
            raise ValueError("`times` must be finite.")
        if vals.min() < -1e-6 or vals.max() > 1 + 1e-6:
            raise ValueError(f"`times` must lie in [0, 1], got values in [{vals.min():.4g}, {vals.max():.4g}].")
        diffs = np.diff(vals, axis=0)
        if not (np.all(diffs >= 0) or np.all(diffs <= 0)):
            raise ValueError("`times` must be monotone (all non-decreasing or all non-increasing).")


def flowmap(
    u_fn: FlowMapFn,
    x0: Array,
    times: ArrayLike = (0.0, 1.0),
    *,
    c: Any = None,
    return_trajectory: bool = False,
) -> Array:
    """k-step flow-map sampler ``x <- x + (t_{i+1} - t_i) u(x, t_i, t_{i+1})`` (k = NFE).

    Args:
      u_fn: average velocity ``u_fn(x, s, t)`` with ``s, t`` of shape ``(n,)``
        (``u_fn(x, s, t, c=c)`` when ``c`` is given).
      x0: start points ``(n, ...)`` at time ``times[0]`` (noise for generation, data for inversion).
      times: the grid ``t_0, ..., t_k``: shape ``(k+1,)`` shared by all samples or ``(k+1, n)`` per
        sample; monotone in either direction, values in ``[0, 1]``. Default ``(0, 1)``: one step.
      c: condition passed to ``u_fn`` as ``c=``.
      return_trajectory: also return all states, shape ``(k+1, n, ...)``.

    Returns:
      The state at ``times[-1]`` (``(n, ...)``), or the trajectory when ``return_trajectory``.

    Jit-friendly: the steps run in a ``lax.scan``; ``times`` may be traced (then only its shape is
    checked).

    Example:
      >>> import jax.numpy as jnp
      >>> u = lambda x, s, t: jnp.ones_like(x)
      >>> flowmap(u, jnp.zeros((3, 2)), jnp.linspace(0.0, 1.0, 5))  # all ones
    """
    _checks.check_float_array("x0", x0, min_ndim=1)
    n = x0.shape[0]
    validate_times(times, n)
    grid = _time_grid(times, n, x0.dtype)
    expand = (slice(None),) + (None,) * (x0.ndim - 1)

    def step(x, st):
        s, t = st
        x_next = x + (t - s)[expand] * _call(u_fn, x, s, t, c)
        return x_next, x_next

    x_final, traj = jax.lax.scan(step, x0, (grid[:-1], grid[1:]))
    if return_trajectory:
        return jnp.concatenate([x0[None], traj], axis=0)
    return x_final


def uniform_grid(steps: int, *, reverse: bool = False) -> Array:
    """``linspace(0, 1, steps + 1)`` (generation) or its reverse (inversion)."""
    _checks.check_positive_int("steps", steps)
    grid = jnp.linspace(0.0, 1.0, steps + 1)
    return grid[::-1] if reverse else grid





def flowmap_mlp(
    net: Any,
    params: Any,
    x0: Array,
    times: ArrayLike = (0.0, 1.0),
    *,
    c: Array | None = None,
    implementation: str | None = None,
) -> Array:
    """:func:`flowmap` for a :class:`flowjax.nets.MLP` average velocity through the fused rollout
    kernel (``pallas_kernels.rollout``): K steps in one kernel with the weights on chip.

    ``implementation``: ``None`` (Pallas on GPU/TPU, unfused XLA scan on CPU), ``"pallas"``,
    ``"interpret"`` or ``"xla"``. Same result as ``flowmap(bind(net, params), x0, times, c=c)``.
    """
    from pallas_kernels.rollout import MLPSpec, rollout

    _checks.check_float_array("x0", x0, min_ndim=2)
    validate_times(times, x0.shape[0])
    flat = x0.reshape(x0.shape[0], -1)
    out = rollout(params, MLPSpec.from_net(net), flat, times, c=c, implementation=implementation)
    return out.reshape(x0.shape)
__all__ = ["flowmap", "flowmap_mlp", "uniform_grid", "validate_times"]
