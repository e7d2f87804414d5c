"""BOSS: Bellman-optimal step sizes for a step budget (Nguyen et al. 2312.16414, ICLR 2024).

Read from the official code (``sampling.py: get_bellman_disc``), spec ``boss.md`` §3.1-3.3, in
project time (identical to the Rectified-Flow code's: t = 0 noise, t = 1 data).

1. Fine reference: Euler with the pretrained ``v`` on ``Kmax + 1`` uniform times
   ``tau_0 < ... < tau_Kmax`` on ``[t_start, t_end]`` from ``n`` noises:
   ``xh_{i+1} = xh_i + (tau_{i+1} - tau_i) v_i``, ``v_i = v(xh_i, tau_i)``.
2. Cost of one jump ``i -> j`` (i < j), squared L2 summed over pixels, averaged over samples:
   ``c_ij = (1/n) sum_m || xh_i + (tau_j - tau_i) v_i - xh_j ||^2`` (so ``c_{i,i+1} = 0``).
3. Dynamic program for exactly ``K`` jumps from node 0 to node ``Kmax``:
   ``J_1(i) = c_{i,Kmax}``, ``J_k(i) = min_{i<j<Kmax} [c_ij + J_{k-1}(j)]``; optimum ``J_K(0)``;
   backtrack from node 0 taking the first minimising ``j`` (we store argmins, as the spec's pitfall
   advises, instead of re-testing float equality).
4. The Bellman times ``tau_{i_k}`` are a grid for any sampler:
   ``flowjax.samplers.ode(v, x0, solver="euler", times=grid)``; the straightening fine-tune
   (:func:`flowjax.losses.boss_straightening`) trains on pairs from :func:`straightening_pairs`.

Caveat (derived, not from the paper): the objective sums *local* one-jump errors from reference
states; it is not the global error of the K-step sampler.
"""

from __future__ import annotations

import itertools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array

from flowjax import _checks


def _call(fn, x, t, c):
    tt = jnp.full((x.shape[0],), t, x.dtype)
    return fn(x, tt) if c is None else fn(x, tt, c=c)


def euler_trajectory(v_fn: Callable[..., Array], x0: Array, times: Any, *, c: Any = None) -> tuple[Array, Array]:
    """Euler states ``(len(times), n, ...)`` and velocities ``(len(times) - 1, n, ...)`` on a grid."""
    _checks.check_float_array("x0", x0, min_ndim=1)
    times = jnp.asarray(times, x0.dtype)

    def body(x, tt):
        v = _call(v_fn, x, tt[0], c)
        return x + (tt[1] - tt[0]) * v, (x, v)

    x_end, (xs, vs) = jax.lax.scan(body, x0, jnp.stack([times[:-1], times[1:]], axis=1))
    return jnp.concatenate([xs, x_end[None]], axis=0), vs


def fine_times(kmax: int = 100, t_start: float = 0.0, t_end: float = 1.0) -> np.ndarray:
    """The uniform fine grid ``tau_0..tau_Kmax`` (the RF code uses ``t_start = 1e-3``)."""
    _checks.check_positive_int("kmax", kmax)
    _checks.check_time("t_start", t_start)
    _checks.check_time("t_end", t_end)
    if not t_start < t_end:
        raise ValueError(f"need t_start < t_end, got {t_start} and {t_end}.")
    return np.linspace(t_start, t_end, kmax + 1)


def cost_from_trajectory(states: Array, velocities: Array, times: Any) -> Array:
    """``c_ij`` from a fine Euler trajectory (``inf`` where ``j <= i``); see the module docstring."""
    times = jnp.asarray(times, states.dtype)
    n_nodes = states.shape[0]
    flat_x = states.reshape(n_nodes, states.shape[1], -1)
    flat_v = velocities.reshape(n_nodes - 1, states.shape[1], -1)

    def row(i):
        xi = flat_x[i]
        vi = flat_v[jnp.minimum(i, n_nodes - 2)]
        dt = times - times[i]  # (n_nodes,)
        pred = xi[None] + dt[:, None, None] * vi[None]
        err = jnp.sum((pred - flat_x) ** 2, axis=-1)  # (n_nodes, n): summed over pixels
        return jnp.mean(err, axis=-1)

    c = jax.lax.map(row, jnp.arange(n_nodes))
    upper = jnp.arange(n_nodes)[None, :] > jnp.arange(n_nodes)[:, None]
    return jnp.where(upper, c, jnp.inf)


def cost_matrix(
    v_fn: Callable[..., Array],
    x0: Array,
    *,
    kmax: int = 100,
    t_start: float = 0.0,
    t_end: float = 1.0,
    c: Any = None,
) -> tuple[Array, np.ndarray]:
    """BOSS cost matrix ``C`` (``(Kmax+1, Kmax+1)``, ``inf`` on and below the diagonal) and the fine times.

    ``x0``: the ``n`` noises of the reference trajectories (the paper uses ``n = 100``).
    """
    times = fine_times(kmax, t_start, t_end)
    states, velocities = euler_trajectory(v_fn, x0, times, c=c)
    return cost_from_trajectory(states, velocities, times), times


