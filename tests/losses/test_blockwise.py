"""Blockwise Flow Matching (arXiv 2510.21167): spec blockwise-fm.md section 6 and the oracle."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowjax import losses, samplers
from flowjax.losses.blockwise import (
    blockwise_fm,
    feature_residual_loss,
    fra_alpha,
    group_sizes,
    projection_alignment,
    segment_index,
    stratified_segment_times,
)
from flowjax.nets import BlockwiseMLP, ConditionalMLP
from flowjax.samplers.blockwise import blockwise_macs, blockwise_ode
from flowjax.testing import GaussianMixtureFlow

F64 = jnp.float64


def _gmm():
    means = jnp.array([[2.0, 0.0], [-1.0, 1.5]], F64)
    return GaussianMixtureFlow(means, jnp.array([0.6, 0.6], F64), jnp.array([0.5, 0.5], F64))


def test_routing():
    """Spec test 1: boundaries go to the upper segment, t = 1 to K - 1; code time t_c = 1 - t."""
    k = segment_index(jnp.array([0.0, 0.2499, 0.25, 0.5, 0.75, 0.999, 1.0]), 4)
    np.testing.assert_array_equal(k, [0, 0, 1, 2, 3, 3, 3])
    sigma = np.linspace(1.0, 0.0, 5)  # the code's segment boundaries, segment k: t_c in [sigma_{k+1}, sigma_k]
    t_c = jax.random.uniform(jax.random.key(0), (200,), F64)
    k_code = np.array([np.nonzero((sigma[1:] <= tc) & (tc < sigma[:-1]))[0][0] for tc in np.asarray(t_c)])
    np.testing.assert_array_equal(segment_index(1.0 - t_c, 4), k_code)
    assert int(segment_index(1.0 - 0.0, 4)) == 3  # t_c = 0 (data end) -> K - 1, not K


def test_stratified_sampler():
    """Spec test 2: group sizes differ by <= 1, sum to B; group k's times lie in [k/K, (k+1)/K]."""
    for b, num in ((10, 4), (256, 6), (7, 7), (3, 5)):
        sizes = group_sizes(b, num)
        assert sum(sizes) == b and max(sizes) - min(sizes) <= 1
        t, k = stratified_segment_times(jax.random.key(b), b, num, F64)
        np.testing.assert_array_equal(np.bincount(np.asarray(k), minlength=num), sizes)
        assert np.all(np.asarray(t) >= np.asarray(k) / num) and np.all(np.asarray(t) <= (np.asarray(k) + 1) / num)
        np.testing.assert_array_equal(segment_index(t, num), k)


def test_k1_reduces_to_plain_fm():
    flow = _gmm()
    x1 = flow.sample_data(jax.random.key(1), 32).astype(F64)
    v = lambda x, t: flow.velocity(x, t) * 0.7 + 0.1
    key = jax.random.key(5)
    a, _ = blockwise_fm(lambda x, t: (v(x, t), None), key, x1, num_segments=1)
    b, _ = losses.cfm(v, key, x1)
    np.testing.assert_allclose(a, b, rtol=1e-12)


def test_fra_exactness_and_same_noise_pairing():
    """Spec tests 3-4: alpha(t_s) = 0 (and 1 at t_e); x_t - x_{t_s} = (t - t_s)(x1 - x0) exactly."""
    np.testing.assert_array_equal(fra_alpha(jnp.array([0.0, 0.25, 0.5, 0.75]), 4), 0.0)
    np.testing.assert_allclose(fra_alpha(jnp.array([0.125, 0.2499999]), 4), [0.5, 0.9999996], rtol=1e-6)
    x1 = jax.random.normal(jax.random.key(2), (12, 3), F64)
    x0 = jax.random.normal(jax.random.key(3), (12, 3), F64)
    num = 4
    # With r(x, t) = x the FRA target is r(x_t) - r(x_ts) = alpha (x1 - x0) / K: a residual net equal
    # to (x1 - x0) / K gives exactly zero loss only if x_t and x_ts share (x0, x1) and alpha is right.
    feat = lambda x, t: x
    loss, aux = feature_residual_loss(lambda x, t: (x1 - x0) / num, jax.random.key(0), x1, feature_fn=feat, num_segments=num, x0=x0)
    assert float(loss) < 1e-28 and float(aux["frozen_feature_mse"]) > 1e-3
    loss_bad, _ = feature_residual_loss(lambda x, t: (x1 - x0) / num * 1.1, jax.random.key(0), x1, feature_fn=feat, num_segments=num, x0=x0)
    assert float(loss_bad) > 1e-4


