"""MeanFlow loss: identity on exact flows, JVP vs finite differences, stop-gradients, time convention."""

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _fewstep_analytic import AnalyticGaussian

from flowjax.losses import meanflow, meanflow_time_pairs
from flowjax.losses._fewstep import adaptive_weighted, sum_squares
from flowjax.losses.meanflow import from_meanflow_time, meanflow_target, to_meanflow_time
from flowjax.testing import GaussianMixtureFlow


def tiny_model(key, d, hidden=16, labels=False):
    k0, k1, k2 = jax.random.split(key, 3)
    params = {
        "w0": jax.random.normal(k0, (d + 2, hidden), jnp.float64) / 2,
        "w1": jax.random.normal(k1, (hidden, d), jnp.float64) / 4,
        "emb": jax.random.normal(k2, (4, hidden), jnp.float64) / 4,
    }

    def apply(p, x, s, t, c=None):
        h = jnp.concatenate([x, s[:, None], t[:, None]], axis=1) @ p["w0"]
        if c is not None:
            h = h + p["emb"][c]
        return jnp.tanh(h) @ p["w1"]

    return params, apply


def fixed_pairs(s, t):
    return lambda key, n: (s, t)


GAUSS = AnalyticGaussian([1.0, -0.5], [0.5, 0.8])


def test_target_with_exact_u_and_marginal_v_equals_u():
    key = jax.random.key(0)
    n = 64
    x = jax.random.normal(key, (n, 2), jnp.float64)
    s = jax.random.uniform(jax.random.key(1), (n,), jnp.float64, 0.0, 0.6)
    t = s + jax.random.uniform(jax.random.key(2), (n,), jnp.float64, 0.05, 0.4)
    u, tgt = meanflow_target(GAUSS.u, x, s, t, GAUSS.velocity(x, s))
    np.testing.assert_allclose(tgt, u, atol=1e-9)
    np.testing.assert_allclose(u, GAUSS.u(x, s, t), atol=1e-12)


def test_identity_on_a_mixture_by_finite_differences():
    # the MeanFlow identity on the Gaussian-mixture oracle (diffrax flow maps), d/ds by central FD
    gm = GaussianMixtureFlow(jnp.array([[-1.0], [1.5]]), jnp.array([0.3, 0.4]), jnp.array([0.5, 0.5]))
    x = jnp.linspace(-1.5, 1.5, 5)[:, None]
    s, t = jnp.full((5,), 0.3), jnp.full((5,), 0.8)
    av = jax.jit(gm.average_velocity)
    v = gm.velocity(x, s)
    h = 1e-4
    du = (av(x + h * v, s + h, t) - av(x - h * v, s - h, t)) / (2 * h)
    np.testing.assert_allclose(v + 0.5 * du, av(x, s, t), atol=1e-6)


def test_jvp_target_equals_finite_difference():
    params, apply = tiny_model(jax.random.key(3), 2)
    u_fn = lambda x, s, t: apply(params, x, s, t)  # noqa: E731
    x = jax.random.normal(jax.random.key(4), (8, 2), jnp.float64)
    v = jax.random.normal(jax.random.key(5), (8, 2), jnp.float64)
    s, t = jnp.full((8,), 0.2), jnp.full((8,), 0.7)
    u, tgt = meanflow_target(u_fn, x, s, t, v)
    h = 1e-5
    du = (u_fn(x + h * v, s + h, t) - u_fn(x - h * v, s - h, t)) / (2 * h)
    np.testing.assert_allclose(tgt, v + 0.5 * du, rtol=1e-8, atol=1e-10)
    # clip(t - s, 0, 1): a pair with t - s = 0 gives exactly v
    _, tgt0 = meanflow_target(u_fn, x, s, s, v)
    np.testing.assert_array_equal(tgt0, v)


def test_point_mass_loss_vanishes_at_exact_u_and_perturbation_raises_it():
    # data = point mass: conditional velocity == marginal velocity, straight flow, loss exactly 0
    pm = AnalyticGaussian([1.0, -0.5], [0.0, 0.0])
    x1 = jnp.broadcast_to(pm.mu, (256, 2))
    sampler = meanflow_time_pairs(fm_fraction=0.25)
    for p in (0.0, 1.0):
        loss, aux = meanflow(pm.u, jax.random.key(6), x1, time_sampler=sampler, norm_p=p)
        assert float(loss) < 1e-18, float(loss)
        bad = lambda x, s, t: pm.u(x, s, t) + 0.1 * jnp.sin(x) * (1 + t - s)[:, None]  # noqa: E731
        loss_bad, _ = meanflow(bad, jax.random.key(6), x1, time_sampler=sampler, norm_p=p)
        assert float(loss_bad) > 1e-4


