"""REPA cosine and TORA CKA alignment: exact identities and gradient flow."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowjax.losses.repa import cka_alignment, cosine_alignment, linear_cka, repa_cfm


def _orth(key, d):
    q, _ = jnp.linalg.qr(jax.random.normal(key, (d, d)))
    return q


@pytest.mark.parametrize("form", ["gram", "feature"])
def test_cka_identities(form):
    k1, k2, k3, k4 = jax.random.split(jax.random.key(0), 4)
    x = jax.random.normal(k1, (32, 5))
    y = jax.random.normal(k2, (32, 7)) + 0.5 * jnp.concatenate([x, x[:, :2]], axis=1)
    np.testing.assert_allclose(linear_cka(x, x, form=form), 1.0, atol=1e-9)
    base = linear_cka(x, y, form=form)
    assert 0.0 < float(base) < 1.0
    # orthogonal transform, isotropic scaling and translation of either argument leave CKA unchanged
    np.testing.assert_allclose(linear_cka(x @ _orth(k3, 5), y, form=form), base, rtol=1e-9)
    np.testing.assert_allclose(linear_cka(x, 3.7 * (y @ _orth(k4, 7)) + 2.0, form=form), base, rtol=1e-9)
    # a non-isotropic scaling does change it (the test can fail)
    assert abs(float(linear_cka(x * jnp.array([[10.0, 1, 1, 1, 1]]), y, form=form)) - float(base)) > 1e-3


def test_cka_forms_agree_and_match_gram_definition():
    k1, k2 = jax.random.split(jax.random.key(1))
    x, y = jax.random.normal(k1, (10, 3)), jax.random.normal(k2, (10, 4))
    n = 10
    c = jnp.eye(n) - jnp.ones((n, n)) / n
    hs = lambda a, b: jnp.sum((c @ a @ a.T @ c) * (c @ b @ b.T @ c))
    ref = hs(x, y) / (jnp.sqrt(hs(x, x) * hs(y, y)) + 1e-8)
    np.testing.assert_allclose(linear_cka(x, y, form="gram"), ref, rtol=1e-10)
    np.testing.assert_allclose(linear_cka(x, y, form="feature"), ref, rtol=1e-10)


def test_alignment_losses_minimal_at_exact_optimum():
    t = jax.random.normal(jax.random.key(2), (3, 16, 6))
    q = _orth(jax.random.key(3), 6)
    assert float(cka_alignment(2.0 * t @ q, t)) == pytest.approx(0.0, abs=1e-9)
    assert float(cosine_alignment(4.0 * t, t)) == pytest.approx(0.0, abs=1e-12)
    other = jax.random.normal(jax.random.key(4), (3, 16, 6))
    assert float(cka_alignment(other, t)) > 0.05 and float(cosine_alignment(other, t)) > 0.5


@pytest.mark.parametrize("fn", [cka_alignment, cosine_alignment])
def test_alignment_gradient_reaches_only_student(fn):
    s = jax.random.normal(jax.random.key(5), (2, 8, 4))
    t = jax.random.normal(jax.random.key(6), (2, 8, 4))
    gs, gt = jax.grad(fn, argnums=(0, 1))(s, t)
    assert float(jnp.max(jnp.abs(gs))) > 1e-4
    assert float(jnp.max(jnp.abs(gt))) == 0.0


def test_repa_cfm_gradient_flow_through_student_and_projector_not_teacher():
    k = jax.random.split(jax.random.key(7), 4)
    x1 = jax.random.normal(k[0], (16, 3))
    params = {"w1": jax.random.normal(k[1], (4, 8)) * 0.3, "w2": jax.random.normal(k[2], (8, 3)) * 0.3,
              "proj": jax.random.normal(k[3], (8, 5)) * 0.3}
    teacher_w = jnp.ones((3, 5))

    def total(p, tw):
        def feature_fn(x, t):
            h = jnp.tanh(jnp.concatenate([x, t[:, None]], axis=1) @ p["w1"])
            return h @ p["w2"], h
        return repa_cfm(feature_fn, jax.random.key(8), x1, teacher_features=jnp.sin(x1 @ tw), project=lambda h: h @ p["proj"],
                        alignment="cka", weight=0.5)[0]

    gp, gtw = jax.grad(total, argnums=(0, 1))(params, teacher_w)
    assert all(float(jnp.max(jnp.abs(g))) > 0 for g in jax.tree.leaves(gp))
    assert float(jnp.max(jnp.abs(gtw))) == 0.0
    # with weight 0 the projector receives no gradient (alignment is its only use)
    g0 = jax.grad(lambda p: repa_cfm(lambda x, t: (jnp.tanh(jnp.concatenate([x, t[:, None]], 1) @ p["w1"]) @ p["w2"],
                                                   jnp.tanh(jnp.concatenate([x, t[:, None]], 1) @ p["w1"])),
                                     jax.random.key(8), x1, teacher_features=x1, project=lambda h: h @ p["proj"], weight=0.0)[0])(params)
    assert float(jnp.max(jnp.abs(g0["proj"]))) == 0.0


def test_input_validation():
    with pytest.raises(ValueError, match="student"):
        cka_alignment(jnp.zeros((2, 3, 4)), jnp.zeros((2, 5, 4)))
    with pytest.raises(ValueError, match="form"):
        linear_cka(jnp.zeros((3, 2)), jnp.zeros((3, 2)), form="bad")
