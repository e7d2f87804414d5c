"""KVPO: ODE-native GRPO for autoregressive flow generators via KV-cache routing (arXiv 2605.14278).

Project convention: ``t = 0`` noise, ``t = 1`` data; the generator is an x-prediction network
``G_theta(x_t, t; KV, c) ~ x1`` with ``v = (x1_hat - x_t) / (1 - t)``. Spec ``kvpo.md`` (read from
the official code; the paper text was not retrieved; the velocity-space reading and the contrastive
interpretation are derived).

Exploration without noise: ``G`` branches share all noises and differ only in *which history frames
the model attends to* during ``P`` perturbed blocks (causal history routing, :func:`dispersed_routing_plan`,
passed to the network as a ``kv_index``). The policy over branches is a Gibbs distribution of each
branch's Trajectory Velocity Energy, replayed under the unperturbed (deployment) context:

    E_g(theta) = sum_b sum_k w_k mean |x1_hat^g_{b,k} - G_theta(x^g_{b,k}, t_k; KV_deploy)|^2,
    w_k = 1 / (2 max(1 - t_k, sigma_floor)^2),            pi_theta(g) = softmax(-E)_g,

and PPO on this categorical policy with anchor-relative advantages and a discrete KL to the frozen
initial policy:

    L = s_protect (-(1/G) sum_g min(rho_g A_g, clip(rho_g, 1 - 0.1, 1 + 0.2) A_g) + kappa KL(pi_theta || pi_ref)).

With ``sigma_floor = 0`` the energy is ``1/2 sum |v^g - v_theta|^2`` exactly (velocity-space TVE);
the code's ``sigma_floor = 1`` gives equal x-space weights ``1/2``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike

from flowjax import _checks


def dispersed_routing_plan(key: Array, pool: ArrayLike, num_branches: int, subset_size: int) -> Array:
    """Dispersed history subsets ``(G, n)`` (spec §3.2).

    One master permutation ``pi`` of the pool; shift ``s = max(1, |pool| // G)``;
    ``S_g = sort{pool[pi[(g s + i) mod |pool|]] : i < n}`` — consecutive windows of the permutation,
    so branches overlap as little as the pool allows.
    """
    pool = jnp.asarray(pool)
    size = pool.shape[0]
    _checks.check_positive_int("num_branches", num_branches)
    _checks.check_positive_int("subset_size", subset_size)
    if subset_size > size:
        raise ValueError(f"`subset_size` ({subset_size}) must not exceed the pool size ({size}).")
    perm = jax.random.permutation(key, size)
    shift = max(1, size // num_branches)
    idx = (jnp.arange(num_branches)[:, None] * shift + jnp.arange(subset_size)[None, :]) % size
    return jnp.sort(pool[perm[idx]], axis=-1)


def routed_context(sink: ArrayLike, nearest: ArrayLike, subsets: Array) -> Array:
    """KV index per branch: ``sink ∪ nearest ∪ S_g``, shape ``(G, |sink| + |nearest| + n)``."""
    sink, nearest = jnp.asarray(sink, subsets.dtype), jnp.asarray(nearest, subsets.dtype)
    g = subsets.shape[0]
    return jnp.concatenate([jnp.broadcast_to(sink, (g,) + sink.shape), jnp.broadcast_to(nearest, (g,) + nearest.shape), subsets], -1)


def tve_weights(times: ArrayLike, *, sigma_floor: float = 1.0) -> Array:
    """``w_k = 1 / (2 max(1 - t_k, sigma_floor)^2)``."""
    sig = 1.0 - jnp.asarray(times)
    return 1.0 / (2.0 * jnp.maximum(sig, sigma_floor) ** 2)


def trajectory_velocity_energy(
    recorded_x1: Array,
    replayed_x1: Array,
    times: ArrayLike,
    *,
    sigma_floor: float = 1.0,
    grad_steps: int | None = None,
) -> Array:
    """TVE per branch: ``E_g = sum_{b,k} w_k mean |x1_hat^g_{b,k} - replayed_{b,k}|^2``.

    Args:
      recorded_x1: the branches' own predictions ``(G, P, K, ...)`` (constants).
      replayed_x1: the current model's predictions at the same inputs under the deployment
        context, ``(G, P, K, ...)``.
      times: ``(K,)`` the sampler's times ``t_k``.
      sigma_floor: floor on ``1 - t_k`` in the weight (1 = code; 0 = velocity-space TVE).
      grad_steps: ``M``: gradient flows only through the first ``M`` steps of every block.

    Returns:
      ``(G,)`` energies.
    """
    rec = jax.lax.stop_gradient(recorded_x1)
    k = rec.shape[2]
    if grad_steps is not None:
        keep = (jnp.arange(k) < grad_steps).reshape((1, 1, k) + (1,) * (rec.ndim - 3))
        replayed_x1 = jnp.where(keep, replayed_x1, jax.lax.stop_gradient(replayed_x1))
    err = jnp.mean((rec - replayed_x1) ** 2, axis=tuple(range(3, rec.ndim)))  # (G, P, K)
    w = tve_weights(times, sigma_floor=sigma_floor).astype(err.dtype)
    return jnp.sum(err * w[None, None, :], axis=(1, 2))


def branch_log_probs(energies: Array) -> Array:
    """``log pi(g) = log softmax(-E)_g`` over the last axis."""
    return jax.nn.log_softmax(-energies, axis=-1)


def anchor_advantages(rewards: Array, anchor_reward: ArrayLike, *, eps: float = 1e-8) -> Array:
    """``A_g = (R_g - R_anchor) / std({R_1..R_G, R_anchor})`` (population std, anchor included)."""
    allr = jnp.concatenate([rewards, jnp.reshape(jnp.asarray(anchor_reward, rewards.dtype), (1,))])
    return (rewards - anchor_reward) / (jnp.std(allr) + eps)


def _std_normalise(a: Array, eps: float) -> Array:
    """``a / (std(a) + eps)``, or ``a`` unchanged when ``std(a) <= eps`` (official trainer's "std" mode).

    The guard matters: anchor-relative advantages are not zero-mean, so ``G`` branches that tie with each
    other but not with the anchor have ``std = 0`` and a non-zero common value; dividing would turn it into
    ``±1/eps`` (then clipped to ``±clip``, i.e. float noise promoted to the largest advantage).
    """
    std = jnp.std(a)
    return jnp.where(std > eps, a / (std + eps), a)


def fuse_advantages(a_local: Array, a_global: Array, *, w_local: float = 1.0, w_global: float = 0.5, clip: float = 2.5,
                    eps: float = 1e-8) -> Array:
    """"std" fusion: ``w_l A_l / std(A_l) + w_g A_g / std(A_g)`` (population std; a component whose std is
    ``<= eps`` is left unscaled), clipped to ``[-clip, clip]``."""
    a = w_local * _std_normalise(a_local, eps) + w_global * _std_normalise(a_global, eps)
    return jnp.clip(a, -clip, clip)


def protect_scale(log_probs: Array, any_better: ArrayLike, *, anchor_logit: float = 0.0) -> Array:
    """1 if some branch beats the anchor; else ``1 - softmax([log pi, anchor_logit])_anchor`` (= 1/2)."""
    logits = jnp.concatenate([log_probs, jnp.full((1,), anchor_logit, log_probs.dtype)])
    p_anchor = jax.nn.softmax(logits)[-1]
    return jnp.where(jnp.asarray(any_better), 1.0, 1.0 - p_anchor)


def kvpo_loss(
    energies: Array,
    energies_old: Array,
    energies_ref: Array,
    advantages: Array,
    *,
    clip_low: float = 0.1,
    clip_high: float = 0.2,
    kl_coef: float = 10.0,
    any_better: ArrayLike = True,
    anchor_logit: float = 0.0,
) -> tuple[Array, dict[str, Array]]:
    """KVPO objective for one group of ``G`` branches (spec §3.5); ``energies`` carry the gradient."""
    logp = branch_log_probs(energies)
    logp_old = jax.lax.stop_gradient(branch_log_probs(energies_old))
    logp_ref = jax.lax.stop_gradient(branch_log_probs(energies_ref))
    log_ratio = jnp.clip(logp - logp_old, -20.0, 20.0)
    rho = jnp.exp(log_ratio)
    ppo = -jnp.mean(jnp.minimum(rho * advantages, jnp.clip(rho, 1.0 - clip_low, 1.0 + clip_high) * advantages))
    kl = jnp.sum(jnp.exp(logp) * (logp - logp_ref))
    scale = jax.lax.stop_gradient(protect_scale(logp, any_better, anchor_logit=anchor_logit))
    loss = scale * (ppo + kl_coef * kl)
    return loss, {"ppo": ppo, "kl": kl, "protect": scale, "ratio": jnp.mean(rho)}
