"""The 2-D GRPO toy of spec euphonium.md §5, shared by the flow-grpo and euphonium experiments.

Policy ``v_theta(x, t_k) = v_ref(x, t_k) + theta_k`` (``theta in R^{T x 2}``) on top of the exact
8-Gaussian-ring velocity; outcome reward ``R(x1) = -|x1 - m*|^2``; latent PRM
``r_phi(x, t) = R(x + (1 - t) v_ref(x, t))``. On-policy updates (ratio 1):
``theta <- theta + lr (1/(B G)) sum_i sum_k A_i grad log pi(x_{k+1} | x_k)`` with the log-density
summed over dims and steps, i.e. gradient descent on ``flow_grpo_loss(..., reduce="sum",
normalize_steps=False)``; in variant (d) also ``theta <- theta - lr grad L_distill`` at ``theta_old``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from flowjax import align
from flowjax.testing import GaussianMixtureFlow


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str
    diffusion: str  # "flow_grpo" (a) or "constant" (eta)
    noise: float
    guidance_scale: float = 0.0
    guided_steps: tuple[int, ...] = ()
    process_advantage: bool = False
    log_prob_mean: str = "unguided"
    distill_weight: float = 0.0


def ring(radius=2.0, std=0.1, modes=8):
    ang = 2 * np.pi * np.arange(modes) / modes
    means = radius * np.stack([np.cos(ang), np.sin(ang)], -1)
    return GaussianMixtureFlow(means, np.full(modes, std), np.ones(modes)), means


def setup(steps: int):
    times = np.linspace(0.0, 1.0, steps + 1)
    ev = times[:-1].copy()
    ev[0] = times[1] / 2
    return times, ev


def make_policy(flow, ev):
    evj = jnp.asarray(ev)

    def policy(theta):
        def v(x, t):
            # every sample of a call shares one time in this toy: look the step up from the first
            idx = jnp.argmin(jnp.abs(t[:1, None] - evj[None, :]), axis=1)  # (1,)
            return flow.velocity(x, t) + theta[idx]
        return v

    return policy


def ode_eval(v, x0, times, ev):
    x = x0
    for k in range(len(ev)):
        x = x + (times[k + 1] - times[k]) * v(x, jnp.full((x.shape[0],), ev[k]))
    return x


def train(variant: Variant, *, seed: int, groups: int, group_size: int, iterations: int, lr: float, steps: int,
          eval_samples: int, eval_seed: int = 12345):
    flow, means = ring()
    target = jnp.asarray(means[0])
    times, ev = setup(steps)
    policy = make_policy(flow, ev)
    reward = lambda x: -jnp.sum((x - target[None]) ** 2, axis=-1)
    prm = lambda x, t: reward(x + (1.0 - t)[:, None] * flow.velocity(x, t))
    if variant.diffusion == "flow_grpo":
        diff = align.flow_grpo_diffusion(variant.noise, t_floor=float(ev[0]))
    else:
        diff = align.constant_diffusion(variant.noise)
    guide = align.reward_guidance(prm, scale=variant.guidance_scale) if variant.guidance_scale > 0 else None
    gsteps = np.zeros(steps, bool)
    gsteps[list(variant.guided_steps)] = True
    x0_eval = jax.random.normal(jax.random.key(eval_seed), (eval_samples, 2))
    n = groups * group_size

    def evaluate(theta, xe):
        return jnp.mean(reward(ode_eval(policy(theta), xe, times, ev)))

    def iteration(theta, key, xe):
        k0, k1, k2 = jax.random.split(key, 3)
        x0 = jnp.repeat(jax.random.normal(k0, (groups, 2)), group_size, axis=0)  # shared noise per group
        roll = align.sde_rollout(policy(theta), k1, x0, times=times, diffusion=diff, eval_times=ev, guidance=guide,
                                 guidance_steps=gsteps, log_prob_mean=variant.log_prob_mean)
        adv = align.group_advantages(reward(roll["xs"][-1]), group_size, eps=1e-4, clip=5.0)
        padv = align.process_advantages(roll["process_rewards"], roll["guided"], group_size) if variant.process_advantage else None

        def loss(th):
            l, _ = align.flow_grpo_loss(policy(th), k2, roll, adv, times=times, diffusion=diff, eval_times=ev, beta=0.0,
                                        reduce="sum", normalize_steps=False, step_advantages=padv)
            if variant.distill_weight > 0:
                ld, _ = align.distillation_loss(policy(th), roll, v_old=policy(theta), guidance=guide, times=times,
                                                diffusion=diff, eval_times=ev)
                l = l + variant.distill_weight * ld
            return l

        g = jax.grad(loss)(theta)
        theta = theta - lr * g
        return theta, (evaluate(theta, xe), jnp.sqrt(jnp.sum(g**2)))

    theta0 = jnp.zeros((steps, 2))
    keys = jax.random.split(jax.random.key(seed), iterations)
    # x0_eval is a jit argument, not a closure constant (XLA would constant-fold the evaluation)
    theta, (curve, gnorm) = jax.jit(lambda th, ks, xe: jax.lax.scan(lambda c, k: iteration(c, k, xe), th, ks))(theta0, keys, x0_eval)
    start = float(jax.jit(evaluate)(theta0, x0_eval))
    samples = ode_eval(policy(theta), x0_eval, times, ev)
    return {"start": start, "curve": np.asarray(curve), "final": float(curve[-1]), "theta": np.asarray(theta),
            "samples": np.asarray(samples)}


def first_reach(curve: np.ndarray, level: float) -> int:
    """1-based iteration at which the curve first reaches ``level`` (len + 1 if never)."""
    idx = np.nonzero(curve >= level)[0]
    return int(idx[0]) + 1 if idx.size else len(curve) + 1
