"""Fused rollout kernel: reference vs the MLP apply and the flowmap sampler; interpret mode vs reference."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowjax.experiment import bind
from flowjax.nets import MLP, init_params
from flowjax.samplers import flowmap, flowmap_mlp
from pallas_kernels.rollout import BlockSizes, MLPSpec, mlp_average_velocity, rollout, rollout_reference


def _net(hidden, depth, *, dim=3, mode="st", act=nn.silu, classes=0, seed=0):
    net = MLP(hidden=hidden, depth=depth, time_dim=8, two_times=True, time_mode=mode, activation=act, num_classes=classes)
    params = init_params(net, jax.random.key(seed), jnp.zeros((2, dim), jnp.float32))
    return net, params


def test_reference_matches_the_flax_mlp_and_the_flowmap_sampler():
    for mode, act, classes in (("st", nn.silu, 0), ("t_dt", nn.gelu, 3)):
        net, params = _net(32, 2, mode=mode, act=act, classes=classes)
        spec = MLPSpec.from_net(net)
        x = jax.random.normal(jax.random.key(1), (9, 3))
        s, t = jnp.linspace(0.0, 0.5, 9), jnp.linspace(0.2, 1.0, 9)
        c = jnp.arange(9) % 4 if classes else None
        kw = {} if c is None else {"c": c}
        np.testing.assert_allclose(mlp_average_velocity(params, spec, x, s, t, c), net.apply(params, x, s, t, **kw),
                                   rtol=1e-5, atol=1e-6)
        grid = jnp.array([0.0, 0.3, 0.6, 1.0])
        np.testing.assert_allclose(rollout_reference(params, spec, x, grid, c), flowmap(bind(net, params), x, grid, c=c),
                                   rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("hidden, depth, steps, n", [(16, 1, 1, 37), (48, 3, 3, 20), (32, 2, 5, 8)])
def test_interpret_kernel_equals_reference(hidden, depth, steps, n):
    net, params = _net(hidden, depth, seed=hidden + depth)
    spec = MLPSpec.from_net(net)
    x = jax.random.normal(jax.random.key(2), (n, 3))
    grid = jnp.linspace(0.0, 1.0, steps + 1)
    ref = rollout_reference(params, spec, x, grid)
    out = rollout(params, spec, x, grid, implementation="interpret", block_sizes=BlockSizes(batch=16))
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(rollout(params, spec, x, grid, implementation="xla"), ref, rtol=1e-5, atol=1e-5)


def test_per_sample_grids_labels_and_inversion():
    net, params = _net(24, 2, classes=2)
    spec = MLPSpec.from_net(net)
    n = 19
    x = jax.random.normal(jax.random.key(3), (n, 3))
    c = jnp.arange(n) % 3
    grid = jnp.stack([jnp.linspace(1.0, 0.0, n), jnp.linspace(0.5, 0.25, n), jnp.zeros(n)])  # decreasing, per sample
    ref = rollout_reference(params, spec, x, grid, c)
    for impl in ("interpret", "xla"):
        out = rollout(params, spec, x, grid, c=c, implementation=impl, block_sizes=BlockSizes(batch=8))
        np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


def test_sampler_gives_the_same_samples_with_either_path():
    net, params = _net(32, 2)
    x = jax.random.normal(jax.random.key(4), (13, 3))
    grid = jnp.array([0.0, 0.5, 1.0])
    plain = flowmap(bind(net, params), x, grid)
    for impl in (None, "interpret", "xla"):
        np.testing.assert_allclose(flowmap_mlp(net, params, x, grid, implementation=impl), plain, rtol=1e-5, atol=1e-5)


def test_validation():
    net, params = _net(8, 1)
    spec = MLPSpec.from_net(net)
    with pytest.raises(ValueError, match="implementation"):
        rollout(params, spec, jnp.zeros((2, 3)), (0.0, 1.0), implementation="triton")
    with pytest.raises(ValueError, match="times"):
        rollout(params, spec, jnp.zeros((2, 3)), (0.0,))
    with pytest.raises(ValueError, match="two_times"):
        MLPSpec.from_net(MLP(hidden=8, depth=1))
