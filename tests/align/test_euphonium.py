"""Euphonium pieces (spec euphonium.md §6 items 3, 4, 7)."""

import jax
import jax.numpy as jnp
import numpy as np

from flowjax import align
from flowjax.testing import gaussian_flow


def test_linear_reward_guidance_shifts_mean_exactly_and_lambda_zero_is_grpo():
    flow = gaussian_flow(np.array([1.0, -1.0]), np.array([0.5, 0.5]))
    a = jnp.array([0.3, -2.0])
    prm = lambda x, t: x @ a
    times = np.linspace(0.0, 1.0, 5)
    ev = np.array([0.1, 0.25, 0.5, 0.75])
    diff = align.constant_diffusion(0.5)
    x0 = jax.random.normal(jax.random.key(0), (8, 2))
    lam = 0.4
    guide = align.reward_guidance(prm, scale=lam)
    drift, r = guide(x0, jnp.full((8,), 0.1), 0)
    np.testing.assert_allclose(drift, jnp.broadcast_to(lam * a, (8, 2)), atol=1e-12)
    np.testing.assert_allclose(r, x0 @ a)
    base = align.sde_rollout(flow.velocity, jax.random.key(1), x0, times=times, diffusion=diff, eval_times=ev)
    zero = align.sde_rollout(flow.velocity, jax.random.key(1), x0, times=times, diffusion=diff, eval_times=ev,
                             guidance=align.reward_guidance(prm, scale=0.0), guidance_steps=[True] * 4)
    np.testing.assert_allclose(zero["xs"], base["xs"], atol=1e-12)
    one = align.sde_rollout(flow.velocity, jax.random.key(1), x0, times=times, diffusion=diff, eval_times=ev,
                            guidance=guide, guidance_steps=[True, False, False, False], log_prob_mean="guided")
    # first step: the guided mean is the unguided one plus h lambda a (same noise)
    np.testing.assert_allclose(one["xs"][1] - base["xs"][1], jnp.broadcast_to(0.25 * lam * a, (8, 2)), atol=1e-12)
    np.testing.assert_allclose(one["log_probs"][0], base["log_probs"][0], atol=1e-10)


def test_process_advantages_zero_on_unguided_steps():
    r = jax.random.normal(jax.random.key(2), (4, 12))
    guided = jnp.array([False, True, False, True])
    a = align.process_advantages(r, guided, 6)
    np.testing.assert_array_equal(a[0], 0.0)
    np.testing.assert_array_equal(a[2], 0.0)
    np.testing.assert_allclose(a[1].reshape(2, 6).mean(1), 0.0, atol=1e-10)


def test_distillation_target_matches_guided_mean():
    # after one exact regression step the unguided EM mean of the new field equals the guided old mean
    flow = gaussian_flow(np.array([0.5, 0.0]), np.array([0.7, 0.7]))
    times = np.array([0.0, 0.3, 0.6])
    ev = np.array([0.15, 0.3])
    eta = 0.5
    diff = align.constant_diffusion(eta)
    prm = lambda x, t: -jnp.sum(x**2, -1)
    guide = align.reward_guidance(prm, scale=0.2)
    x0 = jax.random.normal(jax.random.key(3), (5, 2))
    roll = align.sde_rollout(flow.velocity, jax.random.key(4), x0, times=times, diffusion=diff, eval_times=ev,
                             guidance=guide, guidance_steps=[True, True])
    x, t, h = roll["xs"][1], 0.3, 0.3
    drift, _ = guide(x, jnp.full((5,), t), 1)
    target = flow.velocity(x, jnp.full((5,), t)) + drift / (1 + eta**2 * t / (2 * (1 - t)))
    mu_new = align.sde_step_mean(target, x, t, h, eta)
    mu_guided = align.sde_step_mean(flow.velocity(x, jnp.full((5,), t)), x, t, h, eta) + h * drift
    np.testing.assert_allclose(mu_new, mu_guided, atol=1e-12)
    loss, _ = align.distillation_loss(flow.velocity, roll, v_old=flow.velocity, guidance=guide, times=times,
                                      diffusion=diff, eval_times=ev)
    assert float(loss) > 0