def test_projection_loss():
    """Spec test 5: -1 for identical features; invariant to positive per-token scaling."""
    a = jax.random.normal(jax.random.key(4), (8, 5, 16), F64)
    b = jax.random.normal(jax.random.key(5), (8, 5, 16), F64)
    np.testing.assert_allclose(projection_alignment(a, a), -1.0, atol=1e-12)
    scale = jax.random.uniform(jax.random.key(6), (8, 5, 1), F64, 0.1, 10.0)
    np.testing.assert_allclose(projection_alignment(a * scale, b), projection_alignment(a, b), rtol=1e-12)
    np.testing.assert_allclose(projection_alignment(a[:, 0], b[:, 0] * scale[:, 0]), projection_alignment(a[:, :1], b[:, :1]), rtol=1e-12)
    g_teacher = jax.grad(lambda y: projection_alignment(a, y))(b)
    assert float(jnp.max(jnp.abs(g_teacher))) == 0.0  # frozen teacher


def _small_bfm(num_classes=3):
    return BlockwiseMLP(data_dim=4, num_segments=4, feature_width=16, feature_depth=2, feature_dim=8,
                        stack_width=16, stack_depth=1, emb_dim=8, num_classes=num_classes, proj_width=8, proj_dim=6)


def test_segment_independence_of_gradients():
    """Spec test 7: a single-segment batch gives zero gradient to the other stacks' parameters."""
    net = _small_bfm()
    x = jax.random.normal(jax.random.key(7), (16, 4))
    c = jnp.arange(16) % 3
    params = net.init(jax.random.key(0), x, jnp.zeros((16,)), c)
    t = jax.random.uniform(jax.random.key(8), (16,), minval=0.5, maxval=0.75)  # segment 2 of 4
    g = jax.grad(lambda p: jnp.mean(net.apply(p, x, t, c)[0] ** 2))(params)["params"]
    for k in range(4):
        norm = sum(float(jnp.sum(leaf**2)) for leaf in jax.tree.leaves(g[f"stacks_{k}"]))
        assert (norm > 0) if k == 2 else (norm == 0.0), (k, norm)
    assert sum(float(jnp.sum(leaf**2)) for leaf in jax.tree.leaves(g["feature_net"])) > 0  # no stop-grad into R


def test_losses_contract_under_jit():
    net = _small_bfm()
    x1 = jax.random.normal(jax.random.key(9), (10, 4))
    c = jnp.arange(10) % 3
    teacher = jax.random.normal(jax.random.key(10), (10, 6))
    params = net.init(jax.random.key(0), x1, jnp.zeros((10,)), c)
    f = jax.jit(lambda p, key: blockwise_fm(partial(net.apply, p), key, x1, num_segments=4, teacher=teacher, c=c))
    loss, aux = f(params, jax.random.key(1))
    assert np.isfinite(float(loss)) and -1.0 <= float(aux["proj"]) <= 1.0
    np.testing.assert_allclose(loss, aux["mse"] + 0.05 * aux["proj"], rtol=1e-6)
    fra = ConditionalMLP(width=8, depth=1, emb_dim=8, num_classes=3, out_dim=8)
    pf = fra.init(jax.random.key(2), x1, jnp.zeros((10,)), c)
    feat = lambda x, t, c: net.apply(params, x, t, c, method=BlockwiseMLP.features)
    loss2, _ = jax.jit(lambda q, key: feature_residual_loss(partial(fra.apply, q), key, x1, feature_fn=feat, num_segments=4, c=c))(pf, jax.random.key(3))
    assert np.isfinite(float(loss2))
    with pytest.raises(ValueError, match="teacher"):
        blockwise_fm(partial(net.apply, params), jax.random.key(1), x1, num_segments=4, teacher=teacher[:, :5], c=c)


