"""PerceiverSource (CSFM's S_phi, 2602.05951): shapes, masking, permutation invariance, initialisation,
gradient flow into the mean head and compatibility with losses.csfm / sources.conditional_gaussian_source."""

from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from flowjax.losses.csfm import csfm, directional_alignment
from flowjax.nets import ClassConditionalSource, PerceiverSource
from flowjax.sources import conditional_gaussian_source

_jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})


def _tokens(b=3, length=5, dc=6, seed=0):
    return jax.random.normal(jax.random.key(seed), (b, length, dc), jnp.float32)


MASK = jnp.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 1, 1, 0]], bool)


SMALL = dict(shape=(6,), num_latents=3, dim=16, depth=1, heads=2)


def _setup(src, c, mask=None, seed=1):
    params = _jit(src.init)(jax.random.key(seed), c, mask)
    return params, _jit(src.apply)


def test_shapes_and_logvar_heads():
    c = _tokens()
    src = PerceiverSource(shape=(4, 4, 3), num_latents=16, dim=16, depth=1, heads=2)
    params, apply = _setup(src, c, MASK)
    mu, lv = apply(params, c, MASK)
    assert mu.shape == lv.shape == (3, 4, 4, 3) and mu.dtype == jnp.float32
    assert float(jnp.max(jnp.abs(lv))) == 0.0  # fixed std (paper default): logvar = 0
    assert bool(jnp.all(jnp.isfinite(mu)))
    # the mean head emits prod(shape)/num_latents = 3 values per latent (one output token per query)
    assert nn.meta.unbox(params)["params"]["mean_head"]["kernel"].shape == (16, 3)
    pool = PerceiverSource(shape=(2,), num_latents=3, dim=16, depth=1, heads=2, readout="pool",
                           learn_logvar=True, logvar_init=1.0)
    params, apply = _setup(pool, c)
    mu, lv = apply(params, c)
    assert mu.shape == lv.shape == (3, 2)
    # log-variance head: kernel N(0, 1e-4^2) on a unit-RMS input of width 16 (so each element is 1.0 plus
    # noise of std 1e-4 * sqrt(16) = 4e-4); bias logvar_init (code 1.0). Bound: 6 standard deviations.
    np.testing.assert_allclose(np.asarray(lv), 1.0, atol=6 * 4e-4)


def test_padding_mask_invariance_and_null_condition():
    c = _tokens()
    for max_tokens in (None, 8):
        src = PerceiverSource(**SMALL, max_tokens=max_tokens)
        params, apply = _setup(src, c, MASK)
        mu, _ = apply(params, c, MASK)
        # padded tokens may hold anything
        junk = jnp.where(MASK[..., None], c, 100.0 * _tokens(seed=5))
        np.testing.assert_allclose(np.asarray(apply(params, junk, MASK)[0]), np.asarray(mu), rtol=1e-5, atol=1e-6)
        # trailing padding is the same as no token there (sample 0 has 3 valid tokens at the front)
        mu0, _ = apply(params, c[:1, :3], None)
        np.testing.assert_allclose(np.asarray(mu0[0]), np.asarray(mu[0]), rtol=1e-5, atol=1e-6)
        # a mask of all True equals no mask
        ones = jnp.ones_like(MASK)
        # (same float32 tolerance as above: the masked and unmasked softmax round differently)
        np.testing.assert_allclose(np.asarray(apply(params, c, ones)[0]), np.asarray(apply(params, c)[0]),
                                   rtol=1e-5, atol=1e-6)
    # a fully masked sample ignores its tokens: the same "null condition" output for any tokens
    none = jnp.zeros_like(MASK)
    m1, _ = apply(params, c, none)
    m2, _ = apply(params, _tokens(seed=9), none)
    np.testing.assert_allclose(np.asarray(m1), np.asarray(m2), rtol=0, atol=0)
    np.testing.assert_allclose(np.asarray(m1[0]), np.asarray(m1[1]), rtol=0, atol=0)


def test_permutation_invariance_without_positions():
    c = _tokens()
    perm = jnp.array([3, 0, 4, 2, 1])
    src = PerceiverSource(**SMALL)
    params, apply = _setup(src, c, MASK)
    mu, _ = apply(params, c, MASK)
    mu_p, _ = apply(params, c[:, perm], MASK[:, perm])
    np.testing.assert_allclose(np.asarray(mu_p), np.asarray(mu), rtol=1e-5, atol=1e-6)
    # with learned token positions (the paper's text setting) order matters
    pos = PerceiverSource(**SMALL, max_tokens=5)
    params, apply = _setup(pos, c, MASK)
    d = jnp.max(jnp.abs(apply(params, c[:, perm], MASK[:, perm])[0] - apply(params, c, MASK)[0]))
    assert float(d) > 1e-4


