"""Flow-GRPO pieces against exact answers (spec euphonium.md §6)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.stats import multivariate_normal

from flowjax.align import grpo
from flowjax.testing import GaussianMixtureFlow, gaussian_flow


# the constant-noise schedule checks the same identity as flow_grpo's: slow, to keep the default run short
@pytest.mark.parametrize("kind", ["flow_grpo", pytest.param("constant", marks=pytest.mark.slow)])
def test_sde_keeps_ode_marginals(kind):
    flow = GaussianMixtureFlow(np.array([[-1.5], [0.5], [2.0]]), np.array([0.3, 0.2, 0.4]), np.array([0.3, 0.3, 0.4]))
    n, t_start, steps = 20000, 1e-3, 1000
    times = np.linspace(t_start, 1.0, steps + 1)
    diff = grpo.flow_grpo_diffusion(0.7, t_floor=t_start) if kind == "flow_grpo" else grpo.constant_diffusion(0.5)
    x0 = flow.sample_marginal(jax.random.key(0), n, t_start)
    out = jax.jit(lambda k, x: grpo.sde_rollout(flow.velocity, k, x, times=times, diffusion=diff))(jax.random.key(1), x0)
    for t_check in (0.25, 0.5, 1.0):
        idx = int(np.argmin(np.abs(times - t_check)))
        x = np.asarray(out["xs"][idx])[:, 0]
        ref = np.asarray(flow.sample_marginal(jax.random.key(2), 200000, times[idx]))[:, 0]
        se = ref.std() / np.sqrt(n)
        assert abs(x.mean() - ref.mean()) < 5 * se, (t_check, x.mean(), ref.mean())
        assert abs(x.var() - ref.var()) < 0.05 * ref.var(), (t_check, x.var(), ref.var())
    # a wrong score sign visibly breaks the marginals at t = 1 (the test can fail)
    assert np.isfinite(out["log_probs"]).all()


def test_step_log_prob_is_gaussian_density():
    key = jax.random.key(3)
    x, v, xn = jax.random.normal(key, (3, 4, 5)).reshape(3, 4, 5)
    t, h, eps = 0.3, 0.1, 0.8
    mu = x + h * (v + 0.5 * eps**2 * (t * v - x) / (1 - t))
    ref = jnp.stack([multivariate_normal.logpdf(xn[i], mu[i], eps**2 * h * jnp.eye(5)) for i in range(4)])
    np.testing.assert_allclose(grpo.step_log_prob(v, x, xn, t, h, eps), ref, rtol=1e-12)
    np.testing.assert_allclose(grpo.step_log_prob(v, x, xn, t, h, eps, reduce="mean"), ref / 5, rtol=1e-12)
    # eps = 0 gives the Euler ODE mean
    np.testing.assert_allclose(grpo.sde_step_mean(v, x, t, h, 0.0), x + h * v)


def test_group_advantages_zero_mean_unit_std():
    r = jax.random.normal(jax.random.key(4), (6 * 8,)) * 3 + 1
    a = grpo.group_advantages(r, 8, eps=0.0, clip=None).reshape(6, 8)
    np.testing.assert_allclose(a.mean(1), 0.0, atol=1e-12)
    np.testing.assert_allclose(a.std(1), 1.0, atol=1e-12)
    a2 = grpo.group_advantages(jnp.tile(r[:, None], (1, 3)), 8).reshape(6, 8, 3)  # per-step process rewards
    np.testing.assert_allclose(a2.mean(1), 0.0, atol=1e-10)
    with pytest.raises(ValueError, match="group_size"):
        grpo.group_advantages(r[:7], 8)


def test_kl_forms_agree():
    k1, k2, k3 = jax.random.split(jax.random.key(5), 3)
    x, vt, vr = (jax.random.normal(k, (4, 3)) for k in (k1, k2, k3))
    t, h, eps = 0.4, 0.05, 0.6
    kl = grpo.kl_step(vt, vr, x, t, h, eps)
    closed = (h / 2) * (1 / eps + eps * t / (2 * (1 - t))) ** 2 * jnp.sum((vt - vr) ** 2, -1)
    np.testing.assert_allclose(kl, closed, rtol=1e-12)


def _toy():
    flow = gaussian_flow(np.array([1.0, -1.0]), np.array([0.5, 0.5]))
    times = np.linspace(0.0, 1.0, 6)
    ev = times[:-1].copy()
    ev[0] = times[1] / 2
    return flow, times, ev


def test_ratio_one_on_policy_and_clipping():
    flow, times, ev = _toy()
    diff = grpo.flow_grpo_diffusion(0.7, t_floor=ev[0])
    theta = jnp.zeros((5, 2))
    v_theta = lambda th: (lambda x, t: flow.velocity(x, t) + th[jnp.clip((t[0] * 5).astype(int), 0, 4)][None])
    x0 = jax.random.normal(jax.random.key(6), (16, 2))
    roll = grpo.sde_rollout(v_theta(theta), jax.random.key(7), x0, times=times, diffusion=diff, eval_times=ev)
    adv = grpo.group_advantages(-jnp.sum(roll["xs"][-1] ** 2, -1), 8)
    loss, aux = grpo.flow_grpo_loss(v_theta(theta), jax.random.key(0), roll, adv, times=times, diffusion=diff,
                                    eval_times=ev, beta=0.0)
    np.testing.assert_allclose(aux["ratio"], 1.0, atol=1e-12)
    np.testing.assert_allclose(loss, -jnp.mean(adv), atol=1e-12)
    # with A > 0 and rho > 1 + eps_c the surrogate's gradient vanishes
    g = jax.grad(lambda lr: grpo.clipped_surrogate(lr, jnp.asarray(2.0), clip_range=0.1))
    assert float(g(jnp.log(1.2))) == 0.0 and float(g(jnp.log(1.05))) > 0.0


def test_sharded_rollout_matches_unsharded():
    flow, times, ev = _toy()
    diff = grpo.constant_diffusion(0.5)
    x0 = jax.random.normal(jax.random.key(8), (16, 2))
    f = jax.jit(lambda x: grpo.sde_rollout(flow.velocity, jax.random.key(9), x, times=times, diffusion=diff, eval_times=ev)["xs"])
    mesh = jax.make_mesh((len(jax.devices()),), ("data",))
    xs_sharded = jax.device_put(x0, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data")))
    np.testing.assert_allclose(f(xs_sharded), f(x0), atol=1e-12)
