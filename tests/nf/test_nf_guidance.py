"""Classifier-free guidance for the autoregressive flows (flowjax.nf): the guided Gaussian
conditional against quadrature, the exact endpoints w = 1 (conditional) and w = 0 (unconditional)
of the guided samplers, guided Jacobi = guided sequential, condition dropout, and errors."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowjax import nf

C, S, F, K = 4, 4, 2, 3


def _perturb(params, key, scale=0.3):
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(tree, [l + scale * jax.random.normal(k, l.shape, l.dtype) for l, k in zip(leaves, keys)])


# -- the guided conditional ---------------------------------------------------------------------

def _quadrature(b_c, a_c, b_u, a_u, w):
    """Mean and std of the normalised N(b_c, a_c^2)^w N(b_u, a_u^2)^(1-w) on a fine grid (float64)."""
    x = np.linspace(-40.0, 40.0, 400_001)
    logp = w * (-0.5 * ((x - b_c) / a_c) ** 2 - np.log(a_c)) + (1 - w) * (-0.5 * ((x - b_u) / a_u) ** 2 - np.log(a_u))
    p = np.exp(logp - logp.max())
    p /= np.trapezoid(p, x)
    m = np.trapezoid(x * p, x)
    return m, np.sqrt(np.trapezoid((x - m) ** 2 * p, x))


@pytest.mark.parametrize("w", [0.25, 0.75, 2.0, 3.5])
def test_product_rule_matches_quadrature(w):
    # a_c < a_u: no clip is active for any w, so the rule is exactly the normalised product
    b_c, a_c, b_u, a_u = 0.7, 0.6, -0.4, 1.3
    b, log_a = nf.guided_affine(jnp.float64(b_c), jnp.log(jnp.float64(a_c)), jnp.float64(b_u), jnp.log(jnp.float64(a_u)),
                                w, rule="product")
    m, sd = _quadrature(b_c, a_c, b_u, a_u, w)
    np.testing.assert_allclose(float(b), m, atol=1e-6)
    np.testing.assert_allclose(float(jnp.exp(log_a)), sd, atol=1e-6)


def test_product_rule_interpolation_without_clip_when_conditional_is_wider():
    # 0 <= w <= 1 with a_c > a_u: still the exact product (we clip only for w > 1)
    b_c, a_c, b_u, a_u, w = 0.5, 1.5, -0.2, 0.8, 0.5
    b, log_a = nf.guided_affine(jnp.float64(b_c), jnp.log(jnp.float64(a_c)), jnp.float64(b_u), jnp.log(jnp.float64(a_u)), w)
    m, sd = _quadrature(b_c, a_c, b_u, a_u, w)
    np.testing.assert_allclose([float(b), float(jnp.exp(log_a))], [m, sd], atol=1e-6)


def test_product_rule_clip_for_w_above_one():
    # a_c > a_u and w > 1: the code clips s = a_c^2/a_u^2 to 1 -> scale a_c, mean b_u + w (b_c - b_u)
    b_c, a_c, b_u, a_u, w = 0.5, 1.5, -0.2, 0.8, 2.5
    b, log_a = nf.guided_affine(jnp.float64(b_c), jnp.log(jnp.float64(a_c)), jnp.float64(b_u), jnp.log(jnp.float64(a_u)), w)
    np.testing.assert_allclose(float(jnp.exp(log_a)), a_c, rtol=1e-12)
    np.testing.assert_allclose(float(b), b_u + w * (b_c - b_u), rtol=1e-12)
    # the code's formula with g = w - 1 (spec 3.4)
    g, s = w - 1.0, min(a_c / a_u, 1.0) ** 2
    np.testing.assert_allclose(float(b), ((1 + g) * b_c - g * s * b_u) / (1 + g - g * s), rtol=1e-12)


def test_equal_scales_reduce_to_linear_cfg():
    k = jax.random.split(jax.random.key(0), 3)
    b_c, b_u = jax.random.normal(k[0], (5, 3)), jax.random.normal(k[1], (5, 3))
    la = 0.3 * jax.random.normal(k[2], (5, 3))
    for rule in ("product", "linear"):
        b, log_a = nf.guided_affine(b_c, la, b_u, la, 2.7, rule=rule)
        np.testing.assert_allclose(b, b_u + 2.7 * (b_c - b_u), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(log_a, la, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("rule", ["product", "linear"])
def test_endpoints_are_exact(rule):
    k = jax.random.split(jax.random.key(1), 4)
    b_c, b_u = jax.random.normal(k[0], (4, 6), jnp.float32), jax.random.normal(k[1], (4, 6), jnp.float32)
    la_c, la_u = 0.5 * jax.random.normal(k[2], (4, 6), jnp.float32), 0.5 * jax.random.normal(k[3], (4, 6), jnp.float32)
    fn = jax.jit(partial(nf.guided_affine, rule=rule))
    b, la = fn(b_c, la_c, b_u, la_u, 1.0)
    np.testing.assert_array_equal(b, b_c)
    np.testing.assert_array_equal(la, la_c)
    b, la = fn(b_c, la_c, b_u, la_u, 0.0)
    np.testing.assert_array_equal(b, b_u)
    np.testing.assert_array_equal(la, la_u)
    # linear rule: extrapolation of the mean and the log-scale
    if rule == "linear":
        b, la = fn(b_c, la_c, b_u, la_u, 3.0)
        np.testing.assert_allclose(b, b_u + 3.0 * (b_c - b_u), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(la, la_u + 3.0 * (la_c - la_u), rtol=1e-6, atol=1e-6)


def test_guided_affine_bad_rule():
    with pytest.raises(ValueError, match="rule"):
        nf.guided_affine(jnp.zeros(2), jnp.zeros(2), jnp.zeros(2), jnp.zeros(2), 2.0, rule="cfg")


# -- guided samplers ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cflow():
    """Conditional STARFlow-V shape with every block conditioned (exercises the per-frame label repeat)."""
    blocks = (nf.AFBlockSpec("frame", False, 1), nf.AFBlockSpec("frame", True, 1), nf.AFBlockSpec("global", False, 1))
    flow = nf.ARFlow(C, S, F, blocks, dim=16, heads=2, num_classes=K, cond_blocks="all")
    params = jax.jit(lambda k: _perturb(nf.init_flow(flow, k), jax.random.key(1)))(jax.random.key(0))
    z = jax.random.normal(jax.random.key(2), (3, F * S, C), jnp.float32)
    c = jnp.array([0, 2, 1], jnp.int32)
    return flow, params, z, c


def test_conditional_roundtrip_and_label_effect(cflow):
    flow, params, z, c = cflow
    inv = jax.jit(partial(nf.flow_inverse, flow, method="sequential"))
    x, _ = inv(params, z, c=c)
    zr, _ = jax.jit(partial(nf.flow_forward, flow))(params, x, c=c)
    np.testing.assert_allclose(zr, z, atol=1e-4)  # float32 round trip (spec bound 1e-4)
    x_null, _ = inv(params, z)  # c=None: the null label
    assert float(jnp.max(jnp.abs(x - x_null))) > 1e-2


@pytest.mark.parametrize("method", ["sequential", "jacobi"])
def test_guidance_endpoints_equal_conditional_and_unconditional(cflow, method):
    flow, params, z, c = cflow
    kw = dict(method=method, chunk_sizes=S, tol=0.0, max_iter=S)  # Jacobi without early stop: exact
    inv = jax.jit(partial(nf.flow_inverse, flow, **kw))
    x_cond, _ = inv(params, z, c=c)
    x_unc, _ = inv(params, z, c=jnp.full_like(c, K))  # the null label = the unconditional model
    g = jax.jit(partial(nf.flow_inverse, flow, **kw))  # one compilation, w traced
    x_w1, _ = g(params, z, c=c, guidance=jnp.float32(1.0))
    x_w0, _ = g(params, z, c=c, guidance=jnp.float32(0.0))
    # same parameters, same per-token inputs; only the doubled batch differs (XLA may reorder sums)
    np.testing.assert_allclose(x_w1, x_cond, atol=1e-5, rtol=0)
    np.testing.assert_allclose(x_w0, x_unc, atol=1e-5, rtol=0)
    x_w3, _ = g(params, z, c=c, guidance=jnp.float32(3.0))
    assert float(jnp.max(jnp.abs(x_w3 - x_cond))) > 1e-2


@pytest.mark.parametrize("rule", ["product", "linear"])
def test_guided_jacobi_equals_guided_sequential(cflow, rule):
    flow, params, z, c = cflow
    x_seq, _ = jax.jit(partial(nf.flow_inverse, flow, method="sequential", guidance=2.5, guidance_rule=rule))(params, z, c=c)
    jac = jax.jit(partial(nf.flow_inverse, flow, method="jacobi", chunk_sizes=S, guidance=2.5, guidance_rule=rule))
    # no early stop, S iterations per S-token chunk: exact up to float32 rounding, which scales with the
    # largest guided value (~20-35 here; w = 2.5 extrapolation amplifies it), not with each element
    x_jac, info = jac(params, z, c=c, tol=0.0, max_iter=S)
    np.testing.assert_allclose(x_jac, x_seq, atol=1e-5 * float(jnp.max(jnp.abs(x_seq))), rtol=0)
    assert [it.shape for it in info["iterations"]] == [(1,), (1,), (F,)]
    # with the convergence test the guided Jacobi still converges to the guided sequential inverse
    x_tol, info = jac(params, z, c=c, tol=1e-10, max_iter=32)
    np.testing.assert_allclose(x_tol, x_seq, atol=1e-4, rtol=1e-4)


@pytest.mark.slow  # ~20-40 s; runs with -m slow
def test_top_only_guidance_leaves_shallow_blocks_unconditioned():
    flow = nf.starflow_v(C, S, F, shallow_blocks=2, deep_depth=1, dim=16, heads=2, num_classes=K)
    assert [flow.is_conditional(i) for i in range(3)] == [False, False, True]
    params = jax.jit(lambda k: _perturb(nf.init_flow(flow, k), jax.random.key(4)))(jax.random.key(3))
    assert "label_embed" in params[2]["net"]["params"] and "label_embed" not in params[0]["net"]["params"]
    z = jax.random.normal(jax.random.key(5), (2, F * S, C), jnp.float32)
    c = jnp.array([1, 2], jnp.int32)
    # a shallow (unconditioned) block ignores guidance entirely
    inv0 = jax.jit(partial(nf.af_block_inverse, flow, 0))
    x0, _ = inv0(params[0], z)
    x1, _ = inv0(params[0], z, c=c, guidance=4.0)
    np.testing.assert_array_equal(x0, x1)
    xs, _ = jax.jit(partial(nf.flow_sample, flow, n=2, guidance=2.0, method="jacobi", chunk_sizes=S))(
        params, jax.random.key(6), c=c)
    assert xs.shape == (2, F * S, C) and bool(jnp.all(jnp.isfinite(xs)))


# -- condition dropout and errors ------------------------------------------------------------------

def test_condition_dropout():
    flow = nf.starflow_v(C, S, F, shallow_blocks=1, deep_depth=1, dim=16, heads=2, num_classes=K)
    c = jnp.arange(4000, dtype=jnp.int32) % K
    np.testing.assert_array_equal(nf.condition_dropout(flow, jax.random.key(0), c, p=0.0), c)
    np.testing.assert_array_equal(nf.condition_dropout(flow, jax.random.key(0), c, p=1.0), K)
    d = nf.condition_dropout(flow, jax.random.key(0), c, p=0.1)
    assert d.dtype == c.dtype
    dropped = np.asarray(d == K)
    assert abs(dropped.mean() - 0.1) < 0.02
    np.testing.assert_array_equal(np.asarray(d)[~dropped], np.asarray(c)[~dropped])
    with pytest.raises(ValueError, match="probability"):
        nf.condition_dropout(flow, jax.random.key(0), c, p=1.5)
    with pytest.raises(ValueError, match="class-conditional"):
        nf.condition_dropout(nf.starflow_v(C, S, F, shallow_blocks=1, deep_depth=1, dim=16, heads=2), jax.random.key(0), c)


def test_guidance_errors(cflow):
    flow, params, z, c = cflow
    uflow = nf.starflow_v(C, S, F, shallow_blocks=1, deep_depth=1, dim=16, heads=2)
    uparams = jax.eval_shape(partial(nf.init_flow, uflow), jax.random.key(0))  # errors are raised before any work
    with pytest.raises(ValueError, match="needs the class labels"):
        nf.flow_inverse(flow, params, z, guidance=2.0)
    with pytest.raises(ValueError, match=">= 0"):
        nf.flow_inverse(flow, params, z, c=c, guidance=-1.0)
    with pytest.raises(ValueError, match="guidance_rule"):
        nf.flow_inverse(flow, params, z, c=c, guidance=2.0, guidance_rule="cfg")
    with pytest.raises(ValueError, match="unconditional"):
        nf.flow_inverse(uflow, uparams, z, c=c)
    with pytest.raises(ValueError, match="class-conditional"):
        nf.flow_inverse(uflow, uparams, z, guidance=2.0)
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        nf.flow_forward(flow, params, z, c=c[:2])
    with pytest.raises(TypeError, match="integer"):
        nf.flow_log_prob(flow, params, z, c=c.astype(jnp.float32))
    with pytest.raises(ValueError, match="num_classes"):
        nf.ARFlow(C, S, F, num_classes=-1)
    with pytest.raises(ValueError, match="cond_blocks"):
        nf.ARFlow(C, S, F, num_classes=2, cond_blocks="deep")
