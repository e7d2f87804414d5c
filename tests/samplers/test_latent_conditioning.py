"""Latent-FM conditioning (inpainting, semantic maps) and the DiT intermediate-feature hook."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowjax.nets import MLP, DiT, init_params
from flowjax.nets.latent_conditioning import SpatialRescaler, one_hot_map
from flowjax.samplers.latent_conditioning import (
    concat_conditioned,
    half_masks,
    inpainting_condition,
    latent_conditional_sample,
    latent_inpaint,
    paste_known,
)


def _linear_ae(key, pixels=16, latent=3):
    e = jax.random.normal(key, (pixels, latent)) / 4.0
    enc = lambda x: x.reshape(x.shape[0], -1) @ e  # noqa: E731
    dec = lambda z: (z @ e.T).reshape(z.shape[0], 4, 4, 1)  # noqa: E731
    return enc, dec


def test_half_masks_are_halves():
    m = np.asarray(half_masks(jax.random.key(0), 64, 8, 8))
    assert m.shape == (64, 8, 8, 1)
    np.testing.assert_array_equal(m.sum((1, 2, 3)), 32)  # exactly half missing
    for mi in m[..., 0]:
        assert any(np.array_equal(mi, ref) for ref in (
            np.tile(np.arange(8) < 4, (8, 1)), np.tile(np.arange(8) >= 4, (8, 1)),
            np.tile((np.arange(8) < 4)[:, None], (1, 8)), np.tile((np.arange(8) >= 4)[:, None], (1, 8))))


def test_inpainting_condition_encodes_the_hole_and_appends_mask():
    enc, _ = _linear_ae(jax.random.key(1))
    x = jax.random.normal(jax.random.key(2), (5, 4, 4, 1))
    m = half_masks(jax.random.key(3), 5, 4, 4)
    c = inpainting_condition(enc, x, m)
    assert c.shape == (5, 3 + 16)
    np.testing.assert_allclose(c[:, :3], enc(x * (1 - m)), atol=1e-6)  # pixels in the hole do not leak in
    x_changed = jnp.where(m > 0.5, 100.0, x)
    np.testing.assert_allclose(inpainting_condition(enc, x_changed, m), c, atol=1e-5)
    np.testing.assert_array_equal(c[:, 3:], m.reshape(5, -1))
    with pytest.raises(ValueError, match="mask"):
        inpainting_condition(enc, x, m[:, :2])


def test_inpainting_keeps_known_pixels_exactly():
    """With any (here random, untrained) velocity and decoder, the inpainted image equals the input off the hole."""
    enc, dec = _linear_ae(jax.random.key(4))
    net = MLP(hidden=16, depth=2, out_dim=3)
    params = init_params(net, jax.random.key(5), jnp.zeros((2, 3 + 3 + 16)))
    v = concat_conditioned(lambda h, t: net.apply(params, h, t))
    x = jax.random.normal(jax.random.key(6), (6, 4, 4, 1))
    m = half_masks(jax.random.key(7), 6, 4, 4)
    out = jax.jit(lambda k, x, m: latent_inpaint(v, k, x, m, encode_fn=enc, decode_fn=dec, latent_shape=(3,), steps=3,
                                                  guidance=1.5))(jax.random.key(8), x, m)
    known = np.asarray(m) < 0.5
    np.testing.assert_array_equal(np.asarray(out)[known], np.asarray(x)[known])
    assert float(jnp.max(jnp.abs(jnp.where(m > 0.5, out - x, 0.0)))) < 1e30
    assert float(jnp.mean(jnp.abs(jnp.where(m > 0.5, out - x, 0.0)))) > 0  # the hole is generated, not copied
    np.testing.assert_array_equal(paste_known(x + 1.0, x, jnp.zeros_like(x)), x)
    np.testing.assert_array_equal(paste_known(x + 1.0, x, jnp.ones_like(x)), x + 1.0)


def test_conditional_sample_cfg_w1_is_conditional_and_condition_constant():
    """w = 1 equals the plain conditional sample; the condition is constant along the ODE (exact linear field)."""
    a = 0.3
    v = lambda z, t, c: a * z + c.astype(z.dtype)  # noqa: E731  dz/dt = a z + c, closed form z1 = e^a z0 + (e^a - 1)/a c
    c = jnp.array([[0.5, -1.0], [2.0, 0.0]])
    z1 = latent_conditional_sample(v, jax.random.key(9), c, latent_shape=(2,), steps=64, solver="rk4")
    z0 = jax.random.normal(jax.random.key(9), (2, 2), c.dtype)
    np.testing.assert_allclose(z1, np.exp(a) * z0 + (np.exp(a) - 1) / a * c, rtol=1e-5, atol=1e-5)
    z1_w = latent_conditional_sample(v, jax.random.key(9), c, latent_shape=(2,), steps=64, solver="rk4", guidance=2.0,
                                     null_c=jnp.zeros_like(c))
    np.testing.assert_allclose(z1_w, np.exp(a) * z0 + 2 * (np.exp(a) - 1) / a * c, rtol=1e-5, atol=1e-5)  # linear in w


def test_spatial_rescaler_shapes_and_constant_map():
    seg = jnp.zeros((2, 8, 8), jnp.int32).at[1].set(3)
    oh = one_hot_map(seg, 5)
    assert oh.shape == (2, 8, 8, 5)
    r = SpatialRescaler(out_channels=4, n_stages=2)
    params = r.init(jax.random.key(10), oh)
    out = r.apply(params, oh)
    assert out.shape == (2, 2, 2, 4)
    # a constant class map stays constant after bilinear downsampling and a 1x1 conv
    np.testing.assert_allclose(out[0], jnp.broadcast_to(out[0, :1, :1], out[0].shape), atol=1e-6)
    assert float(jnp.max(jnp.abs(out[0] - out[1]))) > 0  # different classes, different conditions
    flat = SpatialRescaler(out_channels=4, n_stages=2, flatten=True).apply(params, oh)
    assert flat.shape == (2, 16)
    with pytest.raises(ValueError, match="divisible"):
        r.apply(params, one_hot_map(jnp.zeros((1, 6, 6), jnp.int32), 5))


def test_dit_feature_hook_layer_and_gradient_isolation():
    net = DiT(patch_size=2, dim=8, depth=2, heads=2, attention_impl="xla")
    x = jax.random.normal(jax.random.key(11), (2, 4, 4, 1))
    t = jnp.array([0.2, 0.7])
    params = net.init(jax.random.key(12), x, t)
    # adaLN-Zero gates start at 0 (blocks are the identity); perturb all params so the blocks act
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(13), len(leaves))
    params = jax.tree.unflatten(tree, [l + 0.1 * jax.random.normal(k, l.shape) for l, k in zip(leaves, keys)])
    feats = lambda p: net.apply(p, x, t, features_at=1)  # noqa: E731
    (out, h1), vjp = jax.vjp(feats, params)
    out_plain, h0 = net.apply(params, x, t), net.apply(params, x, t, features_at=0)[1]
    np.testing.assert_allclose(out, out_plain, atol=1e-6)  # the hook does not change the output
    assert h1.shape == (2, 4, 8) and float(jnp.max(jnp.abs(h1 - h0))) > 1e-4
    # a loss on layer-1 features gives no gradient to block 2 or the final layer, but reaches block 1
    (g,) = vjp((jnp.zeros_like(out), 2.0 * h1))
    g = g["params"]
    zero = lambda tree: max(float(jnp.max(jnp.abs(l))) for l in jax.tree.leaves(tree)) == 0.0  # noqa: E731
    assert zero(g["block_1"]) and zero(g["final"])
    assert not zero(g["block_0"]) and not zero(g["patch_embed"])
    with pytest.raises(ValueError, match="features_at"):
        net.apply(params, x, t, features_at=3)