def test_mean_head_initialisation_scale():
    c = _tokens(b=4, length=5, dc=6)
    s, dim = 0.5, 64
    src = PerceiverSource(shape=(32, 32), num_latents=32, dim=dim, depth=1, heads=4, mean_init_std=s)
    params, apply = _setup(src, c)
    k = nn.meta.unbox(params)["params"]["mean_head"]["kernel"]
    # kernel N(0, s^2/dim) (2048 draws): its std is s/sqrt(dim) up to sampling error (~1.6% here)
    assert float(jnp.std(k)) == pytest.approx(s / math.sqrt(dim), rel=0.06)
    assert float(jnp.max(jnp.abs(nn.meta.unbox(params)["params"]["mean_head"]["bias"]))) == 0.0
    # on unit-RMS head inputs each mu element has std s (over the kernel draw); 32 columns -> ~13% error
    mu, _ = apply(params, c)
    assert float(jnp.sqrt(jnp.mean(mu**2))) == pytest.approx(s, rel=0.4)


def _toy(seed=0, n=64, classes=4, length=3, dc=5):
    """Per-class token sets and 2-D class-conditional data (class means on a ring)."""
    kt, kc, kx = jax.random.split(jax.random.key(seed), 3)
    class_tokens = jax.random.normal(kt, (classes, length, dc))
    lab = jax.random.randint(kc, (n,), 0, classes)
    ang = 2 * jnp.pi * lab / classes
    x1 = 3.0 * jnp.stack([jnp.cos(ang), jnp.sin(ang)], -1) + 0.2 * jax.random.normal(kx, (n, 2))
    return class_tokens[lab], lab, x1


class _Vel(nn.Module):
    @nn.compact
    def __call__(self, x, t, c=None):
        h = jnp.concatenate([x, t[:, None], jax.nn.one_hot(c, 4)], -1)
        return nn.Dense(2)(nn.tanh(nn.Dense(32)(h)))


def test_gradients_reach_the_mean_head_and_the_trunk():
    tok, lab, x1 = _toy()
    vel = _Vel()
    src = PerceiverSource(shape=(2,), num_latents=2, dim=16, depth=1, heads=2)  # mean_init_std 0.5
    params = _jit(lambda: {"v": vel.init(jax.random.key(2), x1, jnp.zeros(64), c=lab),
                           "s": src.init(jax.random.key(3), tok)})()
    # the same network with a zero-initialised mean head (mean_init_std=0: zero kernel, zero bias)
    zero = jax.tree.map(lambda a: a, params)
    zero["s"]["params"]["mean_head"]["kernel"] = jnp.zeros_like(nn.meta.unbox(params["s"]["params"]["mean_head"]["kernel"]))

    def loss(p, lam):
        mu, lv = src.apply(p["s"], tok)
        return csfm(lambda x, t, c: vel.apply(p["v"], x, t, c=c), jax.random.key(4), x1, mu=mu, logvar=lv,
                    lambda_align=lam, c=lab)[0]

    def align_only(p):
        return directional_alignment(src.apply(p["s"], tok)[0], x1)

    @_jit
    def grads(p, p0):
        g = lambda f, *a: nn.meta.unbox(jax.grad(f)(*a)["s"]["params"])  # noqa: E731
        return g(loss, p, 0.0), g(loss, p, 1.0), g(align_only, p), g(loss, p0, 1.0)

    g_fm, g_all, g_align, g_zero = grads(params, zero)
    norm = lambda g: float(jnp.sqrt(sum(jnp.sum(x**2) for x in jax.tree.leaves(g))))  # noqa: E731
    trunk = ("latents", "input_proj", "cross_0", "self_0", "ffn_0")
    # the FM term alone (through x_t and the target), FM + alignment, and alignment alone
    for g in (g_fm, g_all, g_align):
        assert norm(g["mean_head"]) > 1e-4
        for part in trunk:
            assert norm(g[part]) > 1e-8, part
    # with a zero-initialised head the trunk gets exactly no gradient at the first step (the head does)
    assert norm(g_zero["mean_head"]) > 1e-4
    for part in trunk:
        assert norm(g_zero[part]) == 0.0, part


