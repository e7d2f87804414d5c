"""VeCoR: Velocity Contrastive Regularization for flow matching (Hong et al., arXiv 2511.18942).

Regress onto the usual target ``v_+ = x1 - x0`` and push away from K negative velocities that share
``x0`` and ``t`` (project notation, linear path):

    L = E [ || v_theta(x_t, t) - v_+ ||^2 - lambda sum_{j=1..K} || v_theta(x_t, t) - v_-^(j) ||^2 ],

with per-element means (``mean_flat``). Defaults (paper, via the spec): lambda = 0.05, K = 1, negatives
by random channel shuffle (RCS) of ``v_+``: ``v_- = P_pi v_+``, one uniformly random channel
permutation per sample shared by every spatial position. ``K lambda < 1`` is required (otherwise the
loss is unbounded below).

Derived (spec vecor.md, not from the paper): the single-target form
``||v - v_+||^2 - lambda sum_j ||v - v_-^j||^2 = (1 - K lambda) ||v - y||^2 + const`` with
``y = (v_+ - lambda sum_j v_-^j)/(1 - K lambda)``; the population optimum for uniform RCS,
``v* = (I - K lambda Pbar) v_FM / (1 - K lambda)`` (``Pbar`` = channel mean), and its exact inverse used
at sampling time, ``v_corr = (1 - K lambda) v + K lambda Pbar v`` (:func:`vecor_correction`); for
derangements (no identity permutation) ``v_corr = Pbar v + gamma (I - Pbar) v`` with
``gamma = (1 - K lambda)(C - 1)/(C - 1 + K lambda)``. ``negatives="batch"`` is Delta-FM's
(2506.05350) other-sample target ``x1' - x0'``; ``"noise"`` is ``v_+ + noise_std * eta``.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array

from flowjax import _checks
from flowjax.losses.cfm import call_with_condition, mean_squared
from flowjax.paths import broadcast_time
from flowjax.timesteps import TimeSampler, uniform

NEGATIVES = ("channel_shuffle", "batch", "noise")


def _check_lam(lam: float, num_negatives: int) -> None:
    if lam < 0:
        raise ValueError(f"`lam` must be >= 0, got {lam}.")
    if not isinstance(num_negatives, int) or num_negatives < 0:
        raise ValueError(f"`num_negatives` must be a non-negative int, got {num_negatives!r}.")
    if num_negatives * lam >= 1:
        raise ValueError(f"need num_negatives * lam < 1 (the loss is unbounded below otherwise), got {num_negatives} * {lam}.")


def random_channel_permutations(key: Array, n: int, channels: int, *, derangement: bool = False) -> Array:
    """``(n, C)`` permutations, uniform over all C! (or over derangements, by rejection-free resampling)."""
    if not derangement:
        return jnp.argsort(jax.random.uniform(key, (n, channels)), axis=-1)

    def draw(k):
        def cond(state):
            return jnp.any(state[1] == jnp.arange(channels))

        def body(state):
            kk, _ = state
            kk, sub = jax.random.split(kk)
            return kk, jax.random.permutation(sub, channels)

        k, sub = jax.random.split(k)
        return jax.lax.while_loop(cond, body, (k, jax.random.permutation(sub, channels)))[1]

    return jax.vmap(draw)(jax.random.split(key, n))


def channel_shuffle(v: Array, perms: Array, *, channel_axis: int = -1) -> Array:
    """Apply one channel permutation per sample: ``out[i, ..., c] = v[i, ..., perms[i, c]]`` (same at every position)."""
    vm = jnp.moveaxis(v, channel_axis, -1)
    idx = perms.reshape((perms.shape[0],) + (1,) * (vm.ndim - 2) + (perms.shape[1],))
    out = jnp.take_along_axis(vm, jnp.broadcast_to(idx, vm.shape), axis=-1)
    return jnp.moveaxis(out, -1, channel_axis)


def channel_mean(v: Array, *, channel_axis: int = -1) -> Array:
    """``Pbar v``: every channel replaced by the channel mean at that position."""
    return jnp.broadcast_to(jnp.mean(v, axis=channel_axis, keepdims=True), v.shape)


def vecor_target(v_pos: Array, v_negs: Array, *, lam: float) -> Array:
    """The equivalent single target ``y = (v_+ - lam sum_j v_-^j) / (1 - K lam)``; ``v_negs`` is ``(K, n, ...)``."""
    k = v_negs.shape[0]
    return (v_pos - lam * jnp.sum(v_negs, 0)) / (1.0 - k * lam)


def vecor_correction(v: Array, *, lam: float = 0.05, num_negatives: int = 1, channel_axis: int = -1,
                     derangement: bool = False) -> Array:
    """Sampling-time correction of a VeCoR-trained field back to the FM field (derived; see module doc)."""
    _check_lam(lam, num_negatives)
    kl = num_negatives * lam
    pbar = channel_mean(v, channel_axis=channel_axis)
    if not derangement:
        return (1.0 - kl) * v + kl * pbar
    c = v.shape[channel_axis]
    gamma = (1.0 - kl) * (c - 1) / (c - 1 + kl)
    return pbar + gamma * (v - pbar)


def vecor(
    v_fn: Callable[..., Array],
    key: Array,
    x1: Array,
    *,
    lam: float = 0.05,
    num_negatives: int = 1,
    negatives: str = "channel_shuffle",
    channel_axis: int = -1,
    derangement: bool = False,
    noise_std: float = 1.0,
    time_sampler: TimeSampler | None = None,
    c: Any = None,
) -> tuple[Array, dict[str, Array]]:
    """VeCoR loss (2511.18942): FM minus lambda times the error to K negatives sharing ``x0`` and ``t``.

    Args:
      v_fn: velocity model.
      key: PRNG key.
      x1: data ``(n, ...)`` with a channel axis (``channel_axis``, default last) for RCS.
      lam: lambda (paper 0.05); ``num_negatives * lam < 1`` is enforced.
      num_negatives: K (paper 1).
      negatives: ``"channel_shuffle"`` (RCS, default), ``"batch"`` (Delta-FM: another sample's
        ``x1' - x0'``) or ``"noise"`` (``v_+ + noise_std * eta``).
      channel_axis: the channel axis for RCS.
      derangement: draw RCS permutations without fixed points (changes the sampling correction).
      time_sampler: default ``U[0, 1]``.
      c: condition.

    Returns:
      ``(loss, {"mse_pos", "mse_neg"})``. The targets depend on data only (no gradient).
    """
    _checks.check_float_array("x1", x1, min_ndim=2 if negatives == "channel_shuffle" else 1)
    _checks.check_choice("negatives", negatives, NEGATIVES)
    _check_lam(lam, num_negatives)
    time_sampler = time_sampler or uniform()
    n = x1.shape[0]
    k0, kt, kn = jax.random.split(key, 3)
    x0 = jax.random.normal(k0, x1.shape, x1.dtype)
    t = time_sampler(kt, n).astype(x1.dtype)
    tb = broadcast_time(t, x1)
    x_t = tb * x1 + (1.0 - tb) * x0  # the input is built from the positive pair only
    v_pos = x1 - x0
    pred = call_with_condition(v_fn, x_t, t, c=c)
    mse_pos = mean_squared(pred - v_pos)
    loss = jnp.mean(mse_pos)
    aux = {"mse_pos": loss, "mse_neg": jnp.zeros_like(loss)}
    if num_negatives == 0 or lam == 0:
        return loss, aux
    keys = jax.random.split(kn, num_negatives)
    negs = []
    for kk in keys:
        if negatives == "channel_shuffle":
            perms = random_channel_permutations(kk, n, x1.shape[channel_axis], derangement=derangement)
            negs.append(channel_shuffle(v_pos, perms, channel_axis=channel_axis))
        elif negatives == "batch":
            shift = jax.random.randint(kk, (), 1, max(n, 2))
            negs.append(jnp.roll(v_pos, shift, axis=0))
        else:
            negs.append(v_pos + noise_std * jax.random.normal(kk, v_pos.shape, v_pos.dtype))
    negs = jax.lax.stop_gradient(jnp.stack(negs))  # targets carry no gradient
    mse_neg = jnp.mean(jax.vmap(lambda vn: mean_squared(pred - vn))(negs), axis=1)  # (K,)
    loss = loss - lam * jnp.sum(mse_neg)
    aux["mse_neg"] = jnp.mean(mse_neg)
    return loss, aux


__all__ = [
    "channel_mean",
    "channel_shuffle",
    "random_channel_permutations",
    "vecor",
    "vecor_correction",
    "vecor_target",
]
