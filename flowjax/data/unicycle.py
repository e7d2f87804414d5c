"""Toy unicycle with actuator-gain faults (model mismatch) for Action Flow Matching (spec action-fm.md §5; ours).

True dynamics ``f``: ``x' = x + g_v v cos θ dt``, ``y' = y + g_v v sin θ dt``, ``θ' = wrap(θ + g_ω ω dt)``;
the nominal model ``f̂`` has ``g = (1, 1)``. Actions live in the box ``v ∈ [−1, 1]``,
``ω ∈ [−π/2, π/2]``. :func:`make_afm_pairs` builds AFM training tuples *(derived, not from the
paper)*: ``a_int = clip(a_plan / g)`` (the action that realises the planned transition under ``f``),
and a regime ``e = f(s, a_probe) − f̂(s, a_probe)`` from an independent probe action.
"""

from __future__ import annotations

import numpy as np

DT = 0.2
ACTION_LOW = np.array([-1.0, -np.pi / 2])
ACTION_HIGH = np.array([1.0, np.pi / 2])
PAPER_FAULTS = ((-1, 2), (-2.5, 1), (2.5, 0.05), (1, -1), (1, -0.5), (-1, 1), (-0.5, 1), (2, 2), (-1, -1), (0.1, -1.5), (-0.5, 0.5))


def wrap(a):
    return (a + np.pi) % (2 * np.pi) - np.pi


def step(state: np.ndarray, action: np.ndarray, gains=(1.0, 1.0), dt: float = DT) -> np.ndarray:
    """One step of the unicycle, batched over leading axes: ``state (..., 3)``, ``action (..., 2)``."""
    g = np.asarray(gains, float)
    v, w = g[..., 0] * action[..., 0], g[..., 1] * action[..., 1]
    x, y, th = state[..., 0], state[..., 1], state[..., 2]
    return np.stack([x + v * np.cos(th) * dt, y + v * np.sin(th) * dt, wrap(th + w * dt)], -1)


def state_error(realised: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """``e = s_realised − s_predicted`` with the heading difference wrapped."""
    e = realised - predicted
    return np.concatenate([e[..., :2], wrap(e[..., 2:3])], -1)


def random_gains(rng: np.random.Generator, n: int, low: float = 0.3, high: float = 2.5) -> np.ndarray:
    mag = rng.uniform(low, high, (n, 2))
    return mag * rng.choice([-1.0, 1.0], size=(n, 2))


def make_afm_pairs(rng: np.random.Generator, n: int, gains_set: np.ndarray) -> dict[str, np.ndarray]:
    """``a_plan``, ``a_int = clip(a_plan/g)``, and the regime ``z = [θ, a_plan, a_probe, e]`` per tuple."""
    theta = rng.uniform(-np.pi, np.pi, n)
    a_plan = rng.uniform(ACTION_LOW, ACTION_HIGH, (n, 2))
    a_probe = rng.uniform(ACTION_LOW, ACTION_HIGH, (n, 2))
    g = gains_set[rng.integers(len(gains_set), size=n)]
    s = np.stack([np.zeros(n), np.zeros(n), theta], -1)
    e = state_error(step(s, a_probe, g), step(s, a_probe))
    a_int = np.clip(a_plan / g, ACTION_LOW, ACTION_HIGH)
    z = np.concatenate([theta[:, None], a_plan, a_probe, e], -1)
    return {"a_plan": a_plan, "a_int": a_int, "z": z, "gains": g}


__all__ = ["ACTION_HIGH", "ACTION_LOW", "DT", "PAPER_FAULTS", "make_afm_pairs", "random_gains", "state_error", "step", "wrap"]
