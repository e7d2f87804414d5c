"""SCOOP pieces: Sinkhorn marginals (vs ott-jax), support mask, soft targets, smoothness,
Chamfer, refinement fixed point, gradient placement; scene-flow data."""

import jax
import jax.numpy as jnp
import numpy as np
from ott.geometry import geometry
from ott.problems.linear import linear_problem
from ott.solvers.linear import sinkhorn

from flowjax.data.sceneflow import make_scene_flow_pair
from flowjax.structured import sceneflow as sf


def _cos_cost(n=12, m=9, seed=0):
    f = jax.random.normal(jax.random.key(seed), (n, 8))
    g = jax.random.normal(jax.random.key(seed + 1), (m, 8))
    return 1.0 - sf.cosine_similarity(f, g)


def test_sinkhorn_marginals_and_ott_agreement():
    cost = _cos_cost()
    n, m = cost.shape
    plan = sf.sinkhorn_unbalanced(cost, epsilon=1.03, gamma=jnp.inf, num_iters=500)
    np.testing.assert_allclose(n * plan.sum(1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(m * plan.sum(0), 1.0, rtol=1e-6)
    with jax.numpy_rank_promotion("allow"):  # ott-jax broadcasts implicitly
        ref = sinkhorn.Sinkhorn(threshold=1e-12, max_iterations=5000)(
            linear_problem.LinearProblem(geometry.Geometry(cost_matrix=cost, epsilon=1.03))).matrix
    np.testing.assert_allclose(plan, ref, atol=1e-9)
    # p < 1: only T >= 0 and finite (KL-relaxed marginals)
    p2 = sf.sinkhorn_unbalanced(cost, epsilon=1.03, gamma=1.0, num_iters=3)
    assert bool(jnp.all(p2 >= 0)) and bool(jnp.all(jnp.isfinite(p2)))


def test_support_mask_zeroes_far_pairs():
    x = jnp.concatenate([jnp.zeros((3, 3)), jnp.full((2, 3), 20.0)])
    y = jnp.zeros((4, 3))
    support = sf.pairwise_sq_dists(x, y) < 10.0**2
    plan = sf.sinkhorn_unbalanced(_cos_cost(5, 4), epsilon=0.5, gamma=1.0, support=support, num_iters=2)
    assert bool(jnp.all(plan[3:] == 0.0)) and bool(jnp.all(plan[:3] > 0.0))


def test_soft_correspondence_convex_and_permutation_recovery():
    x = jax.random.normal(jax.random.key(2), (10, 3))
    perm = jax.random.permutation(jax.random.key(3), 10)
    y = x[perm]
    f = jax.random.normal(jax.random.key(4), (10, 16))
    sim = sf.cosine_similarity(f, f[perm])
    plan = sf.sinkhorn_unbalanced(1.0 - sim, epsilon=0.01, gamma=jnp.inf, num_iters=50)
    y_hat, conf = sf.soft_correspondence(plan, y, sim, k=4)
    np.testing.assert_allclose(y_hat, x, atol=1e-4)
    np.testing.assert_allclose(conf, 1.0, atol=1e-3)
    # convex hull of the k targets: weights sum to 1, so y_hat within per-axis bounds of all targets
    plan2 = sf.sinkhorn_unbalanced(1.0 - sim, epsilon=1.0, gamma=1.0)
    y2, _ = sf.soft_correspondence(plan2, y, sim, k=3)
    vals, idx = jax.lax.top_k(plan2, 3)
    yk = y[idx]
    assert bool(jnp.all((y2 >= yk.min(1) - 1e-9) & (y2 <= yk.max(1) + 1e-9)))


def test_smoothness_hand_case_and_invariance():
    x = jnp.array([[0.0, 0, 0], [1.0, 0, 0], [0, 1.0, 0], [5.0, 5, 5]])
    nb = sf.knn_indices(x, 2)  # self + nearest
    np.testing.assert_array_equal(nb[:, 0], jnp.arange(4))
    f = jnp.array([[0.0, 0, 0], [1.0, -1.0, 0], [0, 0, 2.0], [1.0, 1, 1]])
    # neighbours: 0->1 (tie 1/2: top_k picks lower index 1), 1->0, 2->0, 3->1 or 2 (dist^2 57 vs 57: picks 1)
    expected = (2.0 + 2.0 + 2.0 + (0 + 2 + 1)) / 4
    np.testing.assert_allclose(sf.smoothness_l1(f, nb), expected)
    np.testing.assert_allclose(sf.smoothness_l1(jnp.ones_like(f) * 3.0, nb), 0.0)
    np.testing.assert_allclose(sf.smoothness_l1(f + jnp.array([[1.0, 2, 3]]), nb), expected)


def test_weighted_chamfer_properties():
    x = jax.random.normal(jax.random.key(5), (6, 3))
    y = x[:4] + 0.1
    np.testing.assert_allclose(sf.weighted_chamfer(x, x, beta=1.0), 0.0, atol=1e-12)
    assert not np.isclose(sf.weighted_chamfer(x, y), sf.weighted_chamfer(y, x))
    w = jnp.arange(6.0)
    d2 = sf.pairwise_sq_dists(x, y)
    np.testing.assert_allclose(sf.weighted_chamfer(x, y, weights=w, beta=2.0),
                               jnp.mean(w * d2.min(1)) + 2.0 * jnp.mean(d2.min(0)), rtol=1e-12)


def test_refinement_recovers_translation_and_constant_flow_is_stationary():
    g = jnp.stack(jnp.meshgrid(jnp.arange(6.0), jnp.arange(6.0), indexing="ij"), -1).reshape(-1, 2) * 0.1
    x = jnp.concatenate([g, jnp.zeros((36, 1))], -1)
    d = jnp.array([0.03, -0.02, 0.01])  # |d| < spacing/2 = 0.05
    y = x + d[None]
    f = sf.refine_flow(jnp.zeros_like(x), x, y, steps=400, learning_rate=0.005, lambda_smooth=0.0, beta=1.0)
    np.testing.assert_allclose(f, jnp.broadcast_to(d, f.shape), atol=1e-3)
    # with lambda > 0 the constant flow d is still stationary (gradient of J vanishes there)
    nb = sf.knn_indices(x, 9)
    g = jax.grad(lambda f_: sf.refinement_objective(f_, x, y, nb, lambda_smooth=1.0, beta=1.0))(jnp.broadcast_to(d, x.shape))
    np.testing.assert_allclose(g, 0.0, atol=1e-12)
    g_off = jax.grad(lambda f_: sf.refinement_objective(f_, x, y, nb, lambda_smooth=1.0, beta=1.0))(jnp.broadcast_to(d * 0.5, x.shape))
    assert float(jnp.abs(g_off).max()) > 1e-3


def test_gradient_placement():
    pts = jax.random.normal(jax.random.key(6), (1, 32, 3))
    net = sf.SetConvFeatures(widths=(8, 16), k=8, convs=1)
    params = net.init(jax.random.key(0), pts)
    tgt = pts + 0.05
    g = jax.jit(jax.grad(lambda p: sf.scoop_loss(lambda z: net.apply(p, z), None, pts, target=tgt, k_smooth=8, k_corr=8)[0]))(params)
    assert float(jnp.abs(g["params"]["log_eps"])) > 0.0  # epsilon learnable through the kernel
    # test time: refinement does not depend on f0/confidence through gradients
    f0, c = sf.scoop_correspondence(lambda z: net.apply(params, z), pts, tgt, k_corr=8)
    dj = jax.jit(jax.grad(lambda c_: jnp.sum(sf.refine_flow(f0[0], pts[0], tgt[0], confidence=c_, steps=3))))(c[0])
    np.testing.assert_allclose(dj, 0.0)


def test_scene_flow_data_rigid_motion():
    pair = make_scene_flow_pair(np.random.default_rng(0), n=400, noise=0.0)
    assert pair.source.shape == (400, 3) and pair.target.shape == (400, 3)
    # rigid: pairwise distances within each object are preserved by the flow
    for lab in np.unique(pair.labels):
        s = pair.source[pair.labels == lab][:20]
        e = s + pair.flow[pair.labels == lab][:20]
        np.testing.assert_allclose(np.linalg.norm(s[:, None] - s[None], axis=-1), np.linalg.norm(e[:, None] - e[None], axis=-1), atol=1e-9)
    nr = make_scene_flow_pair(np.random.default_rng(0), n=400, noise=0.0, nonrigid=0.05)
    obj = nr.labels > 0
    assert not np.allclose(nr.flow[obj], pair.flow[obj])
