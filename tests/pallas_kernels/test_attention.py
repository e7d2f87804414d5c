"""Pallas attention: values, VJPs and JVPs against the pure-jnp reference.

Interpret mode on CPU (f32, tiny shapes). The compiled variants (``implementation="pallas"``) run
the same checks and are skipped unless a GPU/TPU backend is present (``benchmarks/gpu_check.sh``
runs them on a GPU). Each case is one jitted program computing the output, the JVP and the VJP
so that the interpreter's compile cost is paid once per case.
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pallas_kernels.attention import (
    BlockSizes,
    attention,
    attention_reference,
    default_implementation,
)

_ACCEL = jax.default_backend() in ("gpu", "tpu")
_NO_ACCEL = "compiled Pallas kernels need a GPU/TPU backend; run benchmarks/gpu_check.sh on a GPU"
_ALL_IMPLS = {
    "interpret": "interpret",
    "pallas": pytest.param("pallas", marks=pytest.mark.skipif(not _ACCEL, reason=_NO_ACCEL)),
}
# benchmarks/gpu_check.sh sets ATTN_TEST_IMPLS=pallas to run only the compiled variants.
IMPLS = [_ALL_IMPLS[x] for x in os.environ.get("ATTN_TEST_IMPLS", "interpret,pallas").split(",") if x]
TOL = dict(atol=3e-5, rtol=3e-5)
# The interpreter's programs are large; XLA's backend optimisations only cost compile time here.
_FAST_COMPILE = {"xla_backend_optimization_level": 0}


def _jit(f):
    return jax.jit(f, compiler_options=_FAST_COMPILE)


def _inputs(key, b, n, m, h, hkv, d, dtype=jnp.float32):
    ks = jax.random.split(key, 7)
    q = jax.random.normal(ks[0], (b, n, h, d), dtype)
    k = jax.random.normal(ks[1], (b, m, hkv, d), dtype)
    v = jax.random.normal(ks[2], (b, m, hkv, d), dtype)
    tq = jax.random.normal(ks[3], q.shape, dtype)
    tk = jax.random.normal(ks[4], k.shape, dtype)
    tv = jax.random.normal(ks[5], v.shape, dtype)
    ct = jax.random.normal(ks[6], q.shape, dtype)
    return (q, k, v), (tq, tk, tv), ct


def _out_jvp_vjp(f, primals, tangents, ct):
    out, tan = jax.jvp(f, primals, tangents)
    _, vjp = jax.vjp(f, *primals)
    return out, tan, vjp(ct)


def _check_case(impl, shapes, block_sizes, key=0, **kw):
    b, n, m, h, hkv, d = shapes
    primals, tangents, ct = _inputs(jax.random.PRNGKey(key), b, n, m, h, hkv, d)
    f = functools.partial(attention, implementation=impl, block_sizes=block_sizes, **kw)
    fr = functools.partial(attention_reference, **kw)
    with jax.default_matmul_precision("float32"):
        got = _jit(functools.partial(_out_jvp_vjp, f))(primals, tangents, ct)
        want = _jit(functools.partial(_out_jvp_vjp, fr))(primals, tangents, ct)
    out, tan, grads = got
    np.testing.assert_allclose(out, want[0], **TOL, err_msg="forward")
    np.testing.assert_allclose(tan, want[1], **TOL, err_msg="jvp tangent")
    for name, g, gw in zip("qkv", grads, want[2]):
        np.testing.assert_allclose(g, gw, **TOL, err_msg=f"grad wrt {name}")
    return primals, got


B16 = BlockSizes(16, 16, 16, 16, 16, 16, 16, 16)
BMIX = BlockSizes(32, 16, 16, 32, 32, 16, 16, 32)


@pytest.mark.parametrize("impl", IMPLS)
def test_noncausal_gqa_odd_lengths(impl):
    # 40 queries, 24 keys: neither a multiple of the 16-tiles; 4 query heads share 2 KV heads.
    _check_case(impl, (2, 40, 24, 4, 2, 32), B16)


@pytest.mark.parametrize("impl", IMPLS)
def test_causal_mixed_blocks(impl):
    # Different tiles per kernel; causal tile skipping via loop bounds (q rows 0..47).
    _check_case(impl, (1, 48, 48, 2, 2, 64), BMIX, causal=True)


@pytest.mark.parametrize("impl", IMPLS)
def test_mask_mqa_with_empty_row(impl):
    key = jax.random.PRNGKey(3)
    mask = jax.random.bernoulli(key, 0.5, (2, 1, 32, 40))
    mask = mask.at[0, 0, 5, :].set(False)  # a query with no allowed key -> output 0, grad 0
    mask = mask.at[1, 0, :, 16:32].set(False)  # a KV tile that is fully masked -> skipped
    primals, (out, tan, grads) = _check_case(impl, (2, 32, 40, 4, 1, 32), B16, mask=mask)
    np.testing.assert_array_equal(out[0, 5], 0.0)
    np.testing.assert_array_equal(tan[0, 5], 0.0)


@pytest.mark.parametrize("impl", IMPLS)
def test_broadcast_key_padding_mask(impl):
    # A (B, 1, 1, M) key-padding mask (cross-attention over padded condition tokens), odd lengths:
    # the mask is broadcast over heads and queries (it used to be zero-padded along q_seq, which
    # masked every query row but the first).
    valid = jnp.array([3, 24])[:, None, None, None]
    mask = jnp.arange(24)[None, None, None, :] < valid
    _check_case(impl, (2, 20, 24, 2, 2, 32), B16, mask=mask)
    # and a (1, 1, N, 1) mask, broadcast along the keys
    rows = (jnp.arange(20) % 3 != 0)[None, None, :, None]
    _check_case(impl, (2, 20, 24, 2, 2, 32), B16, mask=rows)


@pytest.mark.parametrize("impl", IMPLS)
def test_kv_index_routing_causal(impl):
    # Two query blocks of 16; block 0 routes to a prefix and (padded) -1s; block 1 to a window
    # plus a far entry that causality removes for early rows. Per-batch routing.
    kv_index = jnp.array(
        [
            [[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, -1, -1], [3, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 33, 40, -1, -1, -1]],
            [[0, 2, 4, 6, 8, 10, 12, 14, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1], [16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 44, 47]],
        ],
        jnp.int32,
    )
    _check_case(impl, (2, 32, 48, 2, 1, 32), B16, causal=True, kv_index=kv_index)


@pytest.mark.parametrize("impl", IMPLS)
def test_kv_cache_block_causal_positions(impl):
    # 16 new queries (two frames of 8) against a 48-entry cache holding 8 resp. 24 earlier
    # tokens: frame-causal positions q_positions[b, i] = offset[b] + (i // 8 + 1) * 8 - 1.
    frame = (jnp.arange(16) // 8 + 1) * 8 - 1
    qpos = jnp.stack([8 + frame, 24 + frame])
    _check_case(impl, (2, 16, 48, 2, 2, 32), B16, causal=True, q_positions=qpos)


def test_xla_path_matches_reference():
    (q, k, v), _, _ = _inputs(jax.random.PRNGKey(1), 2, 32, 40, 4, 2, 32)
    mask = jax.random.bernoulli(jax.random.PRNGKey(2), 0.7, (2, 4, 32, 40)).at[1, 2, 7].set(False)
    kv_index = jnp.array([[0, 1, 5, 9, 30, -1], [2, 3, 4, 20, 21, 39]])
    for kw in (
        dict(),
        dict(causal=True),
        dict(mask=mask),
        dict(kv_index=kv_index, causal=True, mask=mask),
        dict(causal=True, q_offset=8),
        dict(causal=True, q_offset=jnp.array([3, 9])),
        dict(causal=True, q_positions=(jnp.arange(32) // 4) * 4 + 3),
    ):
        got = _jit(functools.partial(attention, implementation="xla", **kw))(q, k, v)
        want = _jit(functools.partial(attention_reference, **kw))(q, k, v)
        np.testing.assert_allclose(got, want, **TOL, err_msg=str(kw))


def _tiny_meanflow_net(params, x, s, t, *, impl):
    """u(x, s, t): one attention layer over tokens, time enters by adding features (test model)."""
    b, n, c = x.shape
    h = x + s[:, None, None] * params["ws"][None, None, :] + t[:, None, None] * params["wt"][None, None, :]
    q = (h @ params["wq"]).reshape(b, n, 2, c // 2)
    k = (h @ params["wk"]).reshape(b, n, 1, c // 2)
    v = (h @ params["wv"]).reshape(b, n, 1, c // 2)
    a = attention(q, k, v, causal=True, implementation=impl, block_sizes=B16)
    return a.reshape(b, n, c) @ params["wo"]


def _meanflow_loss(params, x1, x0, s, t, *, impl, stop_gradient=True):
    # MeanFlow (arXiv:2505.13447, eq. 10 in project time): z_t = (1-t) x0 + t x1, v = x1 - x0,
    # u_tgt = v - (t - s) d/dt u(z_t, s, t) along (v, 1), target under stop-gradient.
    z = (1 - t)[:, None, None] * x0 + t[:, None, None] * x1
    vel = x1 - x0
    f = lambda z_, t_: _tiny_meanflow_net(params, z_, s, t_, impl=impl)  # noqa: E731
    u, dudt = jax.jvp(f, (z, t), (vel, jnp.ones_like(t)))
    target = vel - (t - s)[:, None, None] * dudt
    if stop_gradient:
        target = jax.lax.stop_gradient(target)
    return jnp.mean((u - target) ** 2)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("stop_gradient", [True, False])
def test_meanflow_style_loss_matches_xla(impl, stop_gradient):
    key = jax.random.PRNGKey(4)
    ks = jax.random.split(key, 10)
    c, n, b = 64, 24, 2
    shapes = {"wq": (c, c), "wk": (c, c // 2), "wv": (c, c // 2), "wo": (c, c)}
    params = {nm: jax.random.normal(kk, shapes[nm]) / np.sqrt(c) for nm, kk in zip(shapes, ks[:4])}
    params["ws"] = jax.random.normal(ks[4], (c,))
    params["wt"] = jax.random.normal(ks[5], (c,))
    x1 = jax.random.normal(ks[6], (b, n, c))
    x0 = jax.random.normal(ks[7], (b, n, c))
    t = jnp.array([0.7, 0.3])
    s = jnp.array([0.2, 0.1])
    with jax.default_matmul_precision("float32"):
        compiled = (
            _jit(jax.value_and_grad(functools.partial(_meanflow_loss, impl=impl, stop_gradient=stop_gradient)))
            .lower(params, x1, x0, s, t)
            .compile()
        )
        lk, gk = compiled(params, x1, x0, s, t)
        lx, gx = _jit(jax.value_and_grad(functools.partial(_meanflow_loss, impl="xla", stop_gradient=stop_gradient)))(
            params, x1, x0, s, t
        )
    np.testing.assert_allclose(lk, lx, rtol=1e-5)
    for name in params:
        np.testing.assert_allclose(gk[name], gx[name], atol=1e-5, rtol=1e-4, err_msg=name)
    # the gradient is not trivially zero
    assert float(jnp.abs(gk["wq"]).max()) > 1e-4
    # Memory: with the JVP target under stop-gradient (MeanFlow) the compiled program holds no
    # seq x seq array (attention logits would be f32[2,2,32,32]: batch, heads, padded seq^2).
    # Without the stop-gradient the second-order term goes through the unfused reference.
    n_quadratic = compiled.as_text().count("[2,2,32,32]")
    if stop_gradient:
        assert n_quadratic == 0
    else:
        assert n_quadratic > 0


@pytest.mark.parametrize("impl", IMPLS)
def test_vmap_of_jvp_and_grad(impl):
    # vmap over tangent directions (jacfwd-style) and over examples of a gradient: exercises the
    # batching rule of linear_call and the batching of pallas_call.
    (q, k, v), (tq, tk, tv), ct = _inputs(jax.random.PRNGKey(5), 1, 16, 16, 2, 1, 32)
    f = functools.partial(attention, implementation=impl, block_sizes=B16, causal=True)
    fr = functools.partial(attention_reference, causal=True)
    dirs = jnp.stack([tq, 2 * tq + 1, -tq])

    def tangents(fn):
        return jax.vmap(lambda d: jax.jvp(lambda q_: fn(q_, k, v), (q,), (d,))[1])(dirs)

    def per_example_grad(fn):
        return jax.vmap(jax.grad(lambda q_, k_, v_: jnp.sum(fn(q_[None], k_[None], v_[None]) ** 2), argnums=(0, 1)))(
            jnp.concatenate([q, 2 * q]), jnp.concatenate([k, k]), jnp.concatenate([v, -v])
        )

    with jax.default_matmul_precision("float32"):
        got = _jit(lambda: (tangents(f), per_example_grad(f)))()
        want = _jit(lambda: (tangents(fr), per_example_grad(fr)))()
    np.testing.assert_allclose(got[0], want[0], **TOL)
    for g, w in zip(got[1], want[1]):
        np.testing.assert_allclose(g, w, **TOL)


@pytest.mark.parametrize("impl", IMPLS)
def test_bf16_inputs_f32_statistics(impl):
    (q, k, v), (tq, tk, tv), _ = _inputs(jax.random.PRNGKey(6), 1, 32, 32, 2, 2, 64, dtype=jnp.bfloat16)
    f = functools.partial(attention, implementation=impl, block_sizes=B16, causal=True)
    out, tan = _jit(lambda: jax.jvp(f, (q, k, v), (tq, tk, tv)))()
    assert out.dtype == jnp.bfloat16 and tan.dtype == jnp.bfloat16
    up = lambda x: x.astype(jnp.float32)  # noqa: E731
    ref_out, ref_tan = jax.jvp(
        functools.partial(attention_reference, causal=True), (up(q), up(k), up(v)), (up(tq), up(tk), up(tv))
    )
    np.testing.assert_allclose(up(out), ref_out, atol=3e-2, rtol=3e-2)
    np.testing.assert_allclose(up(tan), ref_tan, atol=6e-2, rtol=6e-2)


def test_validation_errors():
    q = jnp.zeros((1, 8, 4, 32), jnp.float32)
    k = jnp.zeros((1, 8, 3, 32), jnp.float32)
    with pytest.raises(ValueError, match="KV heads must divide"):
        attention(q, k, k, implementation="xla")
    with pytest.raises(ValueError, match="`implementation`"):
        attention(q, q, q, implementation="cuda")
    with pytest.raises(ValueError, match="`mask`"):
        attention(q, q, q, mask=jnp.ones((1, 2, 8, 8), bool), implementation="xla")
    with pytest.raises(ValueError, match="`kv_index`"):
        attention(q, q, q, kv_index=jnp.array([[0, 1, 1]]), implementation="xla")
    with pytest.raises(ValueError, match="must divide the query length"):
        attention(q, q, q, kv_index=jnp.zeros((3, 2), jnp.int32), implementation="xla")
    with pytest.raises(ValueError, match="at most one"):
        attention(q, q, q, causal=True, q_offset=2, q_positions=jnp.arange(8), implementation="xla")
    with pytest.raises(ValueError, match="power of two"):
        BlockSizes(block_q=24)
    if not _ACCEL:
        with pytest.raises(ValueError, match="needs a GPU or TPU"):
            attention(q, q, q, implementation="pallas")
        assert default_implementation() == "xla"


def test_block_sizes_defaults():
    for backend in ("gpu", "tpu", "cpu"):
        for d in (32, 64, 128, 256):
            bs = BlockSizes.get_default(backend, head_dim=d)
            assert bs.block_q >= 16 and bs.block_k >= 16


def test_triton_lowering_cross_platform(monkeypatch):
    """The compiled GPU path lowers Pallas -> Triton IR for CUDA, checked on a CPU-only machine.

    ``.lower(lowering_platforms=("cuda",))`` runs the Pallas Triton lowering rules (not PTX
    compilation, which needs a GPU): it catches operations the Triton backend does not support.
    bf16, causal + KV routing + GQA + odd lengths, forward + JVP + VJP in one program.
    """
    import pallas_kernels.attention as attn_mod

    monkeypatch.setattr(attn_mod, "_backend", lambda: "gpu")
    (q, k, v), (tq, tk, tv), ct = _inputs(jax.random.PRNGKey(7), 2, 200, 136, 4, 2, 64, dtype=jnp.bfloat16)
    kv_index = jnp.array([[0, 1, 2, 3, 50, 51, -1, -1], [60, 61, 62, 63, 64, 65, 66, 135]])
    f = functools.partial(
        attention, implementation="pallas", causal=True, kv_index=kv_index, block_sizes=BlockSizes.get_default("gpu", head_dim=64)
    )
    lowered = jax.jit(functools.partial(_out_jvp_vjp, f)).trace((q, k, v), (tq, tk, tv), ct).lower(lowering_platforms=("cuda",))
    text = lowered.as_text()
    # Each kernel is embedded as a serialized Triton module (a "tt." function named after it).
    for name in ("flash_fwd", "flash_jvp", "flash_bwd_dq", "flash_bwd_dkv"):
        assert name in text, name
    assert "get_program_id" in text  # Triton IR, not the interpreter's HLO