@pytest.mark.parametrize("solver", ["euler", "midpoint"])
def test_sampler_uses_block_k_exactly_on_segment_k(solver):
    num = 4

    def block(k):
        # Constant velocity k + 1 on its own segment; a huge error anywhere else.
        return lambda x, t: jnp.ones_like(x) * (k + 1) + 1e3 * (segment_index(t, num) != k).astype(x.dtype)[:, None]

    x0 = jnp.zeros((3, 2), F64)
    x1 = blockwise_ode([block(k) for k in range(num)], x0, steps_per_segment=3, solver=solver)
    np.testing.assert_allclose(x1, sum((k + 1) / num for k in range(num)), rtol=1e-12)
    with pytest.raises(ValueError, match="feature_fn"):
        blockwise_ode([block(0)], x0, residual_fn=lambda x, t: x)


def test_blockwise_field_from_exact_velocity_reproduces_flow_map():
    """On the analytic oracle, blocks equal to v* on their own segment (and wrong elsewhere) give
    the exact flow map; also through a feature network (r = v*, block(x, t, r) = r)."""
    flow = _gmm()
    num = 4
    x0 = flow.sample_source(jax.random.key(11), 16).astype(F64)
    exact = flow.flow_map(x0, 0.0, 1.0)

    def block(k):
        return lambda x, t: flow.velocity(x, t) + 50.0 * (segment_index(t, num) != k).astype(x.dtype)[:, None]

    x1 = blockwise_ode([block(k) for k in range(num)], x0, steps_per_segment=16, solver="midpoint")
    np.testing.assert_allclose(x1, exact, atol=2e-4)
    feat_blocks = [lambda x, t, r, k=k: r + 50.0 * (segment_index(t, num) != k).astype(x.dtype)[:, None] for k in range(num)]
    x1f = blockwise_ode(feat_blocks, x0, steps_per_segment=16, solver="midpoint", feature_fn=flow.velocity)
    np.testing.assert_allclose(x1f, x1, rtol=1e-12)
    # Error shrinks at the solver's order (2): a real approximation of the flow map, not luck.
    x1_coarse = blockwise_ode([block(k) for k in range(num)], x0, steps_per_segment=8, solver="midpoint")
    ratio = float(jnp.max(jnp.abs(x1_coarse - exact)) / jnp.max(jnp.abs(x1 - exact)))
    assert 2.5 < ratio < 6.0, ratio


def test_fra_sampler_first_step_uses_r0_exactly():
    """With one Euler step per segment FRA only ever evaluates at t_s, where alpha = 0: it must equal
    recomputing the feature (spec test 3, in the sampler); with more steps the residual is used."""
    flow = _gmm()
    num = 3
    x0 = flow.sample_source(jax.random.key(12), 8).astype(F64)
    blocks = [lambda x, t, r: r for _ in range(num)]
    junk = lambda x, t: 7.0 * jnp.ones_like(x)
    a = blockwise_ode(blocks, x0, steps_per_segment=1, feature_fn=flow.velocity, residual_fn=junk)
    b = blockwise_ode(blocks, x0, steps_per_segment=1, feature_fn=flow.velocity)
    np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-13)  # equal up to XLA fusion rounding
    a2 = blockwise_ode(blocks, x0, steps_per_segment=2, feature_fn=flow.velocity, residual_fn=junk)
    b2 = blockwise_ode(blocks, x0, steps_per_segment=2, feature_fn=flow.velocity)
    # Second step of each segment: alpha = 1/2, so v = r0 + 3.5 instead of r(x, t).
    assert float(jnp.max(jnp.abs(a2 - b2))) > 0.5


def test_mac_counts_match_spec():
    """Spec section 5 sizes: (a) ~377k per NFE, (b) R 262k + stack 57k, FRA per 4-step segment ~553k."""
    a = ConditionalMLP(width=256, depth=6, emb_dim=32, num_classes=10)
    assert a.macs(64) == 376_832
    b = BlockwiseMLP(data_dim=64, num_segments=4, num_classes=10)
    m = b.macs()
    assert m["feature"] == 262_144 and m["stack"] == 57_344
    f = ConditionalMLP(width=64, depth=2, emb_dim=32, num_classes=10, out_dim=128)
    assert f.macs(64) == 20_480
    per_seg_fra = blockwise_macs(block_macs=m["stack"], feature_macs=m["feature"], residual_macs=f.macs(64), num_segments=1, steps_per_segment=4)
    assert per_seg_fra == 262_144 + 4 * 57_344 + 3 * 20_480  # 552,960
    per_seg = blockwise_macs(block_macs=m["stack"], feature_macs=m["feature"], num_segments=1, steps_per_segment=4)
    assert per_seg == 4 * 319_488
