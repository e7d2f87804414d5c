"""PAFM: Posterior Augmented Flow Matching (Stoica et al., arXiv 2605.00825).

Replace the single conditional target ``v(x_t | x1_i) = (x1_i - x_t)/(1 - t)`` by a self-normalised
importance-sampling average over K candidate endpoints ``x1_j`` (the example's own ``x1_i`` is
candidate 0), weighted by the Gaussian path likelihood times a condition factor. Project time
(the paper's ``z_t = (1-t) z + t eps`` maps by ``t -> 1 - t``):

    log w~_j = -|| x_t - t x1_j ||^2 / (2 (1 - t)^2) + log p(c_i | x1_j)        [- log q(x1_j)]
    w = softmax_j(log w~),   v_bar = sum_j w_j (x1_j - x_t) / (1 - t),
    L = E || v_theta(x_t, t, c) - stopgrad(v_bar) ||^2.

For class labels ``p(c_i | x1_j) = 1[c_j = c_i]``. With the self candidate and the others drawn i.i.d.
from the (class-conditional) data, ``E[v_bar | x_t]`` is exactly the marginal velocity for every K
(sampling-importance-resampling started from one posterior draw); K = 1 is plain FM.

What is the paper's and what is ours (full text not available; spec pafm.md): the objective, the
likelihood weights, the class factor, SNIS and the candidate strategies are the paper's (as
reported); the in-batch candidate selection rules here (``"nearest"`` as the spec's pseudocode,
``"random"`` the unbiased choice), the clamp ``1 - t >= 1e-3``, the full (not per-dimension-averaged)
likelihood and temperature 1 are the spec's derived defaults.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array

from flowjax import _checks
from flowjax.losses.cfm import call_with_condition, labels_for_coupling, mean_squared
from flowjax.paths import broadcast_time
from flowjax.timesteps import TimeSampler, uniform

SELECTIONS = ("nearest", "random")


def pafm_weights(x_t: Array, t: Array, candidates: Array, *, mask: Array | None = None,
                 log_correction: Array | None = None, min_gap: float = 1e-3) -> Array:
    """SNIS weights ``(n, K)`` of candidates ``(n, K, ...)`` for points ``x_t (n, ...)`` at times ``t (n,)``.

    ``mask`` (n, K) bool: False gives weight exactly 0 (e.g. another class); ``log_correction`` is
    added to the logits (e.g. ``-log q`` of a non-data proposal). Computed in float32 or wider.
    """
    n = x_t.shape[0]
    gap = jnp.maximum(1.0 - t, min_gap).reshape(n, 1)
    diff = (x_t[:, None] - t.reshape((n, 1) + (1,) * (x_t.ndim - 1)) * candidates).reshape(n, candidates.shape[1], -1)
    logits = -jnp.sum(diff**2, -1) / (2.0 * gap**2)
    if log_correction is not None:
        logits = logits + log_correction
    if mask is not None:
        logits = jnp.where(mask, logits, -jnp.inf)
    return jax.nn.softmax(logits, axis=-1)


def pafm_target(x_t: Array, t: Array, candidates: Array, *, mask: Array | None = None,
                log_correction: Array | None = None, min_gap: float = 1e-3) -> tuple[Array, Array]:
    """The mixture target ``v_bar = sum_j w_j (x1_j - x_t) / (1 - t)`` and the weights; see module doc."""
    w = pafm_weights(x_t, t, candidates, mask=mask, log_correction=log_correction, min_gap=min_gap)
    n = x_t.shape[0]
    mean_x1 = jnp.einsum("nk,nkd->nd", w, candidates.reshape(n, candidates.shape[1], -1)).reshape(x_t.shape)
    gap = broadcast_time(jnp.maximum(1.0 - t, min_gap), x_t)
    return (mean_x1 - x_t) / gap, w


def in_batch_candidates(key: Array, x1: Array, num: int, *, labels: Array | None = None,
                        selection: str = "nearest") -> tuple[Array, Array]:
    """Candidate indices ``(n, num)`` into the batch, self first, and a same-class mask ``(n, num)``.

    ``"nearest"``: self + the ``num - 1`` nearest other items by ``||x1_i - x1_j||`` (same class first
    when labels are given; the spec's pseudocode; a biased proposal). ``"random"``: self + random
    other items (same class when labelled); random same-class items are draws from the class-
    conditional data, which keeps the target unbiased. If fewer same-class items exist, the mask
    switches the others off.
    """
    _checks.check_choice("selection", selection, SELECTIONS)
    n = x1.shape[0]
    if not 1 <= num <= n:
        raise ValueError(f"`num` candidates must lie in [1, batch={n}], got {num}.")
    flat = x1.reshape(n, -1)
    same = jnp.ones((n, n), bool) if labels is None else labels[:, None] == labels[None, :]
    if selection == "nearest":
        d2 = jnp.sum(flat**2, 1)[:, None] + jnp.sum(flat**2, 1)[None, :] - 2.0 * flat @ flat.T
        score = -d2
    else:
        score = jax.random.uniform(key, (n, n))
    score = jnp.where(same, score, score - 1e30)  # other classes last
    score = jnp.where(jnp.eye(n, dtype=bool), jnp.inf, score)  # self first
    idx = jax.lax.top_k(score, num)[1]
    mask = jnp.take_along_axis(same, idx, axis=1)
    return idx, mask


def pafm(
    v_fn: Callable[..., Array],
    key: Array,
    x1: Array,
    *,
    num_candidates: int = 16,
    selection: str = "nearest",
    time_sampler: TimeSampler | None = None,
    min_gap: float = 1e-3,
    c: Any = None,
) -> tuple[Array, dict[str, Array]]:
    """PAFM loss (2605.00825) with in-batch candidates on the linear path, Gaussian source.

    Args:
      v_fn: velocity model.
      key: PRNG key.
      x1: data batch ``(n, ...)``.
      num_candidates: K (self included); K = 1 is plain FM.
      selection: ``"nearest"`` (spec pseudocode) or ``"random"`` (unbiased) in-batch candidates.
      time_sampler: default ``U[0, 1]``.
      min_gap: clamp of ``1 - t``.
      c: condition; integer class labels ``(n,)`` also gate the candidates (cross-class weight 0).

    Returns:
      ``(loss, {"mse_to_conditional", "ess"})``: ``ess`` is the mean ``1 / sum_j w_j^2``.
    """
    _checks.check_float_array("x1", x1, min_ndim=1)
    _checks.check_positive_int("num_candidates", num_candidates)
    time_sampler = time_sampler or uniform()
    n = x1.shape[0]
    k0, kt, kc = jax.random.split(key, 3)
    x0 = jax.random.normal(k0, x1.shape, x1.dtype)
    t = time_sampler(kt, n).astype(x1.dtype)
    tb = broadcast_time(t, x1)
    x_t = tb * x1 + (1.0 - tb) * x0
    idx, mask = in_batch_candidates(kc, x1, num_candidates, labels=labels_for_coupling(c), selection=selection)
    # target is a function of data only (stop-gradient, the paper's stopgrad(v_bar)); fp32+ math
    v_bar, w = pafm_target(x_t, t, x1[idx], mask=mask, min_gap=min_gap)
    v_bar = jax.lax.stop_gradient(v_bar)
    pred = call_with_condition(v_fn, x_t, t, c=c)
    loss = jnp.mean(mean_squared(pred - v_bar))
    aux = {"mse_to_conditional": jnp.mean(mean_squared(pred - (x1 - x0))), "ess": jnp.mean(1.0 / jnp.sum(w**2, -1))}
    return loss, aux


__all__ = ["in_batch_candidates", "pafm", "pafm_target", "pafm_weights"]
