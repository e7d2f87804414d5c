"""Time samplers for training: ``t`` for flow matching and ``(s, t)`` pairs for flow maps.

Every sampler is a pure function ``sampler(key, n) -> t`` of shape ``(n,)`` in project time
(t = 0 noise, t = 1 data), built by a factory so that the choice is a value, not a string.

Conventions that differ between papers are stated per sampler: SD3 (2403.03206) draws its
logit-normal time in *noise-level* time ``1 - t``; ``logit_normal(mean, std)`` here is in project
time, so SD3's ``m`` corresponds to ``mean = -m`` (the default ``m = 0`` is symmetric).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array

TimeSampler = Callable[[Array, int], Array]
PairSampler = Callable[[Array, int], tuple[Array, Array]]


def uniform(low: float = 0.0, high: float = 1.0) -> TimeSampler:
    """``t ~ U[low, high]``."""
    if not (0.0 <= low < high <= 1.0):
        raise ValueError(f"need 0 <= low < high <= 1, got low={low}, high={high}.")

    def sample(key: Array, n: int) -> Array:
        return jax.random.uniform(key, (n,), minval=low, maxval=high)

    return sample


def logit_normal(mean: float = 0.0, std: float = 1.0) -> TimeSampler:
    """``t = sigmoid(z)``, ``z ~ N(mean, std^2)`` (Esser et al. 2403.03206, in project time)."""
    if std <= 0:
        raise ValueError(f"`std` must be positive, got {std}.")

    def sample(key: Array, n: int) -> Array:
        return jax.nn.sigmoid(mean + std * jax.random.normal(key, (n,)))

    return sample


def beta(a: float, b: float) -> TimeSampler:
    """``t ~ Beta(a, b)``. GestureLSM (2501.18898) uses Beta(2, 1.2) in its own time; see its spec.

    Drawn as ``G_a / (G_a + G_b)`` with the two Gamma variates from one ``jax.random.loggamma``
    call over the shapes ``(a,)*n + (b,)*n`` (in log space, so small shapes do not underflow).
    ``jax.random.beta`` makes two such calls; each compiles into a nest of rejection loops, and
    one call halves what a training step that uses this sampler compiles (170 of the 1060 kernels
    of GestureLSM's shortcut step on CPU). Same distribution; a different stream of draws.
    """
    if a <= 0 or b <= 0:
        raise ValueError(f"Beta parameters must be positive, got a={a}, b={b}.")

    def sample(key: Array, n: int) -> Array:
        shapes = jnp.concatenate([jnp.full((n,), float(a)), jnp.full((n,), float(b))])  # default float dtype
        log_gamma = jax.random.loggamma(key, shapes)
        log_a, log_b = log_gamma[:n], log_gamma[n:]
        top = jnp.maximum(log_a, log_b)
        ga, gb = jnp.exp(log_a - top), jnp.exp(log_b - top)
        return ga / (ga + gb)

    return sample


def mode(scale: float = 1.29) -> TimeSampler:
    """SD3's mode sampling with heavy tails (2403.03206, eq. 20), mapped to project time.

    In noise-level time ``f(u) = 1 - u - scale (cos^2(pi u / 2) - 1 + u)``; project time is
    ``1 - f(u)``. ``scale`` must lie in ``[-1, 2/(pi - 2)]`` so that ``f`` is monotone.
    """
    if not (-1.0 <= scale <= 2.0 / (jnp.pi - 2.0)):
        raise ValueError(f"`scale` must lie in [-1, {2.0 / (jnp.pi - 2.0):.4f}], got {scale}.")

    def sample(key: Array, n: int) -> Array:
        u = jax.random.uniform(key, (n,))
        f = 1.0 - u - scale * (jnp.cos(jnp.pi * u / 2.0) ** 2 - 1.0 + u)
        return jnp.clip(1.0 - f, 0.0, 1.0)

    return sample


def shifted(base: TimeSampler, shift: float) -> TimeSampler:
    """SD3 / Flux resolution shift applied to another sampler, in project time.

    In noise-level time ``tau = 1 - t`` the shift is ``tau' = shift tau / (1 + (shift - 1) tau)``;
    ``shift > 1`` moves mass towards noise.
    """
    if shift <= 0:
        raise ValueError(f"`shift` must be positive, got {shift}.")

    def sample(key: Array, n: int) -> Array:
        tau = 1.0 - base(key, n)
        tau = shift * tau / (1.0 + (shift - 1.0) * tau)
        return 1.0 - tau

    return sample


def interval_pairs(base: TimeSampler | None = None, *, equal_fraction: float = 0.75) -> PairSampler:
    """Sample ``(s, t)`` with ``s <= t`` for average-velocity (flow-map) losses.

    Two times are drawn from ``base`` and sorted; with probability ``equal_fraction`` the pair is
    collapsed to ``s = t`` (the flow-matching boundary case). MeanFlow (2505.13447) reports its best
    results with 25% of pairs having ``s != t``, i.e. ``equal_fraction = 0.75``.
    """
    if not (0.0 <= equal_fraction <= 1.0):
        raise ValueError(f"`equal_fraction` must be in [0, 1], got {equal_fraction}.")
    base = base or uniform()

    def sample(key: Array, n: int) -> tuple[Array, Array]:
        ka, kb, kc = jax.random.split(key, 3)
        a, b = base(ka, n), base(kb, n)
        s, t = jnp.minimum(a, b), jnp.maximum(a, b)
        equal = jax.random.uniform(kc, (n,)) < equal_fraction
        s = jnp.where(equal, t, s)
        return s, t

    return sample


def sampler_by_name(name: str, **kwargs) -> TimeSampler:
    """Build a time sampler from a config string."""
    factories = {"uniform": uniform, "logit_normal": logit_normal, "beta": beta, "mode": mode}
    if name not in factories:
        raise ValueError(f"unknown time sampler {name!r}; choose one of {tuple(factories)}.")
    return factories[name](**kwargs)


__all__ = [
    "PairSampler",
    "TimeSampler",
    "beta",
    "interval_pairs",
    "logit_normal",
    "mode",
    "sampler_by_name",
    "shifted",
    "uniform",
]
