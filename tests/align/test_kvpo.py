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


def test_fuse_advantages_tied_branches_not_amplified():
    # G branches tie with each other but not with the anchor: std(A_local) = 0 and A_local = c != 0.
    # The official "std" fusion leaves such a component unscaled; dividing by (0 + eps) would give c / 1e-8
    # (clipped to the maximal advantage for every branch).
    r = jnp.full((4,), 0.3)
    a_loc = kvpo.anchor_advantages(r, 0.5)
    assert float(jnp.std(a_loc)) == 0.0 and abs(float(a_loc[0])) > 0
    a_glob = jnp.array([0.5, -1.0, 0.2, 0.3])
    fused = kvpo.fuse_advantages(a_loc, a_glob)
    expected = a_loc + 0.5 * a_glob / jnp.std(a_glob)
    np.testing.assert_allclose(fused, jnp.clip(expected, -2.5, 2.5), rtol=1e-6)
    # all-zero spread on both components -> fused advantages stay the (small) raw values
    tiny = jnp.full((4,), 1e-3)
    np.testing.assert_allclose(kvpo.fuse_advantages(tiny, tiny), 1.5e-3, rtol=1e-9)


def test_loss_gradient_does_not_saturate_on_policy():
    # Why the RL update needs the spec's gradient clipping / small LR: on-policy (rho = 1) the PPO
    # gradient w.r.t. the energies is -(A_g - pi_g sum_j A_j) / G, independent of how far apart the energies
    # are, so a branch already at pi ~ 0 keeps being pushed away (the objective is unbounded below).
    a = jnp.array([1.0, -1.0, -0.5, 0.2])
    for scale in (1.0, 1e3):
        e = scale * jnp.array([0.0, 5.0, 1.0, 2.0])
        g = jax.grad(lambda en: kvpo.kvpo_loss(en, e, e, a, kl_coef=0.0)[0])(e)
        pi = jax.nn.softmax(-e)
        np.testing.assert_allclose(g, (a - pi * jnp.sum(a)) / 4, atol=1e-12)
