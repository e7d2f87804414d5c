"""VeCoR (2511.18942): single-target identity, exact optimum and correction, reductions, guards, RCS semantics."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowjax.losses import cfm
from flowjax.losses.vecor import (
    channel_mean,
    channel_shuffle,
    random_channel_permutations,
    vecor,
    vecor_correction,
    vecor_target,
)
from flowjax.testing import GaussianMixtureFlow


def test_single_target_identity_values_and_gradients():
    k = jax.random.split(jax.random.key(0), 4)
    v_hat = jax.random.normal(k[0], (8, 2, 2, 4))
    v_pos = jax.random.normal(k[1], (8, 2, 2, 4))
    v_negs = jax.random.normal(k[2], (3, 8, 2, 2, 4))
    lam = 0.1

    def raw(v):
        return jnp.mean((v - v_pos) ** 2) - lam * sum(jnp.mean((v - vn) ** 2) for vn in v_negs)

    y = vecor_target(v_pos, v_negs, lam=lam)
    single = lambda v: (1 - 3 * lam) * jnp.mean((v - y) ** 2)
    const = raw(v_hat) - single(v_hat)
    v2 = jax.random.normal(k[3], v_hat.shape)
    np.testing.assert_allclose(raw(v2) - single(v2), const, rtol=1e-10)
    np.testing.assert_allclose(jax.grad(raw)(v_hat), jax.grad(single)(v_hat), rtol=1e-10, atol=1e-14)


def test_exact_optimum_over_all_permutations_and_correction_recovers_fm_field():
    """(C=4, 2x2 layout) The per-point minimiser of E_pi[||v - v+||^2 - lam ||v - P_pi v+||^2], averaged
    exactly over all 4! permutations, is (I - lam Pbar) v_FM / (1 - lam); the correction inverts it."""
    flow = GaussianMixtureFlow(jnp.stack([jnp.linspace(-1, 1, 16), jnp.linspace(1, -2, 16)]), jnp.array([0.3, 0.5]), jnp.array([0.5, 0.5]))
    x = flow.sample_marginal(jax.random.key(1), 6, 0.5)
    v_fm = flow.velocity(x, 0.5).reshape(6, 2, 2, 4)
    lam = 0.2
    perms = jnp.array(list(itertools.permutations(range(4))))
    # expected loss with v+ replaced by its conditional mean is quadratic in v with the same minimiser;
    # the minimiser of sum_pi [||v - v_fm||^2 - lam ||v - P_pi v_fm||^2] is found by setting the gradient to 0
    neg_mean = jnp.mean(jnp.stack([channel_shuffle(v_fm, jnp.broadcast_to(p, (6, 4))) for p in perms]), 0)
    v_star = (v_fm - lam * neg_mean) / (1 - lam)
    np.testing.assert_allclose(v_star, (v_fm - lam * channel_mean(v_fm)) / (1 - lam), rtol=1e-12)
    grad = jax.grad(lambda v: jnp.mean(jnp.stack([jnp.sum((v - v_fm) ** 2) - lam * jnp.sum((v - channel_shuffle(v_fm, jnp.broadcast_to(p, (6, 4)))) ** 2) for p in perms])))(v_star)
    np.testing.assert_allclose(grad, 0.0, atol=1e-12)
    np.testing.assert_allclose(vecor_correction(v_star, lam=lam), v_fm, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(channel_mean(v_star), channel_mean(v_fm), rtol=1e-10)  # channel mean unbiased
    # K = 2 negatives: the correction with K lam
    v_star2 = (v_fm - 2 * lam * channel_mean(v_fm)) / (1 - 2 * lam)
    np.testing.assert_allclose(vecor_correction(v_star2, lam=lam, num_negatives=2), v_fm, rtol=1e-10, atol=1e-12)
    # derangements: E[P] = (11^T - I)/(C-1)
    der = jnp.array([p for p in perms.tolist() if all(p[i] != i for i in range(4))])
    neg_der = jnp.mean(jnp.stack([channel_shuffle(v_fm, jnp.broadcast_to(p, (6, 4))) for p in der]), 0)
    v_star_d = (v_fm - lam * neg_der) / (1 - lam)
    np.testing.assert_allclose(vecor_correction(v_star_d, lam=lam, derangement=True), v_fm, rtol=1e-10, atol=1e-12)


def test_reductions_and_guard():
    x1 = jax.random.normal(jax.random.key(2), (16, 2, 2, 4))
    v = lambda x, t: 0.5 * x
    l_fm = cfm(v, jax.random.key(3), x1)[0]
    # same key layout for x0 (first split) and t (second split)
    k0, kt, _ = jax.random.split(jax.random.key(3), 3)
    x0 = jax.random.normal(k0, x1.shape)
    from flowjax.timesteps import uniform

    t = uniform()(kt, 16)
    ref = cfm(v, jax.random.key(3), x1, x0=x0, time_sampler=lambda k, n: t)[0]
    np.testing.assert_allclose(vecor(v, jax.random.key(3), x1, lam=0.0)[0], ref, rtol=1e-12)
    np.testing.assert_allclose(vecor(v, jax.random.key(3), x1, num_negatives=0)[0], ref, rtol=1e-12)
    assert np.isfinite(float(l_fm))
    with pytest.raises(ValueError, match="unbounded"):
        vecor(v, jax.random.key(3), x1, lam=0.5, num_negatives=2)
    with pytest.raises(ValueError, match="negatives"):
        vecor(v, jax.random.key(3), x1, negatives="crop")


def test_permutation_semantics():
    v = jax.random.normal(jax.random.key(4), (3, 2, 2, 4))
    perms = random_channel_permutations(jax.random.key(5), 3, 4)
    out = channel_shuffle(v, perms)
    for i in range(3):
        np.testing.assert_array_equal(out[i], v[i][..., np.asarray(perms[i])])  # same perm at every position
    many = random_channel_permutations(jax.random.key(6), 20000, 4)
    emp = jnp.mean(jax.vmap(lambda p: channel_shuffle(v[:1], p[None]))(many), 0)
    np.testing.assert_allclose(emp, channel_mean(v[:1]), atol=0.05)
    der = random_channel_permutations(jax.random.key(7), 500, 4, derangement=True)
    assert not bool(jnp.any(der == jnp.arange(4)[None, :]))
    assert sorted(np.asarray(der[0]).tolist()) == [0, 1, 2, 3]


def test_gradient_only_through_prediction():
    x1 = jax.random.normal(jax.random.key(8), (16, 2, 2, 4))
    key = jax.random.key(9)
    w = jnp.array(0.3)

    def loss(w):
        return vecor(lambda x, t: w * x, key, x1, lam=0.1)[0]

    # reconstruct the single-target equivalent with the same draws
    k0, kt, kn = jax.random.split(key, 3)
    x0 = jax.random.normal(k0, x1.shape)
    from flowjax.timesteps import uniform

    t = uniform()(kt, 16)
    xt = t[:, None, None, None] * x1 + (1 - t[:, None, None, None]) * x0
    v_pos = x1 - x0
    perms = random_channel_permutations(jax.random.split(kn, 1)[0], 16, 4)
    y = vecor_target(v_pos, channel_shuffle(v_pos, perms)[None], lam=0.1)
    single = lambda w: 0.9 * jnp.mean((w * xt - y) ** 2)
    np.testing.assert_allclose(jax.grad(loss)(w), jax.grad(single)(w), rtol=1e-10)
