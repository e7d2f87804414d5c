"""Model-predictive control pieces for the Action Flow Matching toy (arXiv 2504.18471; spec action-fm.md).

Everything here is pure JAX so that whole closed-loop runs ``vmap`` over faults and seeds:

- :func:`unicycle_step`: the unicycle with actuator gains (same dynamics as
  :mod:`flowjax.data.unicycle`, in ``jnp``).
- :func:`figure8_waypoints`: the figure-8 course of spec §5 (``x = r sin φ, y = r sin φ cos φ``; the
  exact curve is ours, the spec says only "figure-8 of radius 3").
- :func:`init_ensemble`, :func:`ensemble_delta`, :func:`ensemble_mse`: a dynamics model as an
  ensemble of small MLPs on (heading, action) → Δ(x, y, θ), inputs ``(cos θ, sin θ, v, ω)``. The
  paper's code uses Gaussian MLPs (mbrl-lib); at toy scale we fit the mean by MSE (ours).
- :func:`mppi_plan`: one MPPI iteration with temporally smoothed noise (``β``), a discounted
  distance-to-goal cost (``γ``), and trajectory sampling with one random ensemble member per
  particle (mbrl-lib's "random model" propagation; the exact cost/temperature are ours).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array

from flowjax import _checks

ACTION_LOW = np.array([-1.0, -np.pi / 2], np.float32)
ACTION_HIGH = np.array([1.0, np.pi / 2], np.float32)


def clip_action(a: Array) -> Array:
    """Clip actions ``(..., 2)`` to the box ``v ∈ [−1, 1]``, ``ω ∈ [−π/2, π/2]``."""
    shape = (1,) * (a.ndim - 1) + (2,)
    return jnp.clip(a, ACTION_LOW.reshape(shape), ACTION_HIGH.reshape(shape))


def wrap(a: Array) -> Array:
    """Angle wrapped into ``[−π, π)``."""
    return (a + jnp.pi) % (2 * jnp.pi) - jnp.pi


def unicycle_step(state: Array, action: Array, gains: Array, dt: float = 0.2) -> Array:
    """``x' = x + g_v v cos θ dt``, ``y' = y + g_v v sin θ dt``, ``θ' = wrap(θ + g_ω ω dt)``, batched."""
    v, w = gains[..., 0] * action[..., 0], gains[..., 1] * action[..., 1]
    x, y, th = state[..., 0], state[..., 1], state[..., 2]
    return jnp.stack([x + v * jnp.cos(th) * dt, y + v * jnp.sin(th) * dt, wrap(th + w * dt)], -1)


def state_error(realised: Array, predicted: Array) -> Array:
    """``e = s_realised − s_predicted`` with the heading difference wrapped."""
    e = realised - predicted
    return jnp.concatenate([e[..., :2], wrap(e[..., 2:3])], -1)


def figure8_waypoints(n: int = 40, radius: float = 3.0) -> np.ndarray:
    """``n`` waypoints ``(r sin φ_k, r sin φ_k cos φ_k)``, ``φ_k = 2π(k+1)/n``; the course starts and ends at 0."""
    _checks.check_positive_int("n", n)
    phi = 2 * np.pi * (np.arange(n) + 1) / n
    return np.stack([radius * np.sin(phi), radius * np.sin(phi) * np.cos(phi)], -1)


# --------------------------------------------------------------------------------------------
# Ensemble dynamics model (pure jnp; leading axis = member)
# --------------------------------------------------------------------------------------------
def init_ensemble(key: Array, *, members: int = 5, hidden: int = 64, depth: int = 2) -> list[tuple[Array, Array]]:
    """He-initialised MLP weights ``[(W, b), ...]`` with a leading member axis; output layer zero."""
    sizes = [4] + [hidden] * depth + [3]
    params = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        key, sub = jax.random.split(key)
        last = i == len(sizes) - 2
        w = jnp.zeros((members, a, b)) if last else jax.random.normal(sub, (members, a, b)) * jnp.sqrt(2.0 / a)
        params.append((w, jnp.zeros((members, b))))
    return params


def _features(state: Array, action: Array) -> Array:
    th = state[..., 2]
    return jnp.concatenate([jnp.stack([jnp.cos(th), jnp.sin(th)], -1), action], -1)


def _mlp(member_params, h):
    for i, (w, b) in enumerate(member_params):
        h = h @ w + b[None, :]
        if i < len(member_params) - 1:
            h = jax.nn.silu(h)
    return h


def select_members(params, member: Array):
    """Per-sample weights: sample ``i`` gets member ``member[i]`` (gather once, reuse over a horizon)."""
    return [(w[member], b[member]) for w, b in params]


