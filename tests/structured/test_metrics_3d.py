"""Structured metrics against hand-computed cases."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowjax import metrics_3d as M


def test_mpjpe_hand_case():
    gt = jnp.zeros((1, 2, 3))
    pred = jnp.array([[[3.0, 4.0, 0.0], [0.0, 0.0, 1.0]]])
    np.testing.assert_allclose(M.mpjpe(pred, gt), (5.0 + 1.0) / 2)


def test_p_mpjpe_removes_similarity_transform():
    gt = jax.random.normal(jax.random.key(0), (3, 6, 3))
    a = 0.7
    rot = jnp.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1.0]])
    pred = 2.5 * gt @ rot.T + jnp.array([1.0, -2.0, 0.5])[None, None]
    assert float(M.mpjpe(pred, gt)) > 1.0
    np.testing.assert_allclose(M.p_mpjpe(pred, gt), 0.0, atol=1e-9)
    # a reflection is not a rotation: P-MPJPE of a mirrored (non-planar) pose stays > 0
    assert float(M.p_mpjpe(gt * jnp.array([-1.0, 1.0, 1.0])[None, None], gt)) > 1e-2


def test_chamfer_hausdorff_hand_case():
    x = jnp.array([[0.0, 0, 0], [1.0, 0, 0]])
    y = jnp.array([[0.0, 0, 0], [3.0, 0, 0]])
    # x->y min sq: 0, 1 -> mean .5 ; y->x: 0, 4 -> mean 2 ; half-sum = 1.25
    np.testing.assert_allclose(M.chamfer(x, y), 1.25)
    np.testing.assert_allclose(M.chamfer(x, y, reduction="sum"), 2.5)
    np.testing.assert_allclose(M.chamfer(x, y, squared=False), 0.5 * (0.5 + 1.0))
    np.testing.assert_allclose(M.hausdorff(x, y), 2.0)
    np.testing.assert_allclose(M.chamfer(x, x), 0.0, atol=1e-12)
    np.testing.assert_allclose(M.hausdorff(y, y), 0.0, atol=1e-6)
    # HD >= both one-sided mean distances
    assert float(M.hausdorff(x, y)) >= float(M.chamfer(x, y, squared=False, reduction="sum")) / 2


def test_point_to_surface_sphere_and_torus():
    x = jnp.array([[2.0, 0, 0], [0, 0.5, 0], [0, 0, -1.0]])
    np.testing.assert_allclose(M.point_to_surface(x, M.sphere_distance), (1.0 + 0.5 + 0.0) / 3, atol=1e-12)
    np.testing.assert_allclose(M.torus_distance(jnp.array([0.7, 0.0, 0.3])), 0.0, atol=1e-12)
    np.testing.assert_allclose(M.torus_distance(jnp.array([0.0, 0.0, 0.0])), np.sqrt(0.49) - 0.3, atol=1e-12)
    # dense-sample variant approaches the exact distance
    u = jax.random.normal(jax.random.key(1), (20000, 3))
    dense = u / jnp.linalg.norm(u, axis=-1, keepdims=True)
    np.testing.assert_allclose(M.point_to_surface(x, dense), M.point_to_surface(x, M.sphere_distance), atol=0.03)


def test_scene_flow_metrics_thresholds():
    gt = jnp.array([[[10.0, 0, 0]] * 5])
    err = jnp.array([0.0, 0.05, 0.099, 0.2, 0.5])  # rho = e / (10 + 1e-4)
    pred = gt + err[None, :, None] * jnp.array([1.0, 0, 0])[None, None]
    out = M.scene_flow_metrics(pred, gt)
    np.testing.assert_allclose(out["epe3d"], err.mean(), rtol=1e-12)
    # strict: e<0.05 or rho<0.05 (rho<0.05 <=> e<0.500005): all five pass the relative rule
    np.testing.assert_allclose(out["acc3d_strict"], 1.0)
    # tiny gt flow: relative rule uses +1e-4
    gt2 = jnp.zeros((1, 4, 3))
    e2 = jnp.array([0.0, 0.05, 0.0999, 0.31])
    pred2 = gt2 + e2[None, :, None] * jnp.array([0.0, 1.0, 0.0])[None, None]
    o2 = M.scene_flow_metrics(pred2, gt2)
    np.testing.assert_allclose(o2["acc3d_strict"], 1 / 4)  # only e=0 (0.05 is not < 0.05)
    np.testing.assert_allclose(o2["acc3d_relax"], 3 / 4)
    # outliers: e > 0.3 or rho > 0.1: rho = e/1e-4 > 0.1 for e > 1e-5 -> three of four
    np.testing.assert_allclose(o2["outliers"], 3 / 4)
    # mask and per-scene averaging
    o3 = M.scene_flow_metrics(pred2, gt2, mask=jnp.array([[1, 1, 0, 0]]))
    np.testing.assert_allclose(o3["epe3d"], 0.025)


def test_success_and_tracking():
    np.testing.assert_allclose(M.success_rate(jnp.array([40, 20]), 40), 0.75)
    ref = jnp.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]])
    pos = jnp.array([[0.5, 0.2], [2.0, 0.5], [1.0, 2.0]])
    np.testing.assert_allclose(M.tracking_error(pos, ref), (0.2 + 1.0 + 1.0) / 3)


def test_bad_inputs():
    with pytest.raises(ValueError, match="pred"):
        M.mpjpe(jnp.zeros((2, 3, 3)), jnp.zeros((2, 4, 3)))
    with pytest.raises(ValueError, match="reduction"):
        M.chamfer(jnp.zeros((2, 3)), jnp.zeros((2, 3)), reduction="mean")
