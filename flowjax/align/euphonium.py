"""Euphonium: process-reward-gradient guided SDE for GRPO on flow models (arXiv 2602.04928).

Project convention: ``t = 0`` noise, ``t = 1`` data. Spec ``euphonium.md`` §3.3-3.5 (read from the
official code; the paper text was not retrieved).

Guided SDE (rollouts only):

    dx = [v_theta + (eps_t^2/2) s_theta + lambda_t grad_x r_phi(x, t)] dt + eps_t dW,

Euler-Maruyama mean ``mu_g = mu_theta + h lambda_t grad_x r_phi(x_t, t)`` with ``r_phi`` a latent
*process* reward model scoring noisy states; ``lambda_t = eps_t^2 / (2 beta)`` in the code's "KL
mode". The policy log-density is evaluated with the **unguided** mean (code default), so GRPO on
guided rollouts distils the guidance into ``v_theta``. Advantages combine the group-normalised
outcome reward with per-step group-normalised process rewards (dual reward, two clipped surrogates;
:func:`flowjax.align.grpo.flow_grpo_loss` with ``step_advantages``).

*Derived, not the paper's loss* (offered as an option, spec §3.4): the explicit distillation
regression ``L = E 1/2 |v_theta(x_t, t) - sg[v_old + lambda_t grad r_phi / (1 + eps_t^2 t / (2 (1 - t)))]|^2``
over guided steps, whose minimiser matches the expected NLL of guided transitions under the unguided
kernel.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike

from flowjax import _checks
from flowjax.align.grpo import DiffusionFn, VelocityFn, _bt, group_advantages


def kl_mode_lambda(eps: ArrayLike, beta: float) -> Array:
    """Code "KL mode": ``lambda_t = eps_t^2 / (2 beta)`` (``eta = 0.25, beta = 3.125`` -> 0.01)."""
    return jnp.asarray(eps) ** 2 / (2.0 * beta)


def reward_guidance(
    process_reward: Callable[[Array, Array], Array],
    *,
    scale: float | Callable[[Array], Array],
    normalize: bool = False,
) -> Callable[[Array, Array, Array], tuple[Array, Array]]:
    """Guidance callable for :func:`flowjax.align.grpo.sde_rollout`: ``(x, t, k) -> (lambda grad r, r)``.

    ``process_reward(x, t) -> (n,)`` is per sample; its input gradient is taken per sample (one PRM
    forward and backward). ``scale`` is ``lambda`` or ``lambda(t)``; ``normalize`` uses
    ``grad r / |grad r|`` (code option).
    """

    def guide(x, t, k):
        r, vjp = jax.vjp(lambda y: process_reward(y, t), x)
        g = vjp(jnp.ones_like(r))[0]
        if normalize:
            g = g / (jnp.sqrt(jnp.sum(g**2, axis=tuple(range(1, x.ndim)), keepdims=True)) + 1e-12)
        lam = scale(t) if callable(scale) else jnp.asarray(scale, x.dtype)
        return _bt(jnp.asarray(lam, x.dtype), x) * g if jnp.ndim(lam) else lam * g, r

    return guide


def guided_mean(mu: Array, drift: Array, h: ArrayLike) -> Array:
    """``mu_g = mu + h drift`` (``drift = lambda grad r``; code's ``use_delta_t_for_gradient_scaling``)."""
    return mu + _bt(h, mu) * drift


def process_advantages(process_rewards: Array, guided: Array, group_size: int, *, eps: float = 1e-8, clip: float | None = 5.0) -> Array:
    """Per-step group-normalised process advantages ``(T, n)``, zero on unguided steps."""
    r = jnp.swapaxes(process_rewards, 0, 1)  # (n, T)
    a = jnp.swapaxes(group_advantages(r, group_size, eps=eps, clip=clip), 0, 1)
    return jnp.where(guided[:, None], a, 0.0)


def distillation_loss(
    v_fn: VelocityFn,
    rollout: dict[str, Array],
    *,
    v_old: VelocityFn,
    guidance: Callable[[Array, Array, Array], tuple[Array, Array]],
    times: ArrayLike,
    diffusion: DiffusionFn,
    eval_times: ArrayLike | None = None,
) -> tuple[Array, dict[str, Array]]:
    """Explicit distillation of the guidance drift (spec §3.4, *derived*): mean over samples, sum over guided steps.

    ``target = sg[v_old + lambda grad r / (1 + eps_t^2 t / (2 (1 - t)))]`` at the recorded states,
    so the unguided Euler-Maruyama mean of the new policy equals the guided mean of the old one.
    """
    grid = np.asarray(times, np.float64)
    ev = grid[:-1] if eval_times is None else np.asarray(eval_times, np.float64)
    xs, guided = rollout["xs"], rollout["guided"]
    n = xs.shape[1]

    def per_step(k):
        x, te = xs[k], jnp.asarray(ev, xs.dtype)[k]
        tv = jnp.full((n,), te, xs.dtype)
        eps = diffusion(te)
        drift, _ = guidance(x, tv, k)
        target = v_old(x, tv) + drift / (1.0 + eps**2 * te / (2.0 * (1.0 - te)))
        target = jax.lax.stop_gradient(target)  # spec §3.4: sg[...]
        err = 0.5 * jnp.sum((v_fn(x, tv) - target) ** 2, axis=tuple(range(1, x.ndim)))
        return jnp.where(guided[k], err, 0.0)

    per = jax.vmap(per_step)(jnp.arange(guided.shape[0]))  # (T, n)
    loss = jnp.mean(jnp.sum(per, axis=0))
    return loss, {"distill": loss}