def test_training_steps_decrease_the_csfm_loss_and_sampler_accepts_output():
    tok, lab, x1 = _toy()
    vel = _Vel()
    src = PerceiverSource(shape=(2,), num_latents=2, dim=16, depth=1, heads=2, learn_logvar=True)
    params = _jit(lambda: {"v": vel.init(jax.random.key(2), x1, jnp.zeros(64), c=lab),
                           "s": src.init(jax.random.key(3), tok)})()
    key = jax.random.key(4)

    def loss(p):
        mu, lv = src.apply(p["s"], tok)
        return csfm(lambda x, t, c: vel.apply(p["v"], x, t, c=c), key, x1, mu=mu, logvar=lv, fixed_std=None,
                    c=lab)[0]

    opt = optax.adam(1e-2)

    @_jit
    def step(p, s):
        l, g = jax.value_and_grad(loss)(p)
        u, s = opt.update(g, s, p)
        return optax.apply_updates(p, u), s, l

    # one small gradient-descent step decreases the loss (first order)
    l0, g = _jit(jax.value_and_grad(loss))(params)
    l1 = _jit(loss)(jax.tree.map(lambda a, b: a - 1e-3 * b, params, g))
    assert float(l1) < float(l0)
    state = opt.init(params)
    losses = []
    for _ in range(30):
        params, state, l = step(params, state)
        losses.append(float(l))
    assert losses[-1] < losses[0]
    # the sampler takes the net's (mu, logvar) as they are
    mu, lv = src.apply(params["s"], tok)
    x0, lv_used = conditional_gaussian_source(jax.random.key(5), mu, lv, fixed_std=None)
    assert x0.shape == x1.shape and bool(jnp.all(jnp.isfinite(x0)))
    x0f, _ = conditional_gaussian_source(jax.random.key(5), mu, lv)
    np.testing.assert_allclose(np.asarray(x0f - mu), np.asarray(jax.random.normal(jax.random.key(5), mu.shape, mu.dtype)),
                               rtol=1e-6, atol=1e-6)  # float32 round-off of (mu + eps) - mu


def test_same_interface_as_class_table():
    """Either source net plugs into the loss the same way: ``mu, logvar = net.apply(params, c)``."""
    tok, lab, x1 = _toy()
    v = lambda x, t, c: jnp.zeros_like(x)  # noqa: E731
    for net, cond in ((ClassConditionalSource(num_classes=4, shape=(2,), mean_init_std=0.5), lab),
                      (PerceiverSource(shape=(2,), num_latents=2, dim=16, depth=1, heads=2), tok)):
        p = net.init(jax.random.key(0), cond)
        mu, lv = net.apply(p, cond)
        assert mu.shape == lv.shape == x1.shape
        loss, aux = csfm(v, jax.random.key(1), x1, mu=mu, logvar=lv, c=lab)
        assert bool(jnp.isfinite(loss)) and float(aux["source_std"]) == 1.0


def test_interpret_kernel_matches_xla():
    c = _tokens()
    params, apply = _setup(PerceiverSource(**SMALL, implementation="xla"), c, MASK)
    ref = apply(params, c, MASK)[0]
    got = _jit(PerceiverSource(**SMALL, implementation="interpret").apply)(params, c, MASK)[0]
    np.testing.assert_allclose(np.asarray(got), np.asarray(ref), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, c, mask, err, match",
    [
        ({}, jnp.zeros((2, 3)), None, ValueError, "rank 3"),
        ({}, jnp.zeros((2, 3, 4), jnp.int32), None, TypeError, "floating"),
        ({}, jnp.zeros((2, 0, 4)), None, ValueError, "at least one token"),
        ({}, jnp.zeros((2, 3, 4)), jnp.ones((2, 4), bool), ValueError, "mask"),
        ({}, jnp.zeros((2, 3, 4)), jnp.ones((2, 3), jnp.int32), TypeError, "boolean"),
        ({"max_tokens": 2}, jnp.zeros((2, 3, 4)), None, ValueError, "max_tokens"),
        ({"num_latents": 4}, jnp.zeros((2, 3, 4)), None, ValueError, "divisible by `num_latents`"),
        ({"heads": 3}, jnp.zeros((2, 3, 4)), None, ValueError, "divisible by `heads`"),
        ({"readout": "cls"}, jnp.zeros((2, 3, 4)), None, ValueError, "readout"),
        ({"mean_init_std": -1.0}, jnp.zeros((2, 3, 4)), None, ValueError, "mean_init_std"),
        ({"shape": ()}, jnp.zeros((2, 3, 4)), None, ValueError, "shape"),
        ({"depth": 0}, jnp.zeros((2, 3, 4)), None, ValueError, "depth"),
    ],
)
def test_bad_inputs(kwargs, c, mask, err, match):
    base = dict(shape=(6,), num_latents=3, dim=16, depth=1, heads=2)
    base.update(kwargs)
    with pytest.raises(err, match=match):
        PerceiverSource(**base).init(jax.random.key(0), c, mask)
