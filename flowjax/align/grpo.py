"""Flow-GRPO: online RL for flow models through a marginal-preserving SDE (arXiv 2505.05470).

Project convention: ``t = 0`` noise, ``t = 1`` data, linear path ``x_t = (1 - t) x0 + t x1``, score
``s(x, t) = (t v(x, t) - x) / (1 - t)``. Spec ``euphonium.md`` §3.1-3.2 (checked against the code).

ODE-to-SDE conversion: for any ``eps_t >= 0``,

    dx = [v(x, t) + (eps_t^2 / 2) s(x, t)] dt + eps_t dW_t

has the ODE's marginals (Fokker-Planck). Its Euler-Maruyama step from ``t`` to ``t + h`` is the
Gaussian policy

    mu_theta(x, t) = x + h [v_theta + (eps_t^2 / 2) (t v_theta - x) / (1 - t)],
    pi_theta(x' | x) = N(mu_theta, eps_t^2 h I).

Flow-GRPO uses ``eps_t = a sqrt((1 - t) / t)`` (``a = 0.7``), DanceGRPO a constant ``eps``. Training
maximises the clipped surrogate with group-relative advantages ``A^i = (R^i - mean_G R)/(std_G R +
1e-4)`` (clipped to ``+-5``) and a KL to the reference policy
``KL_k = |mu_theta - mu_ref|^2 / (2 eps_t^2 h)`` (paper form; the code omits ``h``: ``kl_with_h``).

Rollouts are pure functions of ``(v_fn, key, x0)``; the batch axis holds ``groups x group_size``
samples (group-major), and everything is per-sample, so a batch sharded over devices (``jax.jit`` with
a ``NamedSharding`` on the batch axis) rolls out without communication; group statistics gather
across the group axis inside :func:`group_advantages`.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike

from flowjax import _checks

VelocityFn = Callable[[Array, Array], Array]
DiffusionFn = Callable[[Array], Array]


def _bt(t: Array, x: Array) -> Array:
    t = jnp.asarray(t, x.dtype)
    return t.reshape(t.shape + (1,) * (x.ndim - t.ndim))


def flow_grpo_diffusion(a: float = 0.7, *, t_floor: float = 0.1) -> DiffusionFn:
    """Flow-GRPO's ``eps_t = a sqrt((1 - t) / max(t, t_floor))``.

    The floor reproduces the code's substitution of the divergent factor at ``t = 0`` by the first
    grid value (pass the first positive grid time as ``t_floor``).
    """
    return lambda t: a * jnp.sqrt((1.0 - t) / jnp.maximum(t, t_floor))


def constant_diffusion(eta: float) -> DiffusionFn:
    """DanceGRPO / Euphonium base sampler: ``eps_t = eta``."""
    return lambda t: jnp.full(jnp.shape(t), eta, jnp.result_type(t, float))


def sde_step_mean(v: Array, x: Array, t: ArrayLike, h: ArrayLike, eps: ArrayLike) -> Array:
    """``mu = x + h [v + (eps^2/2) (t v - x)/(1 - t)]`` (t, h, eps scalars or per-sample)."""
    t, h, eps = _bt(t, x), _bt(h, x), _bt(eps, x)
    return x + h * (v + 0.5 * eps**2 * (t * v - x) / (1.0 - t))


def gaussian_log_prob(x_next: Array, mean: Array, std: ArrayLike, *, reduce: str = "sum") -> Array:
    """``log N(x_next; mean, std^2 I)`` per sample, summed (exact density) or averaged over dims (code)."""
    _checks.check_choice("reduce", reduce, ("sum", "mean"))
    std = _bt(std, x_next)
    lp = -((x_next - mean) ** 2) / (2 * std**2) - jnp.log(std) - 0.5 * jnp.log(2 * jnp.pi)
    axes = tuple(range(1, x_next.ndim))
    return jnp.sum(lp, axis=axes) if reduce == "sum" else jnp.mean(lp, axis=axes)


def step_log_prob(v: Array, x: Array, x_next: Array, t: ArrayLike, h: ArrayLike, eps: ArrayLike, *, reduce: str = "sum") -> Array:
    """Log-probability of the realised transition ``x -> x_next`` under ``N(mu(v), eps^2 h I)``."""
    return gaussian_log_prob(x_next, sde_step_mean(v, x, t, h, eps), jnp.asarray(eps) * jnp.sqrt(h), reduce=reduce)


def kl_step(v_theta: Array, v_ref: Array, x: Array, t: ArrayLike, h: ArrayLike, eps: ArrayLike, *, with_h: bool = True) -> Array:
    """``KL(pi_theta || pi_ref)`` of one step, per sample: ``|mu_theta - mu_ref|^2 / (2 eps^2 h)``.

    ``with_h=False`` is the Flow-GRPO code's variant (divides by ``2 eps^2``).
    """
    d = sde_step_mean(v_theta, x, t, h, eps) - sde_step_mean(v_ref, x, t, h, eps)
    var = jnp.asarray(eps) ** 2 * (jnp.asarray(h) if with_h else 1.0)
    return jnp.sum(d**2, axis=tuple(range(1, x.ndim))) / (2 * var)


def sde_rollout(
    v_fn: VelocityFn,
    key: Array,
    x0: Array,
    *,
    times: ArrayLike,
    diffusion: DiffusionFn,
    eval_times: ArrayLike | None = None,
    guidance: Callable[[Array, Array, Array], tuple[Array, Array]] | None = None,
    guidance_steps: ArrayLike | None = None,
    log_prob_mean: str = "unguided",
    reduce: str = "sum",
) -> dict[str, Array]:
    """Roll out the SDE policy and record what GRPO training needs.

    Step ``k`` goes from ``times[k]`` to ``times[k+1]``; the network, ``eps`` and the score term are
    evaluated at ``eval_times[k]`` (default ``times[k]``; e.g. ``t_1 / 2`` for the first step so that
    nothing is evaluated at ``t = 0``).

    Optional reward guidance (Euphonium, arXiv 2602.04928): ``guidance(x, t, k) -> (drift, r)``
    returns an extra drift (e.g. ``lambda_t grad r_phi``) and a process reward per sample; on steps
    where ``guidance_steps[k]`` is true the mean is shifted, ``mu_g = mu + h drift``. The recorded
    log-probability uses the ``"unguided"`` mean (Euphonium's code default) or the ``"guided"`` one.

    Returns:
      dict with ``xs`` ``(T+1, n, ...)``, ``log_probs`` ``(T, n)``, ``process_rewards`` ``(T, n)``
      (zeros where unguided), ``guided`` ``(T,)``.
    """
    _checks.check_float_array("x0", x0, min_ndim=1)
    _checks.check_choice("log_prob_mean", log_prob_mean, ("unguided", "guided"))
    grid = np.asarray(times, np.float64)
    if grid.ndim != 1 or grid.size < 2 or np.any(np.diff(grid) <= 0):
        raise ValueError(f"`times` must be a strictly increasing grid, got {grid}.")
    ev = grid[:-1] if eval_times is None else np.asarray(eval_times, np.float64)
    if ev.shape != (grid.size - 1,):
        raise ValueError(f"`eval_times` must have shape ({grid.size - 1},), got {ev.shape}.")
    n_steps = grid.size - 1
    gsteps = np.zeros(n_steps, bool) if guidance_steps is None else np.asarray(guidance_steps, bool)
    if guidance is None:
        gsteps = np.zeros(n_steps, bool)
    n, dtype = x0.shape[0], x0.dtype
    keys = jax.random.split(key, n_steps)

    def step(x, inputs):
        k, te, h, g_on, kk = inputs
        tv = jnp.full((n,), te, dtype)
        eps = diffusion(te)
        v = v_fn(x, tv)
        mu = sde_step_mean(v, x, te, h, eps)
        if guidance is not None:
            drift, r = guidance(x, tv, k)
            mu_g = jnp.where(g_on, mu + h * drift, mu)
            r = jnp.where(g_on, r, 0.0)
        else:
            mu_g, r = mu, jnp.zeros((n,), dtype)
        std = eps * jnp.sqrt(h)
        x_next = mu_g + std * jax.random.normal(kk, x.shape, dtype)
        lp = gaussian_log_prob(x_next, mu if log_prob_mean == "unguided" else mu_g, std, reduce=reduce)
        return x_next, (x_next, lp, r)

    inputs = (jnp.arange(n_steps), jnp.asarray(ev, dtype), jnp.asarray(np.diff(grid), dtype), jnp.asarray(gsteps), keys)
    _, (xs, lps, rs) = jax.lax.scan(step, x0, inputs)
    return {"xs": jnp.concatenate([x0[None], xs], 0), "log_probs": lps, "process_rewards": rs, "guided": jnp.asarray(gsteps)}


def group_advantages(rewards: Array, group_size: int, *, eps: float = 1e-4, clip: float | None = 5.0, global_std: bool = False) -> Array:
    """``A^i = (R^i - mean_group R) / (std R + eps)``, clipped to ``[-clip, clip]``.

    ``rewards`` ``(groups * group_size, ...)`` in group-major order; the statistics are over the
    group axis (per remaining index, e.g. per step for process rewards). ``global_std`` uses the std
    over the whole batch (Flow-GRPO code default) with per-group means.
    """
    _checks.check_positive_int("group_size", group_size)
    if rewards.shape[0] % group_size:
        raise ValueError(f"`rewards` leading axis {rewards.shape[0]} must be a multiple of group_size {group_size}.")
    r = rewards.reshape((rewards.shape[0] // group_size, group_size) + rewards.shape[1:])
    mean = jnp.mean(r, axis=1, keepdims=True)
    std = jnp.std(rewards, axis=0, keepdims=True)[None] if global_std else jnp.std(r, axis=1, keepdims=True)
    a = ((r - mean) / (std + eps)).reshape(rewards.shape)
    return a if clip is None else jnp.clip(a, -clip, clip)


def clipped_surrogate(log_ratio: Array, advantages: Array, *, clip_range: float = 1e-4) -> Array:
    """PPO objective per element: ``min(rho A, clip(rho, 1 - c, 1 + c) A)`` (to be maximised)."""
    rho = jnp.exp(log_ratio)
    return jnp.minimum(rho * advantages, jnp.clip(rho, 1.0 - clip_range, 1.0 + clip_range) * advantages)


def flow_grpo_loss(
    v_fn: VelocityFn,
    key: Array,
    rollout: dict[str, Array],
    advantages: Array,
    *,
    times: ArrayLike,
    diffusion: DiffusionFn,
    eval_times: ArrayLike | None = None,
    v_ref: VelocityFn | None = None,
    beta: float = 0.04,
    clip_range: float = 1e-4,
    kl_with_h: bool = True,
    reduce: str = "sum",
    timestep_fraction: float = 1.0,
    step_advantages: Array | None = None,
    process_weight: float = 1.0,
    normalize_steps: bool = True,
) -> tuple[Array, dict[str, Array]]:
    """Flow-GRPO loss ``-J(theta)`` on a recorded rollout (spec euphonium.md §3.2).

    ``J = mean_i (1/T) sum_k [min(rho A, clip(rho) A) - beta KL_k]`` with ``rho`` the ratio of the
    current and the recorded (old-policy) step densities of the *realised* transitions. ``A`` is
    per sample (``advantages`` ``(n,)``); ``step_advantages`` ``(T, n)`` (Euphonium's process advantages)
    enter a second clipped surrogate weighted by ``process_weight`` (``c_p``). ``timestep_fraction < 1`` trains on a random subset of steps (``key``).
    ``normalize_steps=False`` sums over steps instead of averaging.

    Returns ``(loss, aux)`` with the mean ratio, clip fraction and KL.
    """
    grid = np.asarray(times, np.float64)
    ev = grid[:-1] if eval_times is None else np.asarray(eval_times, np.float64)
    xs, old_lp = rollout["xs"], jax.lax.stop_gradient(rollout["log_probs"])
    n_steps, n = old_lp.shape
    hs = jnp.asarray(np.diff(grid), xs.dtype)
    tes = jnp.asarray(ev, xs.dtype)
    n_train = max(1, int(round(timestep_fraction * n_steps)))
    order = jax.random.permutation(key, n_steps)[:n_train] if n_train < n_steps else jnp.arange(n_steps)
    adv = jnp.broadcast_to(advantages[None], (n_steps, n))
    padv = jnp.zeros((n_steps, n), xs.dtype) if step_advantages is None else step_advantages

    def per_step(k):
        x, x_next, te, h = xs[k], xs[k + 1], tes[k], hs[k]
        tv = jnp.full((n,), te, xs.dtype)
        eps = diffusion(te)
        v = v_fn(x, tv)
        lp = step_log_prob(v, x, x_next, te, h, eps, reduce=reduce)
        log_ratio = lp - old_lp[k]
        surr = clipped_surrogate(log_ratio, adv[k], clip_range=clip_range)
        if step_advantages is not None:  # Euphonium's dual-reward objective: a second surrogate (spec §3.5)
            surr = surr + process_weight * clipped_surrogate(log_ratio, padv[k], clip_range=clip_range)
        if v_ref is not None and beta > 0:
            kl = kl_step(v, jax.lax.stop_gradient(v_ref(x, tv)), x, te, h, eps, with_h=kl_with_h)
        else:
            kl = jnp.zeros((n,), xs.dtype)
        clipped = jnp.abs(jnp.exp(log_ratio) - 1.0) > clip_range
        return surr - beta * kl, jnp.exp(log_ratio), kl, clipped

    obj, rho, kl, clipped = jax.vmap(per_step)(order)
    total = jnp.sum(obj, axis=0)
    if normalize_steps:
        total = total / n_train
    loss = -jnp.mean(total)
    aux = {"ratio": jnp.mean(rho), "kl": jnp.mean(kl), "clip_frac": jnp.mean(clipped.astype(xs.dtype)), "objective": -loss}
    return loss, aux
