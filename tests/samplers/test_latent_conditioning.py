"""Latent-FM conditioning (inpainting, semantic maps) and the DiT intermediate-feature hook."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowjax.nets import MLP, DiT, init_params
from flowjax.nets.autoencoder import ConvAutoencoder, LatentAutoencoder
from flowjax.nets.latent_conditioning import ConcatConditioned, SpatialRescaler, one_hot_map
from flowjax.samplers import projected_euler
from flowjax.samplers.latent_conditioning import (
    concat_conditioned,
    half_masks,
    inpainting_condition,
    latent_conditional_sample,
    latent_inpaint,
    latent_replacement_inpaint,
    masked_pixel_condition,
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


@pytest.mark.slow  # ~20-40 s; runs with -m slow
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


def test_concat_conditioned_is_the_net_on_the_concatenation():
    net = ConcatConditioned(MLP(hidden=16, depth=2, out_dim=3))
    z = jax.random.normal(jax.random.key(20), (4, 3))
    c = jax.random.normal(jax.random.key(21), (4, 2, 5))
    t = jnp.linspace(0.1, 0.9, 4)
    params = init_params(net, jax.random.key(22), z, c=c)
    out = net.apply(params, z, t, c=c)
    assert out.shape == z.shape
    inner = MLP(hidden=16, depth=2, out_dim=3).apply({"params": params["params"]["net"]}, jnp.concatenate([z, c.reshape(4, -1)], -1), t)
    np.testing.assert_array_equal(out, inner)
    with pytest.raises(ValueError, match="condition"):
        net.apply(params, z, t)
    with pytest.raises(ValueError, match="features per sample"):
        bad = ConcatConditioned(MLP(hidden=16, depth=2, out_dim=5))
        bad.init(jax.random.key(0), z, t, c=c)


@pytest.mark.parametrize("space", ["latent", "pixel"])
def test_masked_condition_net_ignores_hidden_pixels(space):
    """Gradient and perturbation check: the conditioned velocity does not depend on the pixels in the hole."""
    x = jax.random.uniform(jax.random.key(30), (6, 8, 8, 1), minval=-1.0, maxval=1.0)
    m = half_masks(jax.random.key(31), 6, 8, 8)
    if space == "latent":  # the project's conv encoder (random weights) inside the condition
        module = ConvAutoencoder(image_shape=(8, 8, 1), latent_dim=4, channels=4)
        ae = LatentAutoencoder(module=module, params=module.init(jax.random.key(32), x[:2]), scale=2.0, shift=0.1)
        cond = lambda x, m: inpainting_condition(ae.encode, x, m)  # noqa: E731
        zdim = 4
    else:
        cond = masked_pixel_condition
        zdim = 64
    net = ConcatConditioned(MLP(hidden=16, depth=2, out_dim=zdim))
    z = jax.random.normal(jax.random.key(33), (6, zdim))
    t = jnp.full((6,), 0.4)
    params = init_params(net, jax.random.key(34), z, c=cond(x, m))
    v = lambda x: net.apply(params, z, t, c=cond(x, m))  # noqa: E731
    g = jax.grad(lambda x: jnp.sum(v(x) * jnp.arange(1.0, 1.0 + zdim)[None, :]))(x)
    hole = np.asarray(m) > 0.5
    assert np.all(np.asarray(g)[hole] == 0.0)  # exactly zero on every hidden pixel
    assert np.mean(np.asarray(g)[~hole] != 0.0) > 0.5  # the known pixels do matter
    x_pert = jnp.where(m > 0.5, 50.0 * jax.random.normal(jax.random.key(35), x.shape), x)
    np.testing.assert_array_equal(v(x_pert), v(x))  # bitwise identical
    np.testing.assert_array_equal(cond(x_pert, m), cond(x, m))
    if space == "pixel":
        c = masked_pixel_condition(x, m)
        assert c.shape == (6, 128)
        np.testing.assert_array_equal(c[:, 64:], m.reshape(6, -1))


def test_latent_replacement_with_identity_ae_is_projected_euler():
    """E = D = identity: the latent replacement equals the pixel projected-Euler replacement (A = known-pixel projector)."""
    a = jnp.array(0.7)
    v = lambda x, t: -a * x + jnp.sin(3.0 * t)[:, None, None, None]  # noqa: E731  any field
    x = jax.random.normal(jax.random.key(40), (5, 4, 4, 1))
    m = half_masks(jax.random.key(41), 5, 4, 4)
    key = jax.random.key(42)
    out, raw = latent_replacement_inpaint(v, key, x, m, encode_fn=lambda y: y, decode_fn=lambda y: y, latent_shape=(4, 4, 1),
                                          steps=7, return_unpasted=True)
    x0 = jax.random.normal(key, x.shape, x.dtype)
    ref = projected_euler(v, x0, (1.0 - m) * x, forward=lambda y: (1.0 - m) * y, pinv=lambda r: (1.0 - m) * r, steps=7)
    np.testing.assert_allclose(raw, ref, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(out)[np.asarray(m) < 0.5], np.asarray(x)[np.asarray(m) < 0.5])


def test_latent_replacement_keeps_known_pixels_with_lossy_ae():
    enc, dec = _linear_ae(jax.random.key(43))  # 16 pixels -> 3 latents: lossy
    v = lambda z, t: -z  # noqa: E731
    x = jax.random.normal(jax.random.key(44), (6, 4, 4, 1))
    m = half_masks(jax.random.key(45), 6, 4, 4)
    out, raw = jax.jit(lambda k: latent_replacement_inpaint(v, k, x, m, encode_fn=enc, decode_fn=dec, latent_shape=(3,), steps=5,
                                                            return_unpasted=True))(jax.random.key(46))
    known = np.asarray(m) < 0.5
    np.testing.assert_array_equal(np.asarray(out)[known], np.asarray(x)[known])
    np.testing.assert_array_equal(np.asarray(out)[~known], np.asarray(raw)[~known])
    assert float(jnp.max(jnp.abs(jnp.where(m < 0.5, raw - x, 0.0)))) > 1e-3  # the decoder alone does not keep them
    with pytest.raises(ValueError, match="mask"):
        latent_replacement_inpaint(v, jax.random.key(0), x, m[:, :2], encode_fn=enc, decode_fn=dec, latent_shape=(3,))
