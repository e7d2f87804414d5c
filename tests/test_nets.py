"""Velocity nets: shapes, time handling, zero-initialised second time, label conditioning."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowjax.nets import MLP, UNet, drop_labels, init_params


def test_mlp_one_and_two_times():
    x = jax.random.normal(jax.random.key(0), (5, 3))
    net = MLP(hidden=32, depth=2)
    p = init_params(net, jax.random.key(1), x)
    out = net.apply(p, x, jnp.linspace(0, 1, 5))
    assert out.shape == x.shape
    with pytest.raises(ValueError, match="time argument"):
        net.apply(p, x, jnp.zeros(5), jnp.zeros(5))
    net2 = MLP(hidden=32, depth=2, two_times=True, zero_init_second_time=True)
    p2 = init_params(net2, jax.random.key(1), x)
    a = net2.apply(p2, x, jnp.zeros(5), jnp.full((5,), 0.5))
    b = net2.apply(p2, x, jnp.full((5,), 0.3), jnp.full((5,), 0.5))
    np.testing.assert_allclose(a, b, atol=1e-6)  # zero-initialised second time: s has no effect at init
    net3 = MLP(hidden=32, depth=2, two_times=True)
    p3 = init_params(net3, jax.random.key(1), x)
    assert float(jnp.abs(net3.apply(p3, x, jnp.zeros(5), jnp.ones(5)) - net3.apply(p3, x, jnp.ones(5) * 0.5, jnp.ones(5))).max()) > 1e-4


def test_mlp_flattens_images_and_time_matters():
    x = jax.random.normal(jax.random.key(0), (4, 4, 4, 1))
    net = MLP(hidden=16, depth=2)
    p = init_params(net, jax.random.key(1), x)
    assert net.apply(p, x, jnp.zeros(4)).shape == x.shape
    assert float(jnp.abs(net.apply(p, x, jnp.zeros(4)) - net.apply(p, x, jnp.ones(4))).max()) > 1e-4


def test_labels_and_null_label():
    x = jnp.ones((4, 2))
    net = MLP(hidden=16, depth=1, num_classes=3)
    p = init_params(net, jax.random.key(0), x, c=jnp.zeros(4, jnp.int32))
    a = net.apply(p, x, jnp.zeros(4), c=jnp.array([0, 1, 2, 3]))
    null = net.apply(p, x, jnp.zeros(4))
    np.testing.assert_allclose(a[3], null[3], rtol=1e-6)
    assert float(jnp.abs(a[0] - a[1]).max()) > 0
    dropped = drop_labels(jax.random.key(1), jnp.zeros(10000, jnp.int32), 0.1, 3)
    np.testing.assert_allclose(float(jnp.mean(dropped == 3)), 0.1, atol=0.01)


@pytest.mark.parametrize("size", [8, 28])
def test_unet_shapes_and_zero_init_output(size):
    x = jax.random.normal(jax.random.key(0), (2, size, size, 1))
    net = UNet(channels=8, num_classes=10)
    p = init_params(net, jax.random.key(1), x, c=jnp.zeros(2, jnp.int32))
    out = net.apply(p, x, jnp.zeros(2), c=jnp.array([1, 2]))
    assert out.shape == x.shape
    np.testing.assert_allclose(out, 0.0)  # zero-initialised output convolution
    with pytest.raises(ValueError, match="even"):
        net.apply(p, jnp.ones((1, 7, 7, 1)), jnp.zeros(1))
