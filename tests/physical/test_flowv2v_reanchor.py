"""FlowV2V mask re-anchoring (ours, from spec flowv2v.md §7 "Accumulated drift"): exact answers on shifted masks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowjax import physical as P

SIZE = 64


def _grid(size=SIZE):
    return jnp.meshgrid(jnp.arange(size, dtype=jnp.float64), jnp.arange(size, dtype=jnp.float64), indexing="ij")


def _disk(cx, cy, r, size=SIZE):
    rows, cols = _grid(size)
    return (((cols - cx) ** 2 + (rows - cy) ** 2) <= r**2).astype(jnp.float64)


def _square(cx, cy, half, size=SIZE):
    rows, cols = _grid(size)
    return ((jnp.abs(cols - cx) <= half) & (jnp.abs(rows - cy) <= half)).astype(jnp.float64)


def _centroid(m):
    rows, cols = _grid(m.shape[0])
    return np.array([float(jnp.sum(cols * m)), float(jnp.sum(rows * m))]) / float(jnp.sum(m))


def _shift(m, d):
    """Integer shift by d = (dx, dy) with zero fill (no wrap-around)."""
    return jnp.roll(m, (d[1], d[0]), axis=(0, 1))  # callers keep the shape away from the border


def _translating_clip(d, bias, n):
    """Source disk moving by the integer d per frame; the 'estimated' source flow is d + bias on the whole frame."""
    src = jnp.stack([_disk(10.0 + i * d[0], 12.0 + i * d[1], 4.0) for i in range(n)])
    flow = jnp.broadcast_to(jnp.asarray(d, jnp.float64) + jnp.asarray(bias, jnp.float64), (n - 1, SIZE, SIZE, 2))
    return src, flow


@pytest.mark.parametrize("method", ["bilinear", "integer"])
def test_reanchor_noop_and_integer_shift(method):
    m = _square(20.0, 30.0, 3.0) + _disk(40.0, 30.0, 3.0)  # two blobs, integer-valued centroid not required
    c = _centroid(m)
    np.testing.assert_array_equal(P.reanchor_mask(m, jnp.asarray(c)), m)
    # integer displacement: exactly the shifted mask
    out = P.reanchor_mask(m, jnp.asarray(c + np.array([-5.0, 7.0])), method=method)
    np.testing.assert_array_equal(out, _shift(m, (-5, 7)))
    # pixels pushed off the image vanish (zero fill), they do not wrap around
    edge = _square(2.0, 30.0, 2.0)
    out = P.reanchor_mask(edge, jnp.asarray(_centroid(edge) + np.array([-3.0, 0.0])), method=method)
    assert float(out[:, SIZE - 5:].sum()) == 0.0
    assert 0 < float(out.sum()) < float(edge.sum())


@pytest.mark.parametrize("method", ["bilinear", "integer"])
def test_reanchor_subpixel_target_within_a_pixel(method):
    m = _disk(30.0, 31.0, 5.0)
    c = _centroid(m)
    for dx, dy in [(0.3, 0.7), (-1.4, 2.6), (3.5, -0.2), (0.49, 0.51)]:
        target = c + np.array([dx, dy])
        out = P.reanchor_mask(m, jnp.asarray(target), method=method)
        assert set(np.unique(np.asarray(out))) <= {0.0, 1.0}
        err = np.abs(_centroid(out) - target)
        assert np.all(err <= 0.5 + 1e-9), (dx, dy, err)
        assert abs(float(out.sum()) - float(m.sum())) <= 0.15 * float(m.sum())


def test_reanchor_empty_and_nonfinite_target():
    z = jnp.zeros((SIZE, SIZE), jnp.float64)
    out = P.reanchor_mask(z, jnp.array([5.0, 5.0]))
    np.testing.assert_array_equal(out, z)
    m = _disk(30.0, 30.0, 4.0)
    np.testing.assert_array_equal(P.reanchor_mask(m, jnp.array([jnp.nan, 3.0])), m)


def test_reanchored_propagation_follows_source_centroid_under_flow_bias():
    """Flow biased by (0.6, 0): splat rounds 2.6 -> 3, so plain IMP drifts 1 px per frame; re-anchored IMP keeps
    c_hat_i = c_i + (c_hat_1 - c_1); here that is exactly the square shifted by i*d."""
    d, n = (2, 1), 12
    src, flow = _translating_clip(d, (0.6, 0.0), n)
    edit = _square(18.0, 14.0, 3.0)
    offset = _centroid(edit) - _centroid(src[0])
    prop = jax.jit(P.imp_propagate, static_argnames=("reanchor", "reanchor_method", "calibrate", "isotropic", "close"))
    _, m_on = prop(src, flow, edit, reanchor=True)
    _, m_off = prop(src, flow, edit, reanchor=False)
    for i in range(1, n):
        assert np.linalg.norm(_centroid(m_on[i]) - (_centroid(src[i]) + offset)) < 1.0
        np.testing.assert_array_equal(m_on[i], _shift(edit, (i * d[0], i * d[1])))
    drift = np.linalg.norm(_centroid(m_off[-1]) - (_centroid(src[-1]) + offset))
    np.testing.assert_allclose(drift, n - 1, atol=1e-9)  # 1 px per frame, uncorrected


def test_reanchor_is_noop_when_propagation_is_exact():
    d, n = (2, 1), 8
    src, flow = _translating_clip(d, (0.0, 0.0), n)
    edit = _square(18.0, 14.0, 3.0) + _disk(24.0, 22.0, 2.0)
    f_on, m_on = P.imp_propagate(src, flow, edit, reanchor=True)
    f_off, m_off = P.imp_propagate(src, flow, edit, reanchor=False)
    np.testing.assert_array_equal(m_on, m_off)
    np.testing.assert_array_equal(f_on, f_off)


def test_imp_propagate_empty_edit_mask_and_calibrate_hook():
    src, flow = _translating_clip((2, 1), (0.3, 0.0), 5)
    z = jnp.zeros((SIZE, SIZE), jnp.float64)
    f, m = P.imp_propagate(src, flow, z, reanchor=True)
    assert bool(jnp.all(jnp.isfinite(f))) and float(jnp.abs(m).sum()) == 0.0
    # the calibrated flow drives the splat: a hook returning 0 flow keeps the mask in place (before re-anchoring)
    edit = _square(18.0, 14.0, 3.0)
    f0, m0 = P.imp_propagate(src, flow, edit, reanchor=False, calibrate=lambda fh, mh, ms, fs: jnp.zeros_like(fh))
    np.testing.assert_array_equal(f0, 0.0)
    np.testing.assert_array_equal(m0[-1], edit)


def test_reanchor_validation():
    m = _disk(30.0, 30.0, 4.0)
    with pytest.raises(TypeError, match="mask"):
        P.reanchor_mask(m.astype(jnp.int32), jnp.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="mask"):
        P.reanchor_mask(m[None], jnp.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="target_centroid"):
        P.reanchor_mask(m, jnp.array([1.0, 2.0, 3.0]))
    with pytest.raises(TypeError, match="target_centroid"):
        P.reanchor_mask(m, jnp.array([1, 2]))
    with pytest.raises(ValueError, match="method"):
        P.reanchor_mask(m, jnp.array([1.0, 2.0]), method="nearest")
    src, flow = _translating_clip((1, 0), (0.0, 0.0), 4)
    with pytest.raises(ValueError, match="source_flows"):
        P.imp_propagate(src, flow[:-1], m)
    with pytest.raises(ValueError, match="edit_mask"):
        P.imp_propagate(src, flow, m[:-1])
    with pytest.raises(ValueError, match="method"):
        P.imp_propagate(src, flow, m, reanchor_method="cubic")
