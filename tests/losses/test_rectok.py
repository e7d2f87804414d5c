"""RecTok losses (spec rectok.md section 6): shift map, noising convention, masking, L_sem, optimum, gradient flow."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowjax.losses import rectok as rt
from flowjax.timesteps import shifted, uniform


def test_shift_map_endpoints_monotone_and_median():
    s = math.sqrt(8.0)
    t = jnp.linspace(0.0, 1.0, 101)
    y = rt.shift_code_time(t, s)
    assert float(y[0]) == 0.0 and abs(float(y[-1]) - 1.0) < 1e-12
    assert bool(jnp.all(jnp.diff(y) > 0))
    # median of t' ~ U is 1/2, so the median of t is s/2 / (1 + (s-1)/2) = 0.739 (spec test 1)
    assert abs(float(rt.shift_code_time(0.5, s)) - 0.7387961) < 1e-6
    assert abs(rt.rectok_shift(256, 128) - s) < 1e-12
    # the project-time sampler is the same map applied to 1 - t
    key = jax.random.key(0)
    tau = shifted(uniform(), s)(key, 20001)
    assert abs(float(jnp.median(1.0 - tau)) - 0.7387961) < 0.01


def test_noising_convention_matches_code_time():
    key = jax.random.key(1)
    z = jax.random.normal(jax.random.key(2), (5, 4, 3))
    t_code = jnp.array([0.0, 0.2, 0.5, 0.9, 1.0])
    z_tau, eps = rt.noise_latent(key, z, 1.0 - t_code, gamma=1.0)
    code = (1.0 - t_code)[:, None, None] * z + t_code[:, None, None] * eps  # paper: (1 - t) z + t eps
    np.testing.assert_allclose(z_tau, code, atol=1e-12)
    np.testing.assert_allclose(z_tau[0], z[0], atol=0)  # tau = 1: clean latent
    np.testing.assert_allclose(z_tau[-1], eps[-1], atol=0)  # tau = 0: noise


def test_mask_ratio_distribution_and_keep_count():
    r = rt.sample_mask_ratio(jax.random.key(3), (200000,))
    assert abs(float(jnp.mean(r == 0.0)) - 0.2) < 0.005  # P(r = 0) = 0.1 / 0.5
    assert float(r.max()) <= 0.4
    for ratio in (0.0, 0.1, 0.25, 0.39):
        keep, shuf, restore = rt.random_masking(jax.random.key(4), 6, 256, ratio)
        n_keep = math.ceil((1 - ratio) * 256 - 1e-9)
        assert np.all(np.asarray(keep.sum(1)) == n_keep)
        # ids_restore inverts the shuffle exactly
        np.testing.assert_array_equal(np.take_along_axis(np.asarray(shuf), np.asarray(restore), 1), np.tile(np.arange(256), (6, 1)))
        # the kept tokens are the first n_keep of the shuffle
        kept_ids = np.sort(np.asarray(shuf)[:, :n_keep], 1)
        np.testing.assert_array_equal(kept_ids, np.stack([np.flatnonzero(k) for k in np.asarray(keep)]))
    keep, _, _ = rt.random_masking(jax.random.key(5), 3, 4, 0.25)
    assert np.all(np.asarray(keep.sum(1)) == 3)


def test_semantic_loss_cosine_properties():
    key = jax.random.key(6)
    f = jax.random.normal(key, (3, 4, 8))
    assert abs(float(rt.semantic_distillation(2.5 * f, f))) < 1e-12  # parallel -> 0, positive scaling
    assert abs(float(rt.semantic_distillation(-f, f)) - 2.0) < 1e-12  # antiparallel -> 2 (the bound)
    g = jax.random.normal(jax.random.key(7), f.shape)
    a, b = rt.semantic_distillation(g, f), rt.semantic_distillation(7.0 * g, f)
    assert abs(float(a - b)) < 1e-12 and 0.0 <= float(a) <= 2.0
    # the teacher is detached: no gradient reaches it
    gt = jax.grad(lambda t: rt.semantic_distillation(g, t))(f)
    assert float(jnp.max(jnp.abs(gt))) == 0.0
    gp = jax.grad(lambda p: rt.semantic_distillation(p, f))(g)
    assert float(jnp.max(jnp.abs(gp))) > 0.0


def test_masked_only_variant_is_zero_pseudo_loss_without_masking():
    f = jax.random.normal(jax.random.key(8), (2, 4, 5))
    g = jax.random.normal(jax.random.key(9), (2, 4, 5))
    keep = jnp.ones((2, 4), bool)  # r = 0
    val, grad = jax.value_and_grad(lambda p: rt.semantic_distillation(p, f, keep=keep, tokens="masked"))(g)
    assert float(val) == 0.0 and float(jnp.max(jnp.abs(grad))) == 0.0
    # "all" averages over all tokens; with half the tokens masked it is the mean of masked and visible parts
    keep = jnp.array([[True, False, True, False], [False, True, True, False]])
    full = rt.semantic_distillation(g, f)
    m = rt.semantic_distillation(g, f, keep=keep, tokens="masked")
    v = rt.semantic_distillation(g, f, keep=keep, tokens="visible")
    assert abs(float(full - 0.5 * (m + v))) < 1e-12
    with pytest.raises(ValueError, match="keep"):
        rt.semantic_distillation(g, f, tokens="masked")


def _linear_setup(key, n=16, k=3, n_tok=2, d=3, width=8):
    """Images x = A w (rank k), teacher features per token = B_n w: an exact linear tokenizer exists."""
    ka, kb, kw = jax.random.split(key, 3)
    a = jax.random.normal(ka, (width, k))
    bmat = jax.random.normal(kb, (n_tok, k, 5))
    w = jax.random.normal(kw, (n, k))
    x = w @ a.T
    feats = jnp.einsum("nk,tkf->ntf", w, bmat)
    # exact encoder: each token holds w (d = k), decoder A, semantic decoder B_n
    enc = jnp.linalg.pinv(a)  # (k, width)
    params = {"enc": jnp.stack([enc] * n_tok), "dec": a / n_tok, "sem": bmat}
    return x, feats, params


def _fns(params):
    def encode(x, keep):
        return jnp.einsum("tkw,nw->ntk", params["enc"], x), None

    def decode(z, keep):
        return jnp.einsum("ntk,wk->nw", z, params["dec"])

    def semantic(z, keep):
        return jnp.einsum("ntk,tkf->ntf", z, params["sem"])

    return encode, decode, semantic


def test_rectok_loss_exact_optimum_is_minimal():
    """Clean latent (no flow noise), unmasked, deterministic encoder: the analytic linear tokenizer has loss 0, zero gradient."""
    x, feats, params = _linear_setup(jax.random.key(10))

    @jax.jit
    def loss(p):
        return rt.rectok_loss(*_fns(p), jax.random.key(11), x, teacher_features=feats, flow_noise=False, masking=False,
                              kl_weight=0.0)[0]

    val, grads = jax.value_and_grad(loss)(params)
    assert abs(float(val)) < 1e-10
    assert max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(grads)) < 1e-8
    for name in params:  # any perturbation raises the loss
        bumped = dict(params, **{name: params[name] + 1e-2 * jax.random.normal(jax.random.key(12), params[name].shape)})
        assert float(loss(bumped)) > 1e-8


def test_semantic_term_exact_optimum_along_noiseless_flow():
    """gamma = 0: z_tau = tau z, and 1 - cos is scale invariant, so the linear semantic decoder is exact at every tau."""
    x, feats, params = _linear_setup(jax.random.key(17))

    def loss(p):
        return rt.rectok_loss(*_fns(p), jax.random.key(18), x, teacher_features=feats, gamma=0.0, masking=False, shift=3.0,
                              rec_weight=0.0, kl_weight=0.0)

    (val, aux), grads = jax.value_and_grad(loss, has_aux=True)(params)
    assert float(aux["tau_mean"]) < 0.9  # tau really varies (shifted sampler), the latent is scaled
    assert abs(float(val)) < 1e-10
    assert max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(grads)) < 1e-8


def test_semantic_gradient_reaches_encoder_through_noisy_latent_not_teacher():
    x, feats, params = _linear_setup(jax.random.key(13))
    teacher_param = jnp.ones(())

    def loss(p, tp):
        return rt.rectok_loss(*_fns(p), jax.random.key(14), x, teacher_features=tp * feats, rec_weight=0.0, kl_weight=0.0,
                              masking=True)[0]

    gp, gt = jax.grad(loss, argnums=(0, 1))(params, teacher_param)
    assert float(gt) == 0.0  # frozen VFM: no gradient
    assert float(jnp.max(jnp.abs(gp["enc"]))) > 1e-6  # FSD reaches the encoder through z_tau
    assert float(jnp.max(jnp.abs(gp["sem"]))) > 1e-6
    assert float(jnp.max(jnp.abs(gp["dec"]))) == 0.0  # rec weight 0: the pixel decoder gets nothing


def test_rectok_loss_jit_and_aux():
    x, feats, params = _linear_setup(jax.random.key(15))
    enc, dec, sem = _fns(params)

    def encode(x, keep):
        m, _ = enc(x, keep)
        return m, jnp.zeros_like(m) - 1.0

    f = jax.jit(lambda k: rt.rectok_loss(encode, dec, sem, k, x, teacher_features=feats, normalize_latent=True))
    loss, aux = f(jax.random.key(16))
    assert np.isfinite(float(loss))
    assert set(aux) == {"rec", "kl", "sem", "tau_mean", "keep_fraction", "latent_rms"}
    assert 0.5 <= float(aux["keep_fraction"]) <= 1.0
    with pytest.raises(ValueError, match="teacher_features"):
        rt.rectok_loss(encode, dec, sem, jax.random.key(0), x, teacher_features=feats[:3])
    with pytest.raises(ValueError, match="semantic_tokens"):
        rt.rectok_loss(encode, dec, sem, jax.random.key(0), x, teacher_features=feats, semantic_tokens="bogus")