def test_exact_field_is_stationary_on_a_gaussian():
    # With the conditional tangent the loss does not vanish, but E[u_tgt | x_s] = u at the exact field,
    # so d loss / d eps of u + eps * delta is zero in expectation (Monte Carlo) -- not at a wrong field.
    delta = lambda x, s, t: jnp.cos(x) * (0.5 + t - s)[:, None]  # noqa: E731
    x1 = GAUSS.sample_data(jax.random.key(7), 40_000)

    def slope(base):
        def f(eps):
            return meanflow(lambda x, s, t: base(x, s, t) + eps * delta(x, s, t), jax.random.key(8), x1, norm_p=0.0,
                            time_sampler=meanflow_time_pairs(fm_fraction=0.0))[0]

        return float(jax.grad(f)(0.0))

    exact = slope(GAUSS.u)
    wrong = slope(lambda x, s, t: 0.7 * GAUSS.u(x, s, t))
    assert abs(exact) < 0.05 * abs(wrong), (exact, wrong)


def test_s_equals_t_reduces_to_flow_matching():
    params, apply = tiny_model(jax.random.key(9), 2)
    u_fn = lambda x, s, t: apply(params, x, s, t)  # noqa: E731
    n = 32
    x1 = jax.random.normal(jax.random.key(10), (n, 2), jnp.float64)
    x0 = jax.random.normal(jax.random.key(11), (n, 2), jnp.float64)
    t = jax.random.uniform(jax.random.key(12), (n,), jnp.float64)
    loss, _ = meanflow(u_fn, jax.random.key(13), x1, x0=x0, time_sampler=fixed_pairs(t, t), norm_p=0.0)
    xt = (1 - t)[:, None] * x0 + t[:, None] * x1
    manual = jnp.mean(jnp.sum((u_fn(xt, t, t) - (x1 - x0)) ** 2, axis=1))
    np.testing.assert_allclose(loss, manual, rtol=1e-12)


def test_stop_gradient_placement_and_adaptive_weight():
    params, apply = tiny_model(jax.random.key(14), 2)
    n = 16
    x1 = jax.random.normal(jax.random.key(15), (n, 2), jnp.float64)
    x0 = jax.random.normal(jax.random.key(16), (n, 2), jnp.float64)
    s = jnp.linspace(0.0, 0.5, n)
    t = s + 0.4
    kw = dict(x0=x0, time_sampler=fixed_pairs(s, t), norm_p=1.0, norm_eps=0.01)

    def loss(p):
        return meanflow(lambda x, a, b: apply(p, x, a, b), jax.random.key(0), x1, **kw)[0]

    xs = (1 - s)[:, None] * x0 + s[:, None] * x1
    _, target = meanflow_target(lambda x, a, b: apply(params, x, a, b), xs, s, t, x1 - x0)
    const = jax.lax.stop_gradient(target)

    def reference(p):
        l = jnp.sum((apply(p, xs, s, t) - const) ** 2, axis=1)
        w = 1.0 / (jax.lax.stop_gradient(l) + 0.01)
        return jnp.mean(l * w)

    g, g_ref = jax.grad(loss)(params), jax.grad(reference)(params)
    for k in g:
        np.testing.assert_allclose(g[k], g_ref[k], rtol=1e-9, atol=1e-12)
    # without the stop-gradient on the target the gradient would differ
    def no_sg(p):
        u, tgt = meanflow_target(lambda x, a, b: apply(p, x, a, b), xs, s, t, x1 - x0)
        l = jnp.sum((u - tgt) ** 2, axis=1)
        return jnp.mean(l / jax.lax.stop_gradient(l + 0.01))

    assert not np.allclose(jax.grad(no_sg)(params)["w0"], g["w0"])
    # adaptive weight: grad of l / sg((l + c)^p) == grad(l) / (l + c)^p
    l0 = jnp.array(2.0)
    gw = jax.grad(lambda z: adaptive_weighted(z**2, p=0.5, eps=1e-3))(jnp.sqrt(l0))
    np.testing.assert_allclose(gw, 2 * jnp.sqrt(l0) / (l0 + 1e-3) ** 0.5, rtol=1e-12)


