"""PUFM++ pieces: midpoint interpolation, assignment, time sampler, scheduler, stage losses,
on-manifold projection (onto the analytic surface), Euler sampler; surface data."""

import jax
import jax.numpy as jnp
import numpy as np

from flowjax import metrics_3d
from flowjax.data import surfaces
from flowjax.structured import pointcloud as pc


def test_midpoint_interpolation_structure():
    s = jax.random.normal(jax.random.key(0), (16, 3))
    out = pc.midpoint_interpolation(s, 2)
    assert out.shape == (32, 3)
    d2 = metrics_3d.pairwise_sq_dists(s, s)
    nb = jnp.argsort(d2, axis=1)[:, :4]
    cands = (0.5 * (s[:, None] + s[nb])).reshape(-1, 3)
    # every output is one of the candidate midpoints (point with one of its 2R nearest, incl. itself)
    assert float(jnp.max(jnp.min(metrics_3d.pairwise_sq_dists(out, cands), 1))) < 1e-12
    # FPS indices are distinct
    idx = pc.farthest_point_sampling(cands, 32)
    assert len(np.unique(np.asarray(idx))) == 32


def test_assignment_is_optimal_bijection():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(20, 3)), rng.normal(size=(20, 3))
    perm = pc.assignment(a, b)
    assert sorted(perm.tolist()) == list(range(20))
    cost = lambda p: np.sum((a - b[p]) ** 2)
    assert cost(perm) <= cost(np.arange(20)) and cost(perm) <= cost(rng.permutation(20))


def test_cosine_time_sampler_cdf():
    t = np.sort(np.asarray(pc.cosine_time_sampler()(jax.random.key(1), 100_000)))
    cdf = (2 / np.pi) * np.arccos(1 - t)
    ks = np.max(np.abs(cdf - np.arange(1, len(t) + 1) / len(t)))
    assert ks < 1.36 / np.sqrt(len(t)) * 1.5


def test_adaptive_schedule():
    grid = jnp.linspace(0.0, 1.0, 51)
    np.testing.assert_allclose(pc.adaptive_schedule(jnp.ones(51), grid, 4), jnp.linspace(0, 1, 5), atol=1e-12)
    front = jnp.exp(-grid / 0.05)
    s = pc.adaptive_schedule(front, grid, 4)
    assert float(s[0]) == 0.0 and float(s[-1]) == 1.0 and bool(jnp.all(jnp.diff(s) > 0))
    assert float(s[1]) < 0.05 and float(s[3]) < 0.2


def test_stage_losses_oracle_and_invariance():
    key = jax.random.key(2)
    x0 = jax.random.normal(key, (2, 8, 3))
    x1 = jax.random.normal(jax.random.key(3), (2, 8, 3))
    # with sigma0 = 0 the oracle CondOT velocity makes stage 1 exactly zero
    oracle = lambda x, t: x1 - x0
    assert float(pc.stage1_loss(oracle, key, x1, x0=x0, sigma0=0.0)[0]) == 0.0
    # stage 2 equals the Chamfer distance and is zero when the endpoint equals y as a set
    perm = jnp.array([3, 1, 0, 2, 7, 6, 5, 4])
    v_perm = lambda x, t: x1[:, perm] - x
    np.testing.assert_allclose(pc.stage2_loss(v_perm, key, x1, x0=x0, sigma0=0.0)[0], 0.0, atol=1e-12)
    v_zero = lambda x, t: jnp.zeros_like(x)
    l2 = pc.stage2_loss(v_zero, key, x1, x0=x0, sigma0=0.0)[0]
    np.testing.assert_allclose(l2, jnp.sum(metrics_3d.chamfer(x0, x1)), rtol=1e-12)
    np.testing.assert_allclose(pc.stage2_loss(v_zero, key, x1, x0=x0[:, perm], sigma0=0.0)[0], l2, rtol=1e-12)


def test_manifold_projection_moves_points_onto_the_sphere():
    rng = np.random.default_rng(4)
    proxy = jnp.asarray(surfaces.sample_surface(rng, "sphere", 4000))
    x = proxy[:200] * (1.0 + 0.02 * jnp.asarray(rng.choice([-1.0, 1.0], size=(200, 1))))
    before = metrics_3d.point_to_surface(x, metrics_3d.sphere_distance)
    y = x
    for _ in range(3):
        y = pc.manifold_projection(y, proxy, eta=0.005)
    after = metrics_3d.point_to_surface(y, metrics_3d.sphere_distance)
    assert float(after) < 0.6 * float(before), (before, after)
    # per-point normalisation: each point moves exactly eta (or 0 on the proxy)
    step = jnp.linalg.norm(pc.manifold_projection(x, proxy, eta=0.01) - x, axis=-1)
    np.testing.assert_allclose(step, 0.01, rtol=1e-9)
    np.testing.assert_allclose(pc.manifold_projection(proxy[:5], proxy, eta=0.01), proxy[:5])
    # the code's normalisation over the point axis moves each coordinate by eta/sqrt(N)
    code = pc.manifold_projection(x, proxy, eta=0.01, normalize="code") - x
    np.testing.assert_allclose(jnp.abs(code)[jnp.abs(code) > 0], 0.01 / np.sqrt(200), rtol=1e-9)


def test_manifold_step_never_increases_l1_with_fixed_neighbours():
    rng = np.random.default_rng(5)
    proxy = jnp.asarray(rng.normal(size=(50, 3)))
    x = proxy + 0.1 * jnp.asarray(rng.normal(size=(50, 3)))
    nn = proxy[jnp.argmin(metrics_3d.pairwise_sq_dists(x, proxy), -1)]
    eta = float(jnp.min(jnp.abs(nn - x)))
    y = pc.manifold_projection(x, proxy, eta=eta)
    assert float(jnp.sum(jnp.abs(nn - y))) <= float(jnp.sum(jnp.abs(nn - x)))


def test_euler_sampler_exact_on_straight_path():
    x0 = jax.random.normal(jax.random.key(6), (2, 10, 3))
    x1 = jax.random.normal(jax.random.key(7), (2, 10, 3))
    v = lambda x, t: (x1 - x) / (1.0 - t)[:, None, None]
    for times in (jnp.linspace(0, 1, 5), jnp.array([0.0, 0.05, 0.3, 1.0])):
        np.testing.assert_allclose(pc.sample(v, x0, times), x1, atol=1e-10)


def test_surfaces_lie_on_their_analytic_surface():
    rng = np.random.default_rng(8)
    np.testing.assert_allclose(metrics_3d.sphere_distance(surfaces.sample_surface(rng, "sphere", 100)), 0.0, atol=1e-12)
    np.testing.assert_allclose(metrics_3d.torus_distance(surfaces.sample_surface(rng, "torus", 100)), 0.0, atol=1e-12)
    e = surfaces.sample_surface(rng, "ellipsoid", 100) / np.asarray(surfaces.ELLIPSOID_AXES)[None]
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-12)
    p = surfaces.partial_view(surfaces.sample_surface(rng, "sphere", 1000), np.array([0, 0, 1.0]))
    assert bool(np.all(p[:, 2] > 0)) and 300 < len(p) < 700
