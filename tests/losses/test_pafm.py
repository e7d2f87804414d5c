"""PAFM (2605.00825): SNIS mixture target, weights, limits, oracle consistency and exact unbiasedness."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowjax.losses import cfm
from flowjax.losses.pafm import in_batch_candidates, pafm, pafm_target, pafm_weights
from flowjax.testing import GaussianMixtureFlow, gaussian_flow

RING = 4.0 * np.stack([np.cos(np.arange(8) * np.pi / 4), np.sin(np.arange(8) * np.pi / 4)], -1)


def test_single_candidate_is_fm():
    x1 = jax.random.normal(jax.random.key(0), (32, 3))
    v = lambda x, t: 0.4 * x - t[:, None]
    ts = lambda k, n: jnp.linspace(0.0, 0.99, n)
    l_pafm = pafm(v, jax.random.key(1), x1, num_candidates=1, time_sampler=ts)[0]
    l_fm = cfm(v, jax.random.key(1), x1, time_sampler=ts)[0]
    np.testing.assert_allclose(l_pafm, l_fm, rtol=1e-10)


def test_weights_normalised_and_class_gated():
    x1 = jax.random.normal(jax.random.key(2), (20, 2))
    labels = jnp.arange(20) % 3
    idx, mask = in_batch_candidates(jax.random.key(3), x1, 8, labels=labels)
    np.testing.assert_array_equal(idx[:, 0], jnp.arange(20))
    x_t = 0.5 * x1 + 0.5 * jax.random.normal(jax.random.key(4), x1.shape)
    w = pafm_weights(x_t, jnp.full((20,), 0.5), x1[idx], mask=mask)
    assert bool(jnp.all(w >= 0))
    np.testing.assert_allclose(jnp.sum(w, -1), 1.0, rtol=1e-12)
    cross = labels[idx] != labels[:, None]
    assert bool(jnp.any(cross)) and float(jnp.max(jnp.where(cross, w, 0.0))) == 0.0
    # nearest selection: same-class candidates are the nearest same-class items
    d = jnp.linalg.norm(x1[:, None] - x1[None], axis=-1)
    i = 5
    same = np.where((np.asarray(labels) == int(labels[i])) & (np.arange(20) != i))[0]
    nearest = same[np.argsort(np.asarray(d[i, same]))]  # 5 same-class others exist for 7 slots
    np.testing.assert_array_equal(np.sort(np.asarray(idx[i, 1:1 + len(nearest)])), np.sort(nearest))
    assert not bool(jnp.any(mask[i, 1 + len(nearest):]))  # remaining slots are switched off


def test_time_limits():
    cand = jax.random.normal(jax.random.key(5), (4, 6, 2))
    x_t0 = jax.random.normal(jax.random.key(6), (4, 2))
    w0 = pafm_weights(x_t0, jnp.zeros(4), cand)
    np.testing.assert_allclose(w0, 1 / 6, rtol=1e-12)  # t = 0: flat
    x_t1 = 0.9999 * cand[:, 0] + 1e-4 * x_t0
    w1 = pafm_weights(x_t1, jnp.full((4,), 0.9999), cand, min_gap=1e-6)
    np.testing.assert_allclose(w1[:, 0], 1.0, atol=1e-9)  # t -> 1: one-hot on self


def test_paper_convention_gives_identical_weights():
    cand = jax.random.normal(jax.random.key(7), (3, 5, 2))
    x_t = jax.random.normal(jax.random.key(8), (3, 2))
    t = jnp.array([0.2, 0.5, 0.8])
    tp = 1 - t  # paper: mean (1 - t_p) z, std t_p
    logits = -jnp.sum((x_t[:, None] - (1 - tp)[:, None, None] * cand) ** 2, -1) / (2 * tp[:, None] ** 2)
    np.testing.assert_allclose(pafm_weights(x_t, t, cand), jax.nn.softmax(logits, -1), rtol=1e-12)


def test_gradient_equivalence():
    cand = jax.random.normal(jax.random.key(9), (3, 5, 2))
    x_t = jax.random.normal(jax.random.key(10), (3, 2))
    t = jnp.array([0.3, 0.6, 0.9])
    v_bar, w = pafm_target(x_t, t, cand)
    v_j = (cand - x_t[:, None]) / (1 - t)[:, None, None]
    v_hat = jax.random.normal(jax.random.key(11), (3, 2))
    g1 = jax.grad(lambda v: jnp.sum(w * jnp.sum((v[:, None] - v_j) ** 2, -1)))(v_hat)
    g2 = jax.grad(lambda v: jnp.sum((v - v_bar) ** 2))(v_hat)
    np.testing.assert_allclose(g1, g2, rtol=1e-10)


def test_whole_training_set_gives_empirical_velocity():
    data = jax.random.normal(jax.random.key(12), (50, 2)) * 2
    emp = GaussianMixtureFlow(data, jnp.full((50,), 1e-9), jnp.ones(50))
    x = jax.random.normal(jax.random.key(13), (30, 2))
    for t in (0.2, 0.6, 0.9):
        tv = jnp.full((30,), t)
        v_bar, _ = pafm_target(x, tv, jnp.broadcast_to(data, (30, 50, 2)))
        np.testing.assert_allclose(v_bar, emp.velocity(x, tv), rtol=1e-8, atol=1e-8)


def test_consistency_with_analytic_class_conditional_flow():
    """Candidates = M = 10^4 i.i.d. ring-GMM draws, weights = likelihood x class indicator: v_bar -> the
    analytic class-conditional velocity; aggregate relative RMS error < 3 %."""
    key = jax.random.key(14)
    kc, kn = jax.random.split(key)
    comp = jax.random.randint(kc, (10_000,), 0, 8)
    cands = jnp.asarray(RING)[comp] + 0.3 * jax.random.normal(kn, (10_000, 2))
    c = 3
    flow = gaussian_flow(jnp.asarray(RING[c]), 0.3)
    mask = jnp.broadcast_to(comp == c, (200, 10_000))
    for t in (0.2, 0.5, 0.8):
        x = flow.sample_marginal(jax.random.fold_in(key, int(t * 10)), 200, t)
        tv = jnp.full((200,), t)
        v_bar, _ = pafm_target(x, tv, jnp.broadcast_to(cands, (200, 10_000, 2)), mask=mask)
        v = flow.velocity(x, tv)
        rel = jnp.sqrt(jnp.mean(jnp.sum((v_bar - v) ** 2, -1)) / jnp.mean(jnp.sum(v**2, -1)))
        assert float(rel) < 0.03, (t, float(rel))


def _posterior_sample(key, x_t, t, means, stds, weights, n):
    """Exact posterior draws of x1 | x_t for a 1-D GMM under x_t = t x1 + (1-t) x0."""
    var_marg = t**2 * stds**2 + (1 - t) ** 2
    logg = jnp.log(weights) - 0.5 * (x_t - t * means) ** 2 / var_marg - 0.5 * jnp.log(var_marg)
    kc, kn = jax.random.split(key)
    comp = jax.random.categorical(kc, logg, shape=(n,))
    post_var = 1.0 / (1.0 / stds**2 + t**2 / (1 - t) ** 2)
    post_mean = post_var * (means / stds**2 + t * x_t / (1 - t) ** 2)
    return post_mean[comp] + jnp.sqrt(post_var[comp]) * jax.random.normal(kn, (n,))


def test_exact_unbiasedness_with_self_candidate():
    means, stds, weights = jnp.array([-2.0, 1.5]), jnp.array([0.4, 0.7]), jnp.array([0.3, 0.7])
    flow = GaussianMixtureFlow(means[:, None], stds, weights)
    t, x_t = 0.7, 0.4
    v_true = float(flow.velocity(jnp.array([[x_t]]), 0.7)[0, 0])
    reps = 100_000
    key = jax.random.key(15)
    for K in (2, 4, 16):
        k1, k2, k3, key = jax.random.split(key, 4)
        self_c = _posterior_sample(k1, x_t, t, means, stds, weights, reps)
        comp = jax.random.categorical(k2, jnp.log(weights), shape=(reps, K - 1))
        others = means[comp] + stds[comp] * jax.random.normal(k3, (reps, K - 1))
        cands = jnp.concatenate([self_c[:, None], others], 1)[..., None]
        xt = jnp.full((reps, 1), x_t)
        v_bar = pafm_target(xt, jnp.full((reps,), t), cands)[0][:, 0]
        se = float(jnp.std(v_bar)) / np.sqrt(reps)
        assert abs(float(jnp.mean(v_bar)) - v_true) < 4 * se, (K, float(jnp.mean(v_bar)), v_true, se)
        # without the self candidate (all K from the prior) the K-sample SNIS target is biased
        k4, k5 = jax.random.split(k3)
        comp2 = jax.random.categorical(k4, jnp.log(weights), shape=(reps, K))
        prior_only = (means[comp2] + stds[comp2] * jax.random.normal(k5, (reps, K)))[..., None]
        v_prior = pafm_target(xt, jnp.full((reps,), t), prior_only)[0][:, 0]
        se2 = float(jnp.std(v_prior)) / np.sqrt(reps)
        if K <= 4:
            assert abs(float(jnp.mean(v_prior)) - v_true) > 4 * se2


def test_validation():
    x = jnp.zeros((4, 2))
    with pytest.raises(ValueError, match="selection"):
        in_batch_candidates(jax.random.key(0), x, 2, selection="knn")
    with pytest.raises(ValueError, match="num"):
        in_batch_candidates(jax.random.key(0), x, 5)