def test_time_convention_against_paper_time_meanflow():
    # Paper time: z_tau = (1 - tau) x + tau eps, v_MF = E[eps - x | z_tau], z_r = z_t - (t - r) u_MF.
    # Build u_MF from its own definition (posterior means + a fine ODE solve in paper time) and check
    # u_proj(x, s, t) == -u_MF(x, 1 - t, 1 - s) against the project-time closed form.
    mu, sig = 0.7, 0.4

    def v_mf(tau, z, args):
        var = (1 - tau) ** 2 * sig**2 + tau**2
        centred = z - (1 - tau) * mu
        e_x = mu + (1 - tau) * sig**2 / var * centred
        e_eps = tau / var * centred
        return e_eps - e_x

    def u_mf_one(z, r, t):
        sol = diffrax.diffeqsolve(diffrax.ODETerm(v_mf), diffrax.Dopri8(), t0=t, t1=r, dt0=None, y0=z,
                                  stepsize_controller=diffrax.PIDController(rtol=1e-11, atol=1e-11))
        return (z - sol.ys[-1]) / (t - r)

    u_mf = lambda z, r, t: jax.vmap(u_mf_one)(z, r, t)  # noqa: E731
    g1 = AnalyticGaussian([mu], [sig])
    x = jnp.linspace(-2.0, 2.0, 6)[:, None]
    s, t = jnp.full((6,), 0.15), jnp.full((6,), 0.8)
    np.testing.assert_allclose(from_meanflow_time(u_mf)(x, s, t), g1.u(x, s, t), atol=1e-8)
    np.testing.assert_allclose(to_meanflow_time(g1.u)(x, 1 - t, 1 - s), u_mf(x, 1 - t, 1 - s), atol=1e-8)


def test_time_sampler_statistics_match_meanflow_in_project_time():
    n = 1_000_000
    sampler = meanflow_time_pairs(fm_fraction=0.0)
    s, t = sampler(jax.random.key(17), n)
    assert bool(jnp.all(s <= t))
    # a sign error in P_mean would give 0.418 / 0.301 / 0.535
    np.testing.assert_allclose(float(jnp.mean((s + t) / 2)), 0.582, atol=0.005)
    np.testing.assert_allclose(float(jnp.mean(s)), 0.465, atol=0.005)
    np.testing.assert_allclose(float(jnp.mean(t)), 0.699, atol=0.005)
    s, t = meanflow_time_pairs()(jax.random.key(18), 10_000)
    np.testing.assert_allclose(float(jnp.mean(s == t)), 0.75, atol=0.02)


def test_cfg_target_is_folded_in():
    # On s = t rows the target is v_g itself: omega v_c + kappa u(x,s,s|c) + (1-omega-kappa) u(x,s,s|null).
    null = 3
    u_fn = lambda x, s, t, c: jnp.where((c == null)[:, None], -1.0, 2.0) * jnp.ones_like(x)  # noqa: E731
    n = 8
    x1 = jnp.ones((n, 2))
    x0 = jnp.zeros((n, 2))
    t = jnp.full((n,), 0.5)
    c = jnp.zeros((n,), jnp.int32)
    omega, kappa = 1.5, 0.25
    loss, _ = meanflow(u_fn, jax.random.key(0), x1, x0=x0, c=c, omega=omega, kappa=kappa, null_label=null,
                       time_sampler=fixed_pairs(t, t), norm_p=0.0)
    v_g = omega * 1.0 + kappa * 2.0 + (1 - omega - kappa) * (-1.0)
    np.testing.assert_allclose(loss, 2 * (2.0 - v_g) ** 2, rtol=1e-12)
    # outside the guidance interval the target is v_c
    loss_off, _ = meanflow(u_fn, jax.random.key(0), x1, x0=x0, c=c, omega=omega, kappa=kappa, null_label=null,
                           time_sampler=fixed_pairs(t, t), norm_p=0.0, guidance_interval=(0.6, 1.0))
    np.testing.assert_allclose(loss_off, 2 * (2.0 - 1.0) ** 2, rtol=1e-12)
    # all labels dropped: null label (model gives -1) and the unguided target v_c = 1
    loss_drop, _ = meanflow(u_fn, jax.random.key(0), x1, x0=x0, c=c, omega=omega, kappa=kappa, null_label=null,
                            time_sampler=fixed_pairs(t, t), norm_p=0.0, label_dropout=1.0)
    np.testing.assert_allclose(loss_drop, 2 * (-1.0 - 1.0) ** 2, rtol=1e-12)


def test_validation_and_jit():
    u = lambda x, s, t: x  # noqa: E731
    with pytest.raises(ValueError, match="null_label"):
        meanflow(u, jax.random.key(0), jnp.ones((4, 2)), omega=2.0, c=jnp.zeros((4,), jnp.int32))
    with pytest.raises(ValueError, match="fm_fraction"):
        meanflow(u, jax.random.key(0), jnp.ones((4, 2)), fm_fraction=1.5)
    with pytest.raises(TypeError, match="x1"):
        meanflow(u, jax.random.key(0), jnp.ones((4, 2), jnp.int32))
    loss, aux = jax.jit(lambda k, x: meanflow(u, k, x))(jax.random.key(0), jnp.ones((8, 2)))
    assert jnp.isfinite(loss) and set(aux) == {"mse", "fm_fraction"}
