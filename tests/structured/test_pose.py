"""FMPose3D pieces: camera round trip, flip, RPEA limits, Euler hypotheses, conditional FM oracle."""

import jax
import jax.numpy as jnp
import numpy as np

from flowjax import losses
from flowjax.data import skeleton
from flowjax.structured import pose
from flowjax.testing import GaussianMixtureFlow


def test_projection_round_trip_and_optical_axis():
    batch = skeleton.sample_skeleton_poses(jax.random.key(0), 16, noise=0.0)
    absolute = batch.x3d + batch.root[:, None, :]
    uv = skeleton.project(absolute, focal=1.3, center=(0.1, -0.2))
    back = skeleton.unproject(uv, absolute[..., 2], focal=1.3, center=(0.1, -0.2))
    np.testing.assert_allclose(back, absolute, atol=1e-5)
    np.testing.assert_allclose(skeleton.project(jnp.array([0.0, 0.0, 4.0]), center=(0.3, 0.4)), [0.3, 0.4])
    # noise-free 2D equals the projection
    np.testing.assert_allclose(batch.x2d, skeleton.project(absolute), atol=1e-6)


def test_skeleton_bone_lengths_fixed():
    b = skeleton.sample_skeleton_poses(jax.random.key(1), 32)
    for j in range(1, skeleton.NUM_JOINTS):
        lengths = jnp.linalg.norm(b.x3d[:, j] - b.x3d[:, skeleton.PARENTS[j]], axis=-1)
        np.testing.assert_allclose(lengths, skeleton.BONE_LENGTHS[j], rtol=1e-5)
    np.testing.assert_allclose(b.x3d[:, 0], 0.0)


def test_flip_is_an_involution():
    b = skeleton.sample_skeleton_poses(jax.random.key(2), 4)
    f = skeleton.flip_pose(b.x3d)
    np.testing.assert_allclose(skeleton.flip_pose(f), b.x3d)
    np.testing.assert_allclose(f[:, 3, 0], -b.x3d[:, 5, 0])


def _hyps(key, h=6, n=5):
    b = skeleton.sample_skeleton_poses(key, n)
    hy = b.x3d[None] + 0.1 * jax.random.normal(jax.random.key(9), (h, n, skeleton.NUM_JOINTS, 3))
    return pose.zero_root(hy), b


def test_rpea_single_hypothesis_returns_it():
    hy, b = _hyps(jax.random.key(3), h=1)
    np.testing.assert_allclose(pose.rpea(hy, b.x2d, b.root, tau=0.005, top_k=8), hy[0], atol=1e-12)


def test_rpea_weights_and_limits():
    hy, b = _hyps(jax.random.key(4), h=7)
    d = pose.reprojection_distances(hy, b.x2d, b.root)
    w = pose.rpea_weights(d, tau=0.01, top_k=3, clamp=None)
    assert bool(jnp.all(w >= 0))
    np.testing.assert_allclose(w.sum(0), 1.0, atol=1e-6)
    ranks = jnp.argsort(jnp.argsort(d, axis=0), axis=0)
    assert bool(jnp.all(jnp.where(ranks >= 3, w, 0.0) == 0.0))
    out0 = pose.rpea(hy, b.x2d, b.root, tau=1e-9, top_k=3, clamp=None)
    np.testing.assert_allclose(out0, pose.aggregate_argmin(hy, b.x2d, b.root), atol=1e-6)
    out_inf = pose.rpea(hy, b.x2d, b.root, tau=1e9, top_k=3, clamp=None)
    topk_mean = jnp.sum(jnp.where((ranks < 3)[..., None], hy, 0.0), 0) / 3
    np.testing.assert_allclose(out_inf, pose.zero_root(topk_mean), atol=1e-6)
    assert bool(jnp.all(out_inf[:, 0] == 0.0))


def test_euler_hypotheses_exact_for_point_mass():
    """Point-mass posterior X = m(c): v(y, t) = (m − y)/(1 − t) is straight; one Euler step is exact."""
    c = jax.random.normal(jax.random.key(5), (4, skeleton.NUM_JOINTS, 2))
    target = lambda c: jnp.concatenate([c, jnp.sum(c, -1, keepdims=True)], -1)
    v = lambda y, t, c: (pose.zero_root(target(c)) - y) / (1.0 - t)[:, None, None]
    for s in (1, 3):
        hy = pose.sample_hypotheses(v, jax.random.key(0), c, num_hypotheses=3, steps=s, pose_shape=(skeleton.NUM_JOINTS, 3))
        np.testing.assert_allclose(hy, jnp.broadcast_to(pose.zero_root(target(c)), hy.shape), atol=1e-5)


def test_conditional_fm_oracle_condition_dependent_mixture():
    """cfm with c: the exact conditional field (a different Gaussian mixture per condition) is a
    stationary point of the loss; the same field with the conditions permuted is not."""
    flows = [
        GaussianMixtureFlow(jnp.array([[-2.0, 0.0], [2.0, 0.0]]), jnp.array([0.3, 0.3]), jnp.array([0.5, 0.5])),
        GaussianMixtureFlow(jnp.array([[0.0, 1.5]]), jnp.array([0.5]), jnp.array([1.0])),
    ]

    def v_exact(x, t, c):
        return jnp.where((c == 0)[:, None], flows[0].velocity(x, t), flows[1].velocity(x, t))

    n = 20000
    c = (jnp.arange(n) % 2).astype(jnp.int32)
    h = lambda x, t: jnp.sin(x) + t[:, None]

    def directional(eps, c_model, key):
        ka, kb, kl = jax.random.split(key, 3)  # fresh data per key: the standard error covers it
        x1 = jnp.where((c == 0)[:, None], flows[0].sample_data(ka, n), flows[1].sample_data(kb, n))
        fn = lambda x, t, c: v_exact(x, t, c_model) + eps * h(x, t)
        return losses.cfm(fn, kl, x1, c=c)[0]

    keys = jax.random.split(jax.random.key(3), 8)
    grads = np.array([jax.grad(directional)(0.0, c, k) for k in keys])
    se = grads.std(ddof=1) / np.sqrt(len(grads))
    assert abs(grads.mean()) < 4 * se + 2e-3, (grads.mean(), se)
    # wrong conditions: the loss is clearly larger than at the exact conditional field
    right = float(np.mean([directional(0.0, c, k) for k in keys[:2]]))
    wrong = float(np.mean([directional(0.0, 1 - c, k) for k in keys[:2]]))
    assert wrong > right + 0.5, (right, wrong)
