"""KVPO pieces (spec kvpo.md §6)."""

import jax
import jax.numpy as jnp
import numpy as np

from flowjax.align import kvpo


def test_shift_invariance_and_identical_branches():
    e = jax.random.normal(jax.random.key(0), (8,))
    a = jax.random.normal(jax.random.key(1), (8,))
    np.testing.assert_allclose(kvpo.branch_log_probs(e), kvpo.branch_log_probs(e + 3.7), atol=1e-12)
    l1, _ = kvpo.kvpo_loss(e, e - 1.0, e, a)
    l2, _ = kvpo.kvpo_loss(e + 5.0, e + 2.0, e - 4.0, a)
    np.testing.assert_allclose(l1, l2, atol=1e-12)
    same = jnp.full((8,), 0.3)
    loss, aux = kvpo.kvpo_loss(same, same, same, a)
    np.testing.assert_allclose(jnp.exp(kvpo.branch_log_probs(same)), 1 / 8)
    np.testing.assert_allclose(aux["ratio"], 1.0)
    np.testing.assert_allclose(loss, -jnp.mean(a), atol=1e-12)


def test_contrastive_gradient_for_zero_mean_advantages():
    # sum_g A_g grad log pi(g) = -sum_g A_g grad E_g when sum A = 0 (on-policy, no KL)
    e = jax.random.normal(jax.random.key(2), (6,))
    a = jax.random.normal(jax.random.key(3), (6,))
    a = a - a.mean()
    g = jax.grad(lambda en: kvpo.kvpo_loss(en, e, e, a, kl_coef=0.0)[0])(e)
    np.testing.assert_allclose(g, a / 6, atol=1e-12)  # loss = -(1/G) sum A log-ratio -> d/dE_g = A_g / G


def test_zero_energy_for_deployment_replay_and_velocity_weighting():
    rec = jax.random.normal(jax.random.key(4), (3, 2, 4, 5))
    times = jnp.array([0.0, 0.3, 0.6, 0.8])
    np.testing.assert_allclose(kvpo.trajectory_velocity_energy(rec, rec, times), 0.0)
    rep = rec + 0.1 * jax.random.normal(jax.random.key(5), rec.shape)
    e = kvpo.trajectory_velocity_energy(rec, rep, times, sigma_floor=0.0)
    # velocity form: x_t fixed, v = (x1 - x_t)/(1 - t) -> 1/2 |v^g - v_theta|^2 = w_k |x1^g - x1_theta|^2
    x_t = jax.random.normal(jax.random.key(6), rec.shape)
    t = times.reshape(1, 1, 4, 1)
    vg, vt = (rec - x_t) / (1 - t), (rep - x_t) / (1 - t)
    np.testing.assert_allclose(e, jnp.sum(0.5 * jnp.mean((vg - vt) ** 2, -1), axis=(1, 2)), rtol=1e-12)
    np.testing.assert_allclose(kvpo.tve_weights(times), 0.5)  # sigma_floor = 1 -> equal weights
    # gradient only through the first M steps
    g = jax.grad(lambda r: jnp.sum(kvpo.trajectory_velocity_energy(rec, r, times, grad_steps=2)))(rep)
    assert float(jnp.abs(g[:, :, 2:]).max()) == 0.0 and float(jnp.abs(g[:, :, :2]).max()) > 0


def test_routing_plan():
    pool = jnp.arange(3, 20)
    plan = np.asarray(kvpo.dispersed_routing_plan(jax.random.key(7), pool, 8, 5))
    assert plan.shape == (8, 5)
    assert np.all(np.isin(plan, np.asarray(pool)))
    assert np.all(np.diff(plan, axis=1) > 0)  # sorted, distinct
    shift = max(1, 17 // 8)
    pos = [set(((g * shift + np.arange(5)) % 17).tolist()) for g in range(8)]
    for a in range(8):
        for b in range(a + 1, 8):
            # overlap = overlap of the permutation windows (the dispersed-shift bound), at most 5 - shift
            assert len(set(plan[a]) & set(plan[b])) == len(pos[a] & pos[b])
            if b == a + 1:
                assert len(set(plan[a]) & set(plan[b])) == 5 - shift
    np.testing.assert_array_equal(plan, np.asarray(kvpo.dispersed_routing_plan(jax.random.key(7), pool, 8, 5)))
    ctx = kvpo.routed_context([0, 1, 2], [20, 21], jnp.asarray(plan))
    assert ctx.shape == (8, 10) and np.all(np.asarray(ctx[:, :3]) == [0, 1, 2]) and np.all(np.asarray(ctx[:, 3:5]) == [20, 21])


def test_advantages_and_protect():
    r = jnp.array([1.0, 2.0, 0.5])
    a = kvpo.anchor_advantages(r, 1.5, eps=0.0)
    np.testing.assert_allclose(a, (r - 1.5) / jnp.std(jnp.array([1.0, 2.0, 0.5, 1.5])))
    fused = kvpo.fuse_advantages(jnp.array([10.0, -10.0, 0.0]), jnp.array([1.0, 1.0, -2.0]))
    assert float(jnp.max(jnp.abs(fused))) <= 2.5
    lp = kvpo.branch_log_probs(jnp.array([0.1, 0.7, 0.2]))
    np.testing.assert_allclose(kvpo.protect_scale(lp, False), 0.5, atol=1e-12)
    np.testing.assert_allclose(kvpo.protect_scale(lp, True), 1.0)