def bellman_path(cost: Any, steps: int) -> tuple[np.ndarray, float]:
    """Exactly ``steps`` jumps from node 0 to node ``Kmax`` minimising the summed cost (the BOSS DP).

    Returns ``(indices, total_cost)`` with ``indices`` strictly increasing, ``indices[0] = 0``,
    ``indices[-1] = Kmax`` and ``len(indices) = steps + 1``.
    """
    cost = np.asarray(cost, dtype=np.float64)
    if cost.ndim != 2 or cost.shape[0] != cost.shape[1]:
        raise ValueError(f"`cost` must be a square matrix, got shape {cost.shape}.")
    kmax = cost.shape[0] - 1
    _checks.check_positive_int("steps", steps)
    if steps > kmax:
        raise ValueError(f"`steps` ({steps}) cannot exceed Kmax ({kmax}) nodes of the fine grid.")
    if steps == kmax:
        idx = np.arange(kmax + 1)
        return idx, float(sum(cost[i, i + 1] for i in range(kmax)))
    upper = np.triu(np.ones_like(cost, dtype=bool), k=1)
    c = np.where(upper, cost, np.inf)
    j_prev = c[:, kmax].copy()  # J_1(i) = c_{i, Kmax}
    j_prev[kmax] = np.inf
    argmins = []
    for _ in range(2, steps + 1):
        # J_k(i) = min_{i < j < Kmax} c_ij + J_{k-1}(j)
        total = c[:, :kmax] + j_prev[None, :kmax]
        arg = np.argmin(total, axis=1)  # first minimiser, as the code's backtracking
        j_new = total[np.arange(kmax + 1), arg]
        argmins.append(arg)
        j_prev = j_new
    path = [0]
    for arg in reversed(argmins):
        path.append(int(arg[path[-1]]))
    path.append(kmax)
    idx = np.asarray(path)
    if not np.all(np.diff(idx) > 0):
        raise ValueError("no feasible path: the cost matrix has no finite path with this many steps.")
    return idx, float(j_prev[0])


def brute_force_path(cost: Any, steps: int) -> tuple[np.ndarray, float]:
    """Exhaustive search over all ``C(Kmax - 1, steps - 1)`` paths (for tests and tiny grids)."""
    cost = np.asarray(cost, dtype=np.float64)
    kmax = cost.shape[0] - 1
    best, best_idx = np.inf, None
    for inner in itertools.combinations(range(1, kmax), steps - 1):
        idx = (0,) + inner + (kmax,)
        total = sum(cost[a, b] for a, b in zip(idx[:-1], idx[1:]))
        if total < best:
            best, best_idx = total, idx
    return np.asarray(best_idx), float(best)


def bellman_times(
    v_fn: Callable[..., Array],
    x0: Array,
    *,
    steps: int,
    kmax: int = 100,
    t_start: float = 0.0,
    t_end: float = 1.0,
    c: Any = None,
) -> np.ndarray:
    """The BOSS time grid (``steps + 1`` times) for a budget of ``steps`` Euler steps.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from flowjax.samplers import ode
      >>> v = lambda x, t: -x
      >>> grid = bellman_times(v, jnp.ones((8, 2)), steps=3, kmax=20)
      >>> x1 = ode(v, jnp.ones((8, 2)), solver="euler", times=grid)
    """
    cost, times = cost_matrix(v_fn, x0, kmax=kmax, t_start=t_start, t_end=t_end, c=c)
    idx, _ = bellman_path(cost, steps)
    return times[idx]


def straightening_pairs(
    v_fn: Callable[..., Array],
    x0: Array,
    *,
    path_indices: Any,
    kmax: int = 100,
    t_start: float = 0.0,
    t_end: float = 1.0,
    c: Any = None,
) -> dict[str, Array]:
    """Training pairs of the BOSS fine-tune (spec §3.3): for each noise the fine Euler trajectory and
    consecutive states on the Bellman path, ``(x_a, x_b, t_a, t_b) = (xh_{i_k}, xh_{i_{k+1}}, tau_{i_k}, tau_{i_{k+1}})``.

    Returns a dict of arrays flattened over (step, noise): ``x_a, x_b`` of shape ``(K n, ...)``,
    ``t_a, t_b`` of shape ``(K n,)``.
    """
    times = fine_times(kmax, t_start, t_end)
    idx = np.asarray(path_indices)
    states, _ = euler_trajectory(v_fn, x0, times, c=c)
    sel = states[idx]  # (K + 1, n, ...)
    n = x0.shape[0]
    k = len(idx) - 1
    t_sel = jnp.asarray(times[idx], x0.dtype)
    return {
        "x_a": sel[:-1].reshape((k * n,) + x0.shape[1:]),
        "x_b": sel[1:].reshape((k * n,) + x0.shape[1:]),
        "t_a": jnp.repeat(t_sel[:-1], n),
        "t_b": jnp.repeat(t_sel[1:], n),
    }


__all__ = [
    "bellman_path",
    "bellman_times",
    "brute_force_path",
    "cost_from_trajectory",
    "cost_matrix",
    "euler_trajectory",
    "fine_times",
    "straightening_pairs",
]
