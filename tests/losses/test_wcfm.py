"""W-CFM (2507.22270) and the coupling additions it relies on (Gibbs weights, plans, pools, shards)."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowjax import couplings
from flowjax.losses import cfm
from flowjax.losses.wcfm import epsilon_rule_of_thumb, marginal_tilt, reference_cost, wcfm


def _linear_v(params):
    w, b = params
    return lambda x, t: x @ w + b[None, :] + t[:, None] * 0.3


def test_epsilon_infinity_is_icfm_bitwise():
    key = jax.random.key(0)
    x1 = jax.random.normal(jax.random.key(1), (16, 3))
    v = _linear_v((jnp.eye(3) * 0.5, jnp.ones(3)))
    l_w, aux = wcfm(v, key, x1, epsilon=float("inf"))
    l_c, _ = cfm(v, key, x1)
    assert float(l_w) == float(l_c)
    assert float(aux["weight_mean"]) == 1.0
    # and finite-but-huge epsilon agrees to rounding
    l_big, _ = wcfm(v, key, x1, epsilon=1e12)
    np.testing.assert_allclose(l_big, l_c, rtol=1e-10)


def _atoms():
    x0 = jax.random.normal(jax.random.key(2), (5, 2))
    x1 = jax.random.normal(jax.random.key(3), (7, 2)) * 2.0 + 1.0
    pairs = list(itertools.product(range(5), range(7)))
    i0 = jnp.array([p[0] for p in pairs])
    i1 = jnp.array([p[1] for p in pairs])
    return x0, x1, i0, i1


def test_minimiser_is_tilted_coupling_mean():
    """On 5 x 7 atoms (all 35 pairs enumerated, mu and nu uniform), the W-CFM minimiser over a constant
    field is the conditional mean of x1 - x0 under pi~ ∝ w mu⊗nu, not the I-CFM mean."""
    x0, x1, i0, i1 = _atoms()
    eps = 0.7
    w = jnp.exp(-jnp.linalg.norm(x0[i0] - x1[i1], axis=-1) / eps)
    u = x1[i1] - x0[i0]
    tilted_mean = jnp.sum(w[:, None] * u, 0) / jnp.sum(w)

    def loss_of(vec):
        return wcfm(lambda x, t: jnp.broadcast_to(vec, x.shape), jax.random.key(0), x1[i1], x0=x0[i0], epsilon=eps)[0]

    g_star = jax.grad(loss_of)(tilted_mean)
    np.testing.assert_allclose(g_star, 0.0, atol=1e-12)
    g_plain = jax.grad(loss_of)(jnp.mean(u, 0))
    assert float(jnp.linalg.norm(g_plain)) > 1e-3


def test_tilted_marginals_formula():
    x0, x1, i0, i1 = _atoms()
    eps = 0.7
    w = np.asarray(jnp.exp(-jnp.linalg.norm(x0[i0] - x1[i1], axis=-1) / eps)).reshape(5, 7)
    z = w.mean()
    pi = w / w.sum()
    tau, rel_var = marginal_tilt(x0, x1, epsilon=eps)
    np.testing.assert_allclose(pi.sum(0), (1 / 7) * np.asarray(tau) / z, atol=1e-12)  # nu~ = nu tau / Z
    tau_mu = w.mean(1)
    np.testing.assert_allclose(pi.sum(1), (1 / 5) * tau_mu / z, atol=1e-12)  # mu~ = mu tau_mu / Z
    np.testing.assert_allclose(rel_var, np.var(tau) / np.mean(tau) ** 2, rtol=1e-12)


def test_fixed_shift_rescales_globally_and_batch_normalisation_keeps_direction():
    key = jax.random.key(4)
    x1 = jax.random.normal(jax.random.key(5), (32, 2))
    x0 = jax.random.normal(jax.random.key(6), (32, 2))
    params = (jnp.eye(2) * 0.2, jnp.zeros(2))

    def loss(p, **kw):
        return wcfm(_linear_v(p), key, x1, x0=x0, epsilon=0.5, **kw)[0]

    base = loss(params)
    np.testing.assert_allclose(loss(params, c_ref=1.3), base * np.exp(1.3 / 0.5), rtol=1e-12)
    g = jax.grad(loss)(params)
    for norm in ("mean", "batch_min"):
        gn = jax.grad(lambda p: loss(p, normalize=norm))(params)
        flat, flat_n = jnp.concatenate([a.ravel() for a in g]), jnp.concatenate([a.ravel() for a in gn])
        cos = jnp.dot(flat, flat_n) / (jnp.linalg.norm(flat) * jnp.linalg.norm(flat_n))
        np.testing.assert_allclose(cos, 1.0, atol=1e-12)
    w = couplings.gibbs_weights(x0, x1, epsilon=0.5, normalize="mean")
    np.testing.assert_allclose(jnp.mean(w), 1.0, rtol=1e-12)


def test_batch_min_shift_distorts_effective_pair_weight_at_small_batch():
    """Spec Tests 6: E[factor e^{-c/eps} | pair] ∝ e^{-c/eps} only for a fixed shift."""
    x0, x1, _, _ = _atoms()
    eps = 0.5
    rng = np.random.default_rng(0)
    cmat = np.linalg.norm(np.asarray(x0)[:, None] - np.asarray(x1)[None], axis=-1)
    acc, cnt = np.zeros((5, 7)), np.zeros((5, 7))
    for _ in range(4000):
        a, b = rng.integers(0, 5, 8), rng.integers(0, 7, 8)
        c = cmat[a, b]
        f = np.exp(-(c - c.min()) / eps)
        np.add.at(acc, (a, b), f)
        np.add.at(cnt, (a, b), 1)
    ratio = (acc / cnt) / np.exp(-cmat / eps)
    spread = ratio.max() / ratio.min()
    assert spread > 1.2  # batch-dependent factor: not proportional to the Gibbs weight


def test_gibbs_weights_validation_and_rule_of_thumb():
    x = jnp.zeros((4, 2))
    with pytest.raises(ValueError, match="epsilon"):
        couplings.gibbs_weights(x, x, epsilon=0.0)
    with pytest.raises(ValueError, match="normalize"):
        couplings.gibbs_weights(x, x, epsilon=1.0, normalize="max")
    with pytest.raises(ValueError, match="cost"):
        wcfm(lambda x, t: x, jax.random.key(0), x, cost="l1")
    np.testing.assert_allclose(epsilon_rule_of_thumb(3072, 5.0 / np.sqrt(3072)), 5.0)
    x0 = jax.random.normal(jax.random.key(0), (1000, 2))
    c_ref = reference_cost(jax.random.key(1), x0, x0 + 3.0)
    # x0_i - (x0_j + 3) ~ N(-3 1, 2 I): its median norm from a large independent sample
    ref = np.median(np.linalg.norm(np.random.default_rng(0).normal(size=(200000, 2)) * np.sqrt(2) - 3.0, axis=-1))
    np.testing.assert_allclose(float(c_ref), ref, atol=0.15)


# ---------------------------------------------------------------------------------------------
# couplings: valid permutations / plans with uniform marginals
# ---------------------------------------------------------------------------------------------
def test_exact_ot_is_brute_force_best_permutation():
    x0 = jax.random.normal(jax.random.key(7), (6, 2))
    x1 = jax.random.normal(jax.random.key(8), (6, 2)) + 1.0
    i0, i1 = couplings.ot_exact()(jax.random.key(0), x0, x1)
    assert sorted(np.asarray(i0).tolist()) == list(range(6))
    cost = np.sum((np.asarray(x0)[:, None] - np.asarray(x1)[None]) ** 2, -1)
    best = min(sum(cost[p[j], j] for j in range(6)) for p in itertools.permutations(range(6)))
    np.testing.assert_allclose(sum(cost[int(i0[j]), int(i1[j])] for j in range(6)), best, rtol=1e-10)


def test_exact_ot_1d_is_monotone():
    x0 = jax.random.normal(jax.random.key(9), (40, 1))
    x1 = jax.random.uniform(jax.random.key(10), (40, 1)) * 5
    i0, i1 = couplings.ot_exact()(jax.random.key(0), x0, x1)
    a, b = np.asarray(x0[i0, 0]), np.asarray(x1[i1, 0])
    order = np.argsort(b)
    assert np.all(np.diff(a[order]) >= 0)


def test_entropic_plan_marginals_and_small_reg_limit():
    x0 = jax.random.normal(jax.random.key(11), (24, 2))
    x1 = jax.random.normal(jax.random.key(12), (24, 2)) * 0.5 + 2.0
    cost = np.sum((np.asarray(x0)[:, None] - np.asarray(x1)[None]) ** 2, -1)
    i0, i1 = couplings.ot_exact()(jax.random.key(0), x0, x1)
    emd = float(np.mean(cost[np.asarray(i0), np.asarray(i1)]))
    prev = None
    for reg in (1.0, 0.3, 0.1):
        plan = np.asarray(couplings.entropic_plan(x0, x1, reg=reg))
        np.testing.assert_allclose(plan.sum(1), 1 / 24, atol=1e-6)
        np.testing.assert_allclose(plan.sum(0), 1 / 24, atol=1e-6)
        val = float(np.sum(plan * cost))
        assert val >= emd - 1e-6
        if prev is not None:
            assert val <= prev + 1e-9
        prev = val
    assert prev - emd < 0.05 * emd


def test_sample_plan_frequencies_chi_square():
    plan = jnp.array([[0.3, 0.05], [0.15, 0.5]])
    i0, i1 = couplings.sample_plan(jax.random.key(0), plan, 20000)
    counts = np.zeros((2, 2))
    np.add.at(counts, (np.asarray(i0), np.asarray(i1)), 1)
    expected = np.asarray(plan).ravel() * 20000
    chi2 = np.sum((counts.ravel() - expected) ** 2 / expected)
    assert chi2 < 16.27  # chi^2_3 at p = 0.001
    j0, j1 = couplings.sample_plan(jax.random.key(1), plan, 4, replace=False)
    assert len(set(zip(np.asarray(j0).tolist(), np.asarray(j1).tolist()))) == 4


def test_pooled_coupling_returns_distinct_pairs_from_pool_plan():
    x0 = jax.random.normal(jax.random.key(13), (64, 2))
    x1 = jax.random.normal(jax.random.key(14), (64, 2)) + 3.0
    i0, i1 = couplings.pooled(couplings.ot_exact(), 16)(jax.random.key(0), x0, x1)
    assert i0.shape == (16,) and len(set(np.asarray(i0).tolist())) == 16 and len(set(np.asarray(i1).tolist())) == 16
    j0, j1 = couplings.ot_exact()(jax.random.key(0), x0, x1)
    full = dict(zip(np.asarray(j1).tolist(), np.asarray(j0).tolist()))
    assert all(full[b] == a for a, b in zip(np.asarray(i0).tolist(), np.asarray(i1).tolist()))
    with pytest.raises(ValueError, match="num_pairs"):
        couplings.pooled(couplings.ot_exact(), 128)(jax.random.key(0), x0, x1)


def test_shard_local_pairs_within_each_shard():
    x0 = jax.random.normal(jax.random.key(15), (32, 2))
    x1 = jax.random.normal(jax.random.key(16), (32, 2)) + 1.0
    i0, i1 = jax.jit(couplings.shard_local(couplings.ot_exact(), 8))(jax.random.key(0), x0, x1)
    i0, i1 = np.asarray(i0), np.asarray(i1)
    assert sorted(i0.tolist()) == list(range(32))
    np.testing.assert_array_equal(i0 // 4, i1 // 4)  # never crosses a shard of 4 rows
    for s in range(8):
        sl = slice(4 * s, 4 * s + 4)
        r0, r1 = couplings.ot_exact()(jax.random.key(0), x0[sl], x1[sl])
        np.testing.assert_array_equal(i0[sl] - 4 * s, np.asarray(r0))
    # under a batch sharded over 8 devices (auto-sharded mesh, GSPMD partitions the block axis) the result is the same
    sharding = jax.sharding.NamedSharding(jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,)), jax.sharding.PartitionSpec("data"))
    s0, _ = jax.jit(couplings.shard_local(couplings.ot_exact(), 8))(jax.random.key(0), jax.device_put(x0, sharding), jax.device_put(x1, sharding))
    np.testing.assert_array_equal(np.asarray(s0), i0)


def test_sample_plan_rectangular_unnormalised_with_zero_cells_chi_square():
    # Two-stage sampling (row marginal, then the row's conditional) must follow plan / sum(plan).
    plan = jnp.array([[0.6, 0.0, 0.2, 0.2], [0.0, 0.0, 1.0, 0.0], [0.4, 0.8, 0.0, 0.8]])
    n = 40000
    i0, i1 = couplings.sample_plan(jax.random.key(3), plan, n)
    counts = np.zeros(plan.shape)
    np.add.at(counts, (np.asarray(i0), np.asarray(i1)), 1)
    p = np.asarray(plan) / float(np.sum(plan))
    assert np.all(counts[p == 0] == 0)
    nz = p > 0
    chi2 = np.sum((counts[nz] - p[nz] * n) ** 2 / (p[nz] * n))
    assert chi2 < 24.32  # chi^2_7 at p = 0.001


def test_entropic_plan_default_threshold_matches_a_full_length_solve():
    # The float32 default stops once the marginals are met (~1e-7); the plan must equal the one from
    # a solve that runs all iterations (threshold 1e-9 is never reached in float32).
    x0 = jax.random.normal(jax.random.key(21), (64, 2))
    x1 = jax.random.normal(jax.random.key(22), (64, 2)) * 2.0 + 3.0
    fast = np.asarray(couplings.entropic_plan(x0, x1, reg=8.0))
    full = np.asarray(couplings.entropic_plan(x0, x1, reg=8.0, threshold=1e-9, max_iterations=500))
    np.testing.assert_allclose(fast, full, rtol=1e-4, atol=1e-9)
    np.testing.assert_allclose(fast.sum(1), 1 / 64, atol=1e-6)