def ensemble_delta(per_sample_params, state: Array, action: Array) -> Array:
    """Predicted ``Δ(x, y, θ)`` of sample ``i``'s own member (see :func:`select_members`)."""
    return jax.vmap(lambda p, f: _mlp(p, f[None])[0])(per_sample_params, _features(state, action))


def ensemble_mean_delta(params, state: Array, action: Array) -> Array:
    """Mean over members of the predicted ``Δ(x, y, θ)``."""
    f = _features(state, action)
    outs = jax.vmap(lambda *p: _mlp(list(zip(p[::2], p[1::2])), f))(*[a for wb in params for a in wb])
    return outs.mean(0)


def ensemble_mse(params, state: Array, action: Array, delta: Array, weights: Array | None = None) -> Array:
    """Sum over members of each member's (weighted) mean squared error on ``delta``.

    Members are independent, so the sum trains each on its own error. ``weights (n,)`` masks
    samples (e.g. the unfilled slots of an online buffer); the mean is over the weighted samples.
    """
    f = _features(state, action)
    outs = jax.vmap(lambda *p: _mlp(list(zip(p[::2], p[1::2])), f))(*[a for wb in params for a in wb])
    se = jnp.mean((outs - delta[None]) ** 2, axis=-1)  # (members, n)
    if weights is None:
        return jnp.sum(jnp.mean(se, axis=1))
    return jnp.sum(se @ weights) / jnp.maximum(jnp.sum(weights), 1.0)


def predict_next(params, state: Array, action: Array) -> Array:
    """``s + mean Δ`` with the heading wrapped."""
    nxt = state + ensemble_mean_delta(params, state, action)
    return nxt.at[..., 2].set(wrap(nxt[..., 2]))


def transition_delta(state: Array, next_state: Array) -> Array:
    """Training target ``Δ = s' − s`` with the heading difference wrapped."""
    return state_error(next_state, state)


# --------------------------------------------------------------------------------------------
# MPPI
# --------------------------------------------------------------------------------------------
class MPPIConfig(NamedTuple):
    population: int = 256
    horizon: int = 5
    sigma: float = 0.4          # noise std as a fraction of each action's half-range (spec §3.5)
    beta: float = 0.6           # noise smoothing: ε_h ← β ε_h + (1 − β) ε_{h−1} (spec §3.5)
    gamma: float = 0.9          # cost discount over the horizon (spec §3.5)
    temperature: float = 0.05   # softmax temperature on the cost (ours)


def mppi_plan(params, key: Array, state: Array, goal: Array, mean_seq: Array, cfg: MPPIConfig = MPPIConfig()
              ) -> tuple[Array, Array]:
    """One MPPI iteration from ``state (3,)`` toward ``goal (2,)``; returns ``(action (2,), next mean_seq)``.

    ``mean_seq (H, 2)`` is the previous plan; the returned one is shifted by a step (warm start).
    """
    if mean_seq.shape != (cfg.horizon, 2):
        raise ValueError(f"mean_seq must have shape ({cfg.horizon}, 2) (horizon, action); got {mean_seq.shape}.")
    members = params[0][0].shape[0]
    k_eps, k_mem = jax.random.split(key)
    half = jnp.asarray((ACTION_HIGH - ACTION_LOW) / 2).reshape(1, 1, 2)
    eps = jax.random.normal(k_eps, (cfg.population, cfg.horizon, 2)) * cfg.sigma * half

    def smooth(prev, e):
        cur = cfg.beta * e + (1 - cfg.beta) * prev
        return cur, cur

    _, eps = jax.lax.scan(smooth, eps[:, 0], jnp.swapaxes(eps, 0, 1))
    actions = clip_action(mean_seq[None] + jnp.swapaxes(eps, 0, 1))
    per_particle = select_members(params, jax.random.randint(k_mem, (cfg.population,), 0, members))

    def rollout(s, a_h):
        s = s + ensemble_delta(per_particle, s, a_h)
        return s, jnp.linalg.norm(s[:, :2] - goal[None, :], axis=-1)

    s0 = jnp.broadcast_to(state, (cfg.population, 3))
    _, dist = jax.lax.scan(rollout, s0, jnp.swapaxes(actions, 0, 1))
    cost = jnp.sum(dist * (cfg.gamma ** jnp.arange(cfg.horizon))[:, None], axis=0)
    w = jax.nn.softmax(-(cost - cost.min()) / cfg.temperature)
    plan = jnp.einsum("p,phd->hd", w, actions)
    shifted = jnp.concatenate([plan[1:], plan[-1:]], 0)
    return plan[0], shifted


__all__ = [
    "ACTION_HIGH", "ACTION_LOW", "MPPIConfig", "clip_action", "ensemble_delta", "ensemble_mean_delta", "ensemble_mse",
    "figure8_waypoints", "init_ensemble", "mppi_plan", "predict_next", "select_members", "state_error", "transition_delta",
    "unicycle_step", "wrap",
]
