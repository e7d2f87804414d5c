"""FlowV2V IMP (spec flowv2v.md §3.2, §6 tests 3-5): pseudo flow from a shape deformation, exact warping."""

import jax
import jax.numpy as jnp
import numpy as np

from flowjax import physical as P


def _ellipse(size, cx, cy, ax, ay):
    rows, cols = jnp.meshgrid(jnp.arange(size, dtype=jnp.float64), jnp.arange(size, dtype=jnp.float64), indexing="ij")
    return (((cols - cx) / ax) ** 2 + ((rows - cy) / ay) ** 2 <= 1.0).astype(jnp.float64)


def test_pseudo_flow_transports_affine_source_motion():
    """Source flow = an affine motion field F(p) = (B - I)(p - c) + d on the whole frame; edit = scaled, shifted
    ellipse. Then F_hat(p) = F(psi(p)) exactly (bilinear sampling of a linear field), psi ~ c + (p - c_hat)/s."""
    size = 40
    m = _ellipse(size, 18.0, 20.0, 6.0, 4.0)
    s = 0.6
    me = _ellipse(size, 22.0, 17.0, 6.0 * s, 4.0 * s)
    th = 0.1
    bmat = 1.05 * jnp.array([[jnp.cos(th), -jnp.sin(th)], [jnp.sin(th), jnp.cos(th)]])
    c, d = jnp.array([18.0, 20.0]), jnp.array([1.2, -0.7])
    rows, cols = jnp.meshgrid(jnp.arange(size, dtype=jnp.float64), jnp.arange(size, dtype=jnp.float64), indexing="ij")
    p = jnp.stack([cols, rows], -1)
    lin = lambda q: jnp.einsum("ij,hwj->hwi", bmat - jnp.eye(2), q - c[None, None, :]) + d[None, None, :]
    flow = lin(p)
    fh = P.pseudo_flow(flow, m, me)
    a, b = P.shape_map(m, me)
    q = jnp.einsum("ij,hwj->hwi", a, p) + b[None, None, :]
    sel = me > 0.5
    np.testing.assert_allclose(fh[sel], lin(q)[sel], atol=1e-9)
    # psi is (close to) the inverse similarity c + (p - c_hat)/s for a scaled copy (discretisation only)
    np.testing.assert_allclose(a, jnp.eye(2) / s, atol=0.08)
    # background away from both masks keeps the source flow; the edited object does NOT get the raw flow at p
    bg = (P.dilate(m, 3) < 0.5) & (me < 0.5)
    np.testing.assert_array_equal(fh[bg], flow[bg])
    assert float(jnp.max(jnp.abs(fh[sel] - flow[sel]))) > 0.1


def test_imp_propagation_translation_is_exact():
    """Source object translating by an integer d on the whole frame: IMP propagates ANY edited mask exactly
    (M_hat_{i+1} = roll(M_hat_i, d)), and the exactly warped edited video has zero warping error."""
    size, d = 32, (2, 1)  # (dx, dy)
    m0 = _ellipse(size, 10.0, 12.0, 5.0, 3.0)
    me = ((jnp.abs(jnp.arange(size) - 11.0)[:, None] <= 2) & (jnp.abs(jnp.arange(size) - 10.0)[None, :] <= 4)).astype(jnp.float64)
    flow = jnp.broadcast_to(jnp.asarray(d, jnp.float64), (size, size, 2))
    m_hat, m_src = me, m0
    tex = jax.random.uniform(jax.random.key(0), (size, size, 3), jnp.float64)
    frames = [tex]
    for i in range(4):
        fh = P.pseudo_flow(flow, m_src, m_hat)
        np.testing.assert_allclose(fh[m_hat > 0.5], jnp.broadcast_to(jnp.asarray(d, jnp.float64), fh[m_hat > 0.5].shape), atol=1e-12)
        m_hat = P.splat_mask(m_hat, fh, close=False)
        m_src = jnp.roll(m_src, (d[1], d[0]), axis=(0, 1))
        np.testing.assert_array_equal(m_hat, jnp.roll(me, ((i + 1) * d[1], (i + 1) * d[0]), axis=(0, 1)))
        frames.append(jnp.roll(frames[-1], (d[1], d[0]), axis=(0, 1)))
    video = jnp.stack(frames)
    fw = jnp.broadcast_to(flow, (4, size, size, 2))
    assert float(P.warping_error(video, fw, -fw)) < 1e-20
