"""Riemannian flow matching: manifolds, geodesics, sampler and loss against exact answers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowjax import riemannian as rm
from flowjax.losses import riemannian_cfm

MANIFOLDS = {
    "sphere2": lambda: rm.sphere(2),
    "sphere4": lambda: rm.sphere(4),
    "torus2": lambda: rm.flat_torus(2),
    "product": lambda: rm.product(rm.sphere(2), rm.flat_torus(1)),
}
FAST = ["sphere2", "torus2", "product"]


def _pair(m, n=64, seed=0):
    k0, k1 = jax.random.split(jax.random.key(seed))
    return m.sample_uniform(k0, n).astype(jnp.float64), m.sample_uniform(k1, n).astype(jnp.float64)


@pytest.mark.parametrize("name", list(MANIFOLDS))
def test_exp_log_inverse_and_tangent(name):
    m = MANIFOLDS[name]()
    x, y = _pair(m)
    v = m.log(x, y)
    np.testing.assert_allclose(m.proj_tangent(x, v), v, atol=1e-10)
    y2 = m.exp(x, v)
    np.testing.assert_allclose(m.dist(y2, y), 0.0, atol=1e-7)
    np.testing.assert_allclose(jnp.linalg.norm(v, axis=-1), m.dist(x, y), atol=1e-10)


@pytest.mark.parametrize("name", list(MANIFOLDS))
def test_geodesic_on_manifold_endpoints_constant_speed(name):
    m = MANIFOLDS[name]()
    x0, x1 = _pair(m, n=32)
    d = m.dist(x0, x1)
    ts = jnp.linspace(0.0, 1.0, 21)
    prev = None
    for t in ts:
        xt, dxt = rm.geodesic_path(m, x0, x1, jnp.full((32,), t))
        assert bool(jnp.all(m.belongs(xt, 1e-9)))
        # constant speed equal to the geodesic distance
        np.testing.assert_allclose(jnp.linalg.norm(dxt, axis=-1), d, rtol=1e-8, atol=1e-10)
        # velocity is tangent
        np.testing.assert_allclose(m.proj_tangent(xt, dxt), dxt, atol=1e-10)
        # distance travelled is t * d (constant speed, minimising)
        np.testing.assert_allclose(m.dist(x0, xt), t * d, atol=1e-6)
        if prev is not None:
            np.testing.assert_allclose(m.dist(prev, xt), d / 20, atol=1e-6)
        prev = xt
    x_end, _ = rm.geodesic_path(m, x0, x1, jnp.ones(32))
    np.testing.assert_allclose(m.dist(x_end, x1), 0.0, atol=1e-6)
    x_beg, _ = rm.geodesic_path(m, x0, x1, jnp.zeros(32))
    np.testing.assert_allclose(m.dist(x_beg, x0), 0.0, atol=1e-9)


@pytest.mark.parametrize("name", FAST)
def test_geodesic_velocity_is_time_derivative_and_eq12(name):
    m = MANIFOLDS[name]()
    x0, x1 = _pair(m, n=16, seed=3)
    t = jnp.full((16,), 0.37)
    eps = 1e-6
    xp, _ = rm.geodesic_path(m, x0, x1, t + eps)
    xm, _ = rm.geodesic_path(m, x0, x1, t - eps)
    xt, dxt = rm.geodesic_path(m, x0, x1, t)
    fd = (m.log(xt, xp) - m.log(xt, xm)) / (2 * eps)  # both tangent at x_t: O(eps^2) error
    np.testing.assert_allclose(dxt, fd, atol=1e-6)
    # paper eq. 12: u_t(x_t | x1) = log_{x_t}(x1) / (1 - t)
    np.testing.assert_allclose(rm.conditional_velocity(m, xt, x1, t), dxt, atol=1e-8)


def test_sphere_log_volume_and_uniform():
    assert np.isclose(rm.sphere(2).log_volume, np.log(4 * np.pi))
    assert np.isclose(rm.sphere(1).log_volume, np.log(2 * np.pi))
    assert np.isclose(rm.flat_torus(3).log_volume, 3 * np.log(2 * np.pi))
    x = rm.sphere(2).sample_uniform(jax.random.key(0), 20000)
    np.testing.assert_allclose(jnp.mean(x, 0), 0.0, atol=0.03)
    np.testing.assert_allclose(jnp.mean(x**2, 0), 1 / 3, atol=0.02)


@pytest.mark.parametrize("name", FAST)
@pytest.mark.parametrize("solver", rm.SOLVERS)
def test_sampler_stays_on_manifold(name, solver):
    m = MANIFOLDS[name]()
    x0, _ = _pair(m, n=32)
    w = jax.random.normal(jax.random.key(5), (m.ambient_dim, m.ambient_dim))

    def v(x, t):  # an arbitrary, non-tangent ambient field
        return 3.0 * jnp.tanh(x @ w) + t[:, None]

    traj = rm.ode(v, x0, m, steps=17, solver=solver, save_trajectory=True)
    assert traj.shape == (18, 32, m.ambient_dim)
    assert bool(jnp.all(m.belongs(traj.reshape(-1, m.ambient_dim), 1e-9)))


@pytest.mark.parametrize("name", FAST)
def test_sampler_with_conditional_field_reaches_target_exactly(name):
    # dx/dt = log_x(x1)/(1-t) moves along the geodesic to x1; each exp-map Euler step covers the
    # fraction h/(1-t) of the remaining geodesic, so the last step lands on x1 exactly.
    m = MANIFOLDS[name]()
    x0, x1 = _pair(m, n=32, seed=1)
    x1 = x1[:1].repeat(32, 0)

    def v(x, t):
        return rm.conditional_velocity(m, x, x1, t)

    out = rm.ode(v, x0, m, steps=10, solver="euler")
    np.testing.assert_allclose(m.dist(out, x1), 0.0, atol=1e-6)
    # midpoint: exact on the flat torus; on the sphere the projected half-step tangent shrinks by
    # cos(h|v|/2), a second-order error: check the error falls ~4x per halving of h (>= 3x).
    errs = [float(jnp.max(m.dist(rm.ode(v, x0, m, steps=k, solver="midpoint"), x1))) for k in (8, 16)]
    if name.startswith("torus"):
        assert errs[1] < 1e-6
    else:
        assert errs[1] < errs[0] / 3.0, errs


def test_loss_zero_and_stationary_at_exact_field_for_point_mass():
    # Data = a single point x*: the marginal field equals the conditional one, so the loss is 0.
    m = rm.sphere(2)
    xstar = jnp.array([[0.0, 0.6, 0.8]])
    x1 = jnp.repeat(xstar, 128, 0)

    def v_exact(x, t, scale=1.0):
        return scale * rm.conditional_velocity(m, x, x1, t)

    key = jax.random.key(0)
    loss, aux = riemannian_cfm(v_exact, key, x1, manifold=m)
    assert float(loss) < 1e-16
    g = jax.grad(lambda s: riemannian_cfm(lambda x, t: v_exact(x, t, s), key, x1, manifold=m)[0])(1.0)
    assert abs(float(g)) < 1e-8
    loss2, _ = riemannian_cfm(lambda x, t: v_exact(x, t, 1.1), key, x1, manifold=m)
    assert float(loss2) > 1e-3
    # a normal (non-tangent) component is removed by the projection
    loss3, _ = riemannian_cfm(lambda x, t: v_exact(x, t) + 5.0 * x, key, x1, manifold=m)
    assert float(loss3) < 1e-16
    loss4, _ = riemannian_cfm(lambda x, t: v_exact(x, t) + 5.0 * x, key, x1, manifold=m, project_output=False)
    assert float(loss4) > 1.0


def test_loss_jit_and_validation():
    m = rm.product(rm.sphere(2), rm.flat_torus(2))
    x1 = m.sample_uniform(jax.random.key(0), 16)
    f = jax.jit(lambda k, x: riemannian_cfm(lambda x, t: x * t[:, None], k, x, manifold=m))
    loss, aux = f(jax.random.key(1), x1)
    assert np.isfinite(float(loss)) and set(aux) == {"loss", "target_norm"}
    with pytest.raises(ValueError, match="x1"):
        riemannian_cfm(lambda x, t: x, jax.random.key(0), x1[:, :3], manifold=m)
    with pytest.raises(TypeError, match="manifold"):
        riemannian_cfm(lambda x, t: x, jax.random.key(0), x1, manifold="sphere")
    with pytest.raises(ValueError, match="solver"):
        rm.ode(lambda x, t: x, x1, m, solver="rk4")


def test_divergence_closed_forms():
    # On S^d the Laplacian of the linear function <a, x> is -d <a, x>: div(P_x a) = -d <a, x>.
    for d in (1, 2):
        m = rm.sphere(d)
        a = jnp.arange(1.0, d + 2.0)
        x = m.sample_uniform(jax.random.key(d), 16).astype(jnp.float64)
        div = rm.divergence(lambda x, t: jnp.broadcast_to(a, x.shape), x, jnp.zeros(16), m)
        np.testing.assert_allclose(div, -d * (x @ a), atol=1e-10)
    # flat torus: div(sin x) = sum cos x
    m = rm.flat_torus(2)
    x = m.sample_uniform(jax.random.key(0), 16).astype(jnp.float64)
    np.testing.assert_allclose(rm.divergence(lambda x, t: jnp.sin(x), x, jnp.zeros(16), m), jnp.cos(x).sum(-1), atol=1e-10)


def test_log_likelihood_matches_closed_form_on_circle():
    # On S^1, v = P_x (1, 0) is theta' = -sin(theta): tan(theta/2) = tan(theta0/2) e^{-t}. Pushing the
    # uniform density forward to t = 1 gives p1(theta) = (1/2pi) e (1 + u^2) / (1 + u^2 e^2), u = tan(theta/2).
    m = rm.sphere(1)
    theta = jnp.linspace(-2.5, 2.5, 9)
    x1 = jnp.stack([jnp.cos(theta), jnp.sin(theta)], -1)
    v = lambda x, t: jnp.broadcast_to(jnp.array([1.0, 0.0]), x.shape)
    lp = rm.log_likelihood(v, x1, m, steps=200)
    u2 = jnp.tan(theta / 2) ** 2
    exact = -jnp.log(2 * jnp.pi) + 1.0 + jnp.log1p(u2) - jnp.log1p(u2 * jnp.e**2)
    np.testing.assert_allclose(lp, exact, atol=1e-4)


def test_wrapped_mixture_density_normalised_and_sampler():
    means = jnp.array([[3.0, 0.5], [-1.0, -2.8]])
    sample, log_prob = rm.wrapped_normal_mixture(means, jnp.array([0.4, 0.7]), jnp.array([0.3, 0.7]))
    g = jnp.linspace(-jnp.pi, jnp.pi, 161)[:-1]
    grid = jnp.stack(jnp.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    cell = (2 * jnp.pi / 160) ** 2
    np.testing.assert_allclose(float(jnp.sum(jnp.exp(log_prob(grid))) * cell), 1.0, atol=1e-9)
    x = sample(jax.random.key(0), 20000)
    assert bool(jnp.all(rm.flat_torus(2).belongs(x, atol=0.0)))
    # mean log-density of samples = negative entropy (Monte Carlo vs grid quadrature)
    p = jnp.exp(log_prob(grid))
    ent = -float(jnp.sum(p * log_prob(grid)) * cell)
    assert abs(-float(jnp.mean(log_prob(x))) - ent) < 0.03


def test_torus_likelihood_matches_known_wrapped_density():
    # Exact flow between two wrapped-normal mixtures with the same means and a common std: the wrapped
    # normal is the heat kernel of the torus, so p_t (variance s_t^2 = s0^2 + t (s1^2 - s0^2)) solves
    # dp/dt = (1/2) d(s^2)/dt Lap p, whose probability-flow velocity is v = -(1/2) d(s^2)/dt grad log p_t.
    # The manifold change of variables must turn the known log p_0 into the known log p_1.
    torus = rm.flat_torus(2)
    means = jnp.array([[3.0, 0.5], [-1.0, -2.8], [0.3, 1.9]])
    weights = jnp.array([0.5, 0.3, 0.2])
    s0, s1 = 1.5, 0.5

    def log_p(x, s):
        return rm.wrapped_normal_mixture(means, jnp.full((3,), 1.0) * s, weights)[1](x)

    def v(x, t):
        lp = lambda xi, ti: log_p(xi[None], jnp.sqrt(s0**2 + ti * (s1**2 - s0**2)))[0]  # noqa: E731
        return -0.5 * (s1**2 - s0**2) * jax.vmap(jax.grad(lp))(x, t)

    # points near the modes, several across the seam (low-density points need more steps: the field is steep there)
    x1 = jnp.array([[3.1, 0.4], [-3.0, 0.6], [-1.2, 3.0], [0.5, 1.5], [-0.6, -2.2]])
    lp = rm.log_likelihood(v, x1, torus, log_p0=lambda x: log_p(x, s0), steps=200)
    np.testing.assert_allclose(lp, log_p(x1, s1), atol=2e-4)
    # and it is not the uniform density's answer
    assert float(jnp.max(jnp.abs(lp - (-torus.log_volume)))) > 0.5


def test_torus_marginal_field_transports_uniform_to_wrapped_mixture():
    """The exact marginal field of the geodesic path from the uniform source on T^2 (ours, in closed form up to
    Monte Carlo over data: given x1, x_t is uniform on the box of half-width pi (1 - t) around x1, with velocity
    log_x(x1) / (1 - t)) carries uniform samples to the mixture: the exp-map sampler and the torus geometry agree
    with the known density, independently of any training."""
    t2 = rm.flat_torus(2)
    means = jnp.asarray([[3.0, 0.3], [-1.2, -2.9], [1.0, 1.6]])
    sample, log_prob = rm.wrapped_normal_mixture(means, jnp.asarray([0.35, 0.4, 0.3]))
    data = sample(jax.random.key(0), 6000)

    def v_star(x, t):
        d = t2.log(x[:, None, :], data[None])
        inside = jnp.all(jnp.abs(d) < jnp.pi * (1 - t[:, None, None]), -1)
        w = inside / jnp.maximum(inside.sum(1, keepdims=True), 1)
        return jnp.einsum("nm,nmd->nd", w, d) / (1 - t[:, None])

    x0 = t2.sample_uniform(jax.random.key(1), 400)
    xs = rm.ode(v_star, x0, t2, steps=60, t1=0.98)
    gap = float(jnp.mean(log_prob(data[:400])) - jnp.mean(log_prob(xs)))
    uniform_gap = float(jnp.mean(log_prob(data[:400])) - jnp.mean(log_prob(x0)))
    assert abs(gap) < 0.15 * uniform_gap, (gap, uniform_gap)
