"""DiT, spatial-temporal and causal transformers: exact structural properties and sharding."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from flowjax.nets import LOGICAL_AXIS_RULES, CausalTransformer, DiT, STTransformer, init_kv_cache, param_shardings
from flowjax.nets.transformer_layers import sharded_attention
from pallas_kernels.attention import BlockSizes, attention

B16 = BlockSizes(16, 16, 16, 16, 16, 16, 16, 16)
# XLA's backend optimisations only cost compile time for these tiny programs.
_jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})


def _perturb_impl(params, key, scale=0.1):
    """Generic non-zero parameters (adaLN-Zero makes the initial output exactly 0).

    A deterministic quasi-random offset per leaf: random normals per leaf would multiply the
    compile time of these tiny tests several times over.
    """
    del key
    leaves, tree = jax.tree.flatten(nn.meta.unbox(params))
    out = []
    for i, x in enumerate(leaves):
        phase = jnp.arange(x.size, dtype=x.dtype).reshape(x.shape) * 0.7548776662 + 0.5698402910 * (i + 1)
        out.append(x + scale * 2.0 * jnp.sin(12.9898 * phase))
    return jax.tree.unflatten(tree, out)


def _init(net, key, *args, **kwargs):
    """Jitted init (eager Flax init dispatches and compiles op by op): (boxed, perturbed params)."""

    def f(k_, a_, kw_):
        boxed = net.init(k_, *a_, **kw_)
        return boxed, _perturb_impl(boxed, jax.random.fold_in(k_, 1))

    return _jit(f)(key, args, kwargs)


def test_dit_adaln_zero_init_and_shapes():
    net = DiT(patch_size=2, dim=32, depth=2, heads=4, kv_heads=2, num_classes=3, two_times=True, time_mode="t_dt", qk_norm=True)
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 3))
    s, t = jnp.array([0.1, 0.2]), jnp.array([0.5, 0.9])
    params, p = _init(net, jax.random.PRNGKey(1), x, s, t, c=jnp.array([0, 1]))

    @_jit
    def run(params, p):
        out = net.apply(params, x, s, t, c=jnp.array([0, 3]))  # 3 = null label
        a = net.apply(p, x, s, t, c=jnp.array([0, 1]))
        b = net.apply(p, x, s, t)  # labels default to the null label
        return out, a, b

    out, a, b = run(params, p)
    assert out.shape == x.shape
    np.testing.assert_array_equal(out, 0.0)  # adaLN-Zero: the net starts at exactly 0
    assert float(jnp.abs(a - b).max()) > 1e-3
    # Validation runs at trace time: eval_shape checks it without compiling anything.
    with pytest.raises(ValueError, match="divisible by `patch_size`"):
        jax.eval_shape(lambda: net.apply(p, jnp.zeros((1, 7, 8, 3)), s[:1], t[:1]))
    with pytest.raises(ValueError, match="time argument"):
        jax.eval_shape(lambda: net.apply(p, x, t))


def test_dit_sharded_params_equal_single_device():
    net = DiT(patch_size=2, dim=32, depth=1, heads=4, num_classes=4)
    x = jax.random.normal(jax.random.PRNGKey(0), (8, 8, 8, 2))
    t = jnp.linspace(0.1, 0.9, 8)
    labels = jnp.arange(8) % 5
    boxed, params = _init(net, jax.random.PRNGKey(1), x, t, c=labels)

    def loss(p, x_, t_, c_):
        out = net.apply(p, x_, t_, c=c_)
        return jnp.mean((out - x_) ** 2), out

    step = _jit(jax.value_and_grad(loss, has_aux=True))
    (loss_1, out_1), grads_1 = step(params, x, t, labels)

    mesh = jax.make_mesh((2, 4), ("data", "fsdp"), axis_types=(AxisType.Auto, AxisType.Auto))
    shard = param_shardings(jax.tree.map(lambda b, v: b.replace_boxed(v) if isinstance(b, nn.LogicallyPartitioned) else v, boxed, params, is_leaf=lambda z: isinstance(z, nn.LogicallyPartitioned)), mesh)
    sharded = jax.device_put(params, shard)
    fc1 = sharded["params"]["block_0"]["mlp"]["fc1"]["kernel"]
    assert fc1.sharding.spec == P("fsdp", None)  # really sharded over fsdp
    batch = NamedSharding(mesh, P(("data", "fsdp")))
    xs, ts, cs = (jax.device_put(a, batch) for a in (x, t, labels))
    with jax.set_mesh(mesh), nn.logical_axis_rules(LOGICAL_AXIS_RULES):
        (loss_8, out_8), grads_8 = step(sharded, xs, ts, cs)
    assert len(out_8.sharding.device_set) == 8
    np.testing.assert_allclose(out_8, out_1, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(loss_8, loss_1, rtol=1e-6)
    for g8, g1 in zip(jax.tree.leaves(grads_8), jax.tree.leaves(grads_1)):
        np.testing.assert_allclose(g8, g1, atol=1e-5, rtol=1e-4)


def test_dit_pallas_interpret_matches_xla_value_and_jvp():
    # The fused kernels (interpreted) inside the net, through jax.jvp (MeanFlow's d/dt u).
    kw = dict(patch_size=2, dim=32, depth=1, heads=2, two_times=True, qk_norm=True)
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 1))
    s, t = jnp.array([0.1, 0.3]), jnp.array([0.6, 0.8])
    params = _init(DiT(**kw), jax.random.PRNGKey(1), x, s, t)[1]

    def run(impl):
        net = DiT(**kw, attention_impl=impl, block_sizes=B16)
        f = lambda x_, t_: net.apply(params, x_, s, t_)  # noqa: E731
        return _jit(lambda: jax.jvp(f, (x, t), (x, jnp.ones_like(t))))()

    (u_k, du_k), (u_x, du_x) = run("interpret"), run("xla")
    np.testing.assert_allclose(u_k, u_x, atol=2e-5, rtol=2e-5)
    np.testing.assert_allclose(du_k, du_x, atol=2e-4, rtol=2e-4)


def test_st_transformer_temporal_causality():
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 6, 5, 3))
    t = jnp.array([0.3, 0.7])
    x2 = x.at[:, 3:].add(1.0)  # change frames 3, 4, 5
    _, p = _init(STTransformer(dim=16, depth=2, heads=2, mlp_ratio=2.0), jax.random.PRNGKey(1), x, t)
    for causal in (True, False):  # same parameters: causality does not change them
        net = STTransformer(dim=16, depth=2, heads=2, mlp_ratio=2.0, temporal_causal=causal)
        a, b = _jit(lambda p_: (net.apply(p_, x, t), net.apply(p_, x2, t)))(p)
        past = float(jnp.abs(a[:, :3] - b[:, :3]).max())
        assert float(jnp.abs(a[:, 3:] - b[:, 3:]).max()) > 1e-3
        if causal:
            assert past < 1e-6, past  # frames 0..2 cannot see frames 3..5
        else:
            assert past > 1e-3


def test_st_transformer_video_and_frame_cond():
    net = STTransformer(dim=16, depth=1, heads=2, patch_size=2, two_times=True, num_classes=2, frame_cond_dim=4)
    x = jnp.ones((2, 3, 4, 6, 1))
    fc = jnp.ones((2, 3, 4))
    t = jnp.array([0.2, 0.4])
    p, _ = _init(net, jax.random.PRNGKey(0), x, t, t, frame_cond=fc)
    out = _jit(lambda p_: net.apply(p_, x, t, t, c=jnp.array([0, 2]), frame_cond=fc))(p)
    assert out.shape == x.shape
    np.testing.assert_array_equal(out, 0.0)
    with pytest.raises(ValueError, match="frame_cond"):
        jax.eval_shape(lambda: net.apply(p, x, t, t))


def test_causal_transformer_frame_causality_and_cache():
    net = CausalTransformer(dim=16, depth=2, heads=2, kv_heads=1, mlp_ratio=2.0, frame_size=2, out_dim=5)
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 3))
    p = _init(net, jax.random.PRNGKey(1), x)[1]

    @_jit
    def run(p):
        full = net.apply(p, x)
        moved = net.apply(p, x.at[:, 5].add(1.0))
        cache = init_kv_cache(net, batch=2, max_len=16)
        y1, cache = net.apply(p, x[:, :4], cache=cache)
        y2, cache = net.apply(p, x[:, 4:6], cache=cache)
        y3, cache = net.apply(p, x[:, 6:], cache=cache)
        return full, moved, (y1, y2, y3), cache

    full, moved, (y1, y2, y3), cache = run(p)
    assert full.shape == (2, 8, 5) and float(jnp.abs(full).max()) > 1e-3
    # Frame causality: changing token 5 (frame 2 = tokens 4, 5) leaves tokens 0..3 unchanged and
    # changes token 4 (same frame) and later frames.
    assert float(jnp.abs(moved[:, :4] - full[:, :4]).max()) < 1e-6
    assert float(jnp.abs(moved[:, 4] - full[:, 4]).max()) > 1e-4
    # Streaming with a KV cache reproduces the full pass.
    assert int(cache["length"]) == 8
    np.testing.assert_allclose(jnp.concatenate([y1, y2, y3], axis=1), full, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="overflow"):  # concrete cache length: checked at trace time
        jax.eval_shape(lambda: net.apply(p, jnp.zeros((2, 10, 3)), cache=cache))


def test_causal_transformer_kv_routing_with_cache():
    # KVPO-style: after an 8-token prefix, a new frame attends only to the sink frame (0, 1) and
    # to itself (8, 9): its output cannot depend on tokens 2..7 of the context.
    net = CausalTransformer(dim=16, depth=2, heads=2, mlp_ratio=2.0, frame_size=2, time_conditioning=True)
    ctx = jax.random.normal(jax.random.PRNGKey(0), (1, 8, 3))
    new = jax.random.normal(jax.random.PRNGKey(1), (1, 2, 3))
    t = jnp.array([0.5])
    p = _init(net, jax.random.PRNGKey(2), ctx, t)[1]
    route = jnp.array([[0, 1, 8, 9]])

    @_jit
    def step(context):
        _, cache = net.apply(p, context, t, cache=init_kv_cache(net, batch=1, max_len=12))
        out, _ = net.apply(p, new, t, cache=cache, kv_index=route)
        full_ctx, _ = net.apply(p, new, t, cache=cache)
        return out, full_ctx

    a, a_full = step(ctx)
    b, b_full = step(ctx.at[:, 2:8].add(1.0))
    np.testing.assert_allclose(a, b, atol=1e-6)  # routed: blind to tokens 2..7
    assert float(jnp.abs(a_full - b_full).max()) > 1e-4  # unrouted: sees them
    # Routing to every entry is the same as no routing.
    all_idx = jnp.arange(10)[None]

    @_jit
    def routed_all():
        _, cache = net.apply(p, ctx, t, cache=init_kv_cache(net, batch=1, max_len=10))
        return net.apply(p, new, t, cache=cache, kv_index=all_idx)[0], net.apply(p, new, t, cache=cache)[0]

    r_all, r_none = routed_all()
    np.testing.assert_allclose(r_all, r_none, atol=1e-6)


def test_sharded_attention_shard_map_interpret_matches_unsharded():
    mesh = jax.make_mesh((2, 4), ("data", "fsdp"), axis_types=(AxisType.Auto, AxisType.Auto))
    ks = jax.random.split(jax.random.PRNGKey(0), 3)
    q = jax.random.normal(ks[0], (8, 16, 2, 32), jnp.float32)
    k = jax.random.normal(ks[1], (8, 16, 1, 32), jnp.float32)
    v = jax.random.normal(ks[2], (8, 16, 1, 32), jnp.float32)
    offs = jnp.arange(8, dtype=jnp.int32)

    def loss(q_, k_, v_):
        o = sharded_attention(q_, k_, v_, causal=True, q_offset=offs, implementation="interpret", block_sizes=B16)
        return jnp.sum(o**2), o

    want = _jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(q, k, v)
    with jax.set_mesh(mesh):
        got = _jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(q, k, v)
    ref = _jit(lambda: attention(q, k, v, causal=True, q_offset=offs, implementation="xla"))()
    np.testing.assert_allclose(want[0][1], ref, atol=2e-5)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(g, w, atol=2e-5, rtol=2e-5)
