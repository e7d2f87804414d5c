"""``nets.init_variables``: the fast-compiling init gives ``module.init``'s parameters."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowjax import nets


def _max_abs_diff(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    return max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


class SmallConvNet(nn.Module):
    @nn.compact
    def __call__(self, x, t):
        h = nn.silu(nn.Conv(4, (3, 3))(x)) + nn.Dense(4)(t[:, None])[:, None, None, :]
        return nn.Conv(x.shape[-1], (3, 3))(nn.GroupNorm(num_groups=2)(h))


def test_matches_eager_init_for_a_conv_net():
    net = SmallConvNet()
    x, t = jnp.zeros((2, 8, 8, 1)), jnp.zeros((2,))
    fast = nets.init_variables(net, jax.random.key(3), x, t)
    eager = net.init(jax.random.key(3), x, t)
    # Same draws; the unoptimised program may round the truncated-normal transform differently.
    assert _max_abs_diff(fast, eager) < 1e-6
    other = nets.init_variables(net, jax.random.key(4), x, t)
    assert _max_abs_diff(fast, other) > 1e-2


def test_keyword_and_none_arguments_pass_through():
    net = nets.MLP(hidden=16, depth=2, num_classes=3)
    x, t = jnp.zeros((2, 2)), jnp.zeros((2,))
    with_c = nets.init_variables(net, jax.random.key(0), x, t, c=jnp.zeros((2,), jnp.int32))
    assert _max_abs_diff(with_c, net.init(jax.random.key(0), x, t, c=jnp.zeros((2,), jnp.int32))) < 1e-6
    np.testing.assert_allclose(nets.init_params(nets.MLP(hidden=16, depth=2), jax.random.key(1), x)["params"]["out"]["bias"], 0.0)


def test_works_under_vmap_over_keys():
    net = nets.MLP(hidden=8, depth=1)
    x, t = jnp.zeros((2, 2)), jnp.zeros((2,))
    keys = jax.random.split(jax.random.key(0), 3)
    batched = jax.vmap(lambda k: nets.init_variables(net, k, x, t))(keys)
    first = nets.init_variables(net, keys[0], x, t)
    assert _max_abs_diff(jax.tree.map(lambda a: a[0], batched), first) < 1e-6


def test_rejects_non_modules():
    with pytest.raises(TypeError, match="flax.linen Module"):
        nets.init_variables(lambda k, x: x, jax.random.key(0), jnp.zeros(2))
