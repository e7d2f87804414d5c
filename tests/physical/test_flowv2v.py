"""Tests for flowjax.physical.flowv2v (spec flowv2v.md §6): exact warping identities and shape maps."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowjax import physical as P


def _img(key=0, size=16, c=3):
    return jax.random.uniform(jax.random.key(key), (size, size, c))


def _const(h, w, d):
    return jnp.broadcast_to(jnp.asarray(d, jnp.float64), (h, w, 2))


def _ellipse(size, cx, cy, ax, ay):
    rows, cols = jnp.meshgrid(jnp.arange(size, dtype=jnp.float64), jnp.arange(size, dtype=jnp.float64), indexing="ij")
    return (((cols - cx) / ax) ** 2 + ((rows - cy) / ay) ** 2 <= 1.0).astype(jnp.float64)


def test_warp_identity_and_integer_shift():
    im = _img()
    np.testing.assert_array_equal(P.backward_warp(im, _const(16, 16, (0.0, 0.0))), im)
    w = P.backward_warp(im, _const(16, 16, (2.0, -1.0)))  # W(I, d)(p) = I(p + d)
    np.testing.assert_allclose(w[1:, :-2], im[:-1, 2:], atol=1e-12)


def test_warping_error_zero_for_exact_flow():
    """Frames V_{i+1} = I(p - i d) shifted by integer d: E_warp with F = d is 0 on the in-image region."""
    base = _img(1, 24)
    d = (1.0, 2.0)
    video = jnp.stack([jnp.roll(base, (k * 2, k * 1), axis=(0, 1)) for k in range(4)])
    f = jnp.broadcast_to(_const(24, 24, d), (3, 24, 24, 2))
    err = P.warping_error(video, f, -f)
    assert float(err) < 1e-20
    # subpixel exact flow: V_i := W(V_{i+1}, F) by construction -> exactly 0
    g = 0.3 * jnp.sin(jnp.linspace(0, 3, 24))[:, None, None] * jnp.ones((24, 24, 2))
    v1 = _img(2, 24)
    v0 = P.backward_warp(v1, g)
    assert float(P.warping_error(jnp.stack([v0, v1]), g[None])) < 1e-20
    # the wrong flow gives a clearly positive error (the test can fail)
    assert float(P.warping_error(video, -f, f)) > 1e-2


def test_warping_error_offset_invariant():
    video = jnp.stack([_img(k, 12) for k in range(3)])
    f = 0.7 * jax.random.normal(jax.random.key(5), (2, 12, 12, 2))
    b = 0.7 * jax.random.normal(jax.random.key(6), (2, 12, 12, 2))
    np.testing.assert_allclose(P.warping_error(video + 0.25, f, b), P.warping_error(video, f, b), rtol=1e-10)


def test_occlusion_mask():
    f = _const(12, 12, (1.5, -0.5))
    o = P.occlusion_mask(f, -f, inside=False)
    np.testing.assert_array_equal(o, 1.0)
    bad = P.occlusion_mask(f, f, inside=False)  # backward flow disagrees by |2f|^2 = 10 > 0.01*5 + 0.5
    np.testing.assert_array_equal(bad, 0.0)
    oi = P.occlusion_mask(f, -f)
    # p + f leaves the image in the last column (dx=1.5) and the first row (dy=-0.5)
    assert float(oi[:, -1].max()) == 0.0 and float(oi[0].max()) == 0.0 and float(oi[1:, :-2].min()) == 1.0


def test_shape_map_identity_and_similarity():
    m = _ellipse(32, 14.0, 17.0, 6.0, 3.0)
    a, b = P.shape_map(m, m)
    np.testing.assert_allclose(a, jnp.eye(2), atol=1e-10)
    np.testing.assert_allclose(b, 0.0, atol=1e-9)
    flow = jax.random.normal(jax.random.key(3), (32, 32, 2))
    np.testing.assert_allclose(P.pseudo_flow(flow, m, m), flow, atol=1e-9)
    # exact similarity on moments: Sigma_hat = s^2 Sigma  ->  psi(p) = c + (p - c_hat)/s
    c, cov = P.mask_moments(m)
    s, ch = 1.7, jnp.array([3.0, -2.0])
    a, b = P.affine_from_moments(c, cov, ch, s**2 * cov)
    np.testing.assert_allclose(a, jnp.eye(2) / s, atol=1e-12)
    np.testing.assert_allclose(a @ ch + b, c, atol=1e-12)
    # psi sends the edited centroid to the source centroid for any pair of masks
    me = _ellipse(32, 20.0, 10.0, 3.0, 5.0)
    a, b = P.shape_map(m, me)
    np.testing.assert_allclose(a @ P.mask_moments(me)[0] + b, c, atol=1e-10)


def test_pseudo_flow_rigid_translation():
    """Source object translating by d with the whole frame's flow = d: F_hat = d on the edited mask."""
    m = _ellipse(32, 15.0, 16.0, 7.0, 4.0)
    me = (jnp.abs(jnp.arange(32.0) - 15)[:, None] <= 3) * (jnp.abs(jnp.arange(32.0) - 16)[None, :] <= 5) * 1.0
    d = jnp.array([1.5, -0.5])
    flow = _const(32, 32, d)
    fh = P.pseudo_flow(flow, m, me)
    np.testing.assert_allclose(fh[me > 0.5], jnp.broadcast_to(d, fh[me > 0.5].shape), atol=1e-12)
    # object moves by d, background static: F_hat = d where psi(p) lands in erode(M)
    flow2 = m[..., None] * d[None, None, :]
    fh2 = P.pseudo_flow(flow2, m, me)
    a, b = P.shape_map(m, me)
    rows, cols = jnp.meshgrid(jnp.arange(32.0), jnp.arange(32.0), indexing="ij")
    q = jnp.stack([cols, rows], -1) @ a.T + b[None, None, :]
    er = P.erode(m, 3)
    qi = jnp.round(q).astype(int)
    inside = er[jnp.clip(qi[..., 1], 0, 31), jnp.clip(qi[..., 0], 0, 31)] > 0.5
    inside = inside & (P.erode(er, 3)[jnp.clip(qi[..., 1], 0, 31), jnp.clip(qi[..., 0], 0, 31)] > 0.5)
    sel = (me > 0.5) & inside
    assert int(sel.sum()) > 10
    np.testing.assert_allclose(fh2[sel], jnp.broadcast_to(d, fh2[sel].shape), atol=1e-12)
    # uncovered background (M \ M_hat) gets the background-ring median (0 here), not object flow
    unc = (m > 0.5) & (me < 0.5)
    np.testing.assert_array_equal(fh2[unc], 0.0)


def test_splat_mask_integer_shift_is_roll():
    m = _ellipse(24, 11.0, 12.0, 5.0, 3.0)
    out = P.splat_mask(m, _const(24, 24, (2.0, -1.0)), close=False)
    np.testing.assert_array_equal(out, jnp.roll(m, (-1, 2), axis=(0, 1)))
    out_c = P.splat_mask(m, _const(24, 24, (2.0, -1.0)))
    assert abs(float(out_c.sum()) - float(m.sum())) <= 0.1 * float(m.sum())


def test_validation():
    with pytest.raises(ValueError, match="flow"):
        P.backward_warp(_img(), jnp.zeros((16, 15, 2)))
    with pytest.raises(ValueError, match="flows_fwd"):
        P.warping_error(jnp.zeros((3, 8, 8, 3)), jnp.zeros((3, 8, 8, 2)))
