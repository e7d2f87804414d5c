"""Sharding: the same step on 1 device and on 8 fake CPU devices gives the same result."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

import train_toy as toy
from flowjax import train
from flowjax.train import sharding as shd


def _state_and_step(seed=0):
    params = toy.init_params(jax.random.key(seed), hidden=16)
    opt = train.make_optimizer(1e-2)
    state = train.create_train_state(params, opt, jax.random.key(seed + 1))
    return state, train.make_train_step(toy.loss_fn, opt, ema_decay=0.9)


def _run(state, step_fn, batches, mesh=None):
    if mesh is None:
        fn = jax.jit(step_fn)
    else:
        st_sh = shd.state_sharding(state, mesh)
        fn = jax.jit(step_fn, in_shardings=(st_sh, shd.batch_sharding(mesh)), out_shardings=(st_sh, None))
        state = jax.device_put(state, st_sh)
    losses = []
    for b in batches:
        if mesh is not None:
            b = shd.shard_batch(b, mesh)
        state, m = fn(state, b)
        losses.append(float(m["loss"]))
    return state, losses


@pytest.mark.parametrize("data,fsdp", [(8, 1), (4, 2)])
def test_sharded_step_equals_unsharded(data, fsdp):
    assert len(jax.devices()) == 8
    state, step_fn = _state_and_step()
    bf = toy.make_batch_fn(batch=16)
    batches = [bf(s) for s in range(4)]
    ref, ref_losses = _run(state, step_fn, batches)
    mesh = train.make_mesh(data, fsdp)
    out, losses = _run(state, step_fn, batches, mesh)
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-12)
    for a, b in zip(jax.tree.leaves(ref), jax.tree.leaves(out)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-10, atol=1e-12)
    if fsdp > 1:  # parameters really are split over the fsdp axis
        w = out.params["l1"]["w"]  # (4, 16): the 16-axis is the largest divisible one
        assert w.sharding.spec == P(None, "fsdp")
        assert w.addressable_shards[0].data.shape == (4, 16 // fsdp)
        assert out.opt_state[1][0].mu["l1"]["w"].sharding.spec == P(None, "fsdp")


def test_make_mesh_shapes_and_errors():
    m = train.make_mesh()
    assert dict(m.shape) == {"data": 8, "fsdp": 1, "tensor": 1}
    assert dict(train.make_mesh(fsdp=4).shape) == {"data": 2, "fsdp": 4, "tensor": 1}
    assert all(t == jax.sharding.AxisType.Auto for t in m.axis_types)
    with pytest.raises(ValueError, match=r"must equal the number of devices \(8\)"):
        train.make_mesh(3, 2)
    with pytest.raises(ValueError, match="`fsdp` must be a positive integer"):
        train.make_mesh(fsdp=0)
    with pytest.raises(ValueError, match="must divide the number of devices"):
        train.make_mesh(fsdp=3)


def test_fsdp_spec_and_logical_rules():
    mesh = train.make_mesh(2, 4)
    assert shd.fsdp_spec((3, 8, 12), mesh) == P(None, None, "fsdp")
    assert shd.fsdp_spec((8, 6), mesh) == P("fsdp", None)
    assert shd.fsdp_spec((3, 5), mesh) == P()  # nothing divisible: replicated
    assert shd.fsdp_spec((), mesh) == P()
    assert shd.fsdp_spec((8,), mesh, min_size=100) == P()
    assert shd.logical_to_spec(("batch", "embed")) == P(("data", "fsdp"), None)  # fsdp used once
    assert shd.logical_to_spec(("embed", "heads")) == P("fsdp", "tensor")
    assert shd.logical_to_spec((None, "kv")) == P(None, None)
    with pytest.raises(ValueError, match="logical axis 'embd' has no rule"):
        shd.logical_to_spec(("embd",))


def test_logical_axes_override_shape_rule():
    mesh = train.make_mesh(4, 2)
    state, _ = _state_and_step()
    axes = {"l1": {"w": ("embed", None), "b": (None,)}, "l2": {"w": (None, None), "b": (None,)}}
    sh = shd.state_sharding(state, mesh, logical_axes=axes)
    assert sh.params["l1"]["w"].spec == P("fsdp", None)
    assert sh.ema_params["l1"]["w"].spec == P("fsdp", None)
    assert sh.params["l2"]["w"].spec == P(None, None)


def test_shard_batch_errors_name_the_leaf():
    mesh = train.make_mesh()
    with pytest.raises(ValueError, match=r"`batch\['x'\]` has batch size 12 .* not divisible by the 8 devices"):
        shd.shard_batch({"x": np.zeros((12, 3))}, mesh)
    with pytest.raises(ValueError, match=r"`batch\['t'\]` must have a batch axis"):
        shd.shard_batch({"t": np.float64(0.5)}, mesh)
    out = shd.shard_batch({"x": np.ones((16, 3))}, mesh)
    assert out["x"].sharding.spec == P(("data", "fsdp"))
    stacked = shd.shard_batch({"x": np.ones((2, 16, 3))}, mesh, stacked=True)
    assert stacked["x"].sharding.spec == P(None, ("data", "fsdp"))
    assert len(stacked["x"].addressable_shards) == 8


def test_fit_on_mesh_equals_single_device():
    params = toy.init_params(jax.random.key(0))
    kw = dict(batch_fn=toy.make_batch_fn(), steps=12, key=jax.random.key(3), log_every=4)
    s1, h1 = train.fit(toy.loss_fn, params, **kw)
    s8, h8 = train.fit(toy.loss_fn, params, mesh=train.make_mesh(4, 2), **kw)
    np.testing.assert_allclose([r["loss"] for r in h8], [r["loss"] for r in h1], rtol=1e-12)
    for a, b in zip(jax.tree.leaves(s1), jax.tree.leaves(s8)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-10, atol=1e-12)
