"""Paths, schedules, parameterisation conversions, convention adapters and the denoising loss
(spec principles.md, section 6 tests 1-5, 7) against the analytic Gaussian-mixture oracle."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowjax import conventions, parameterizations as P, schedules
from flowjax.losses import cfm
from flowjax.losses.denoising import denoising_loss, epsilon_weight, logit_normal_density, cosmap_density, sd3_weighting
from flowjax.paths import AffinePath, cosine_path, linear_path, polynomial_path, vp_path
from flowjax.testing import GaussianMixtureFlow

PATHS = {"linear": linear_path(), "cosine": cosine_path(), "vp": vp_path()}
MEANS = jnp.array([[2.0, 0.0], [-1.0, 1.5], [0.0, -2.0]])
STDS = jnp.array([0.3, 0.5, 0.2])
WEIGHTS = jnp.array([0.5, 0.3, 0.2])


def _flow(path):
    return GaussianMixtureFlow(MEANS, STDS, WEIGHTS, path=path)


def _points(n=32, seed=0):
    kx, kt = jax.random.split(jax.random.key(seed))
    return 2.0 * jax.random.normal(kx, (n, 2)), jax.random.uniform(kt, (n,), minval=0.05, maxval=0.95)


# -- paths: lambda and its inverse --------------------------------------------------------------
@pytest.mark.parametrize("name", ["linear", "cosine", "vp", "poly"])
def test_inverse_log_snr_closed_form_matches_bisection(name):
    path = PATHS.get(name) or polynomial_path(2.0)
    t = jnp.linspace(0.02, 0.98, 41)
    lam = path.log_snr(t)
    bisect = AffinePath("b", path.alpha, path.sigma, path.d_alpha, path.d_sigma)  # no closed form
    np.testing.assert_allclose(path.time_from_log_snr(lam), t, atol=1e-10)
    np.testing.assert_allclose(bisect.time_from_log_snr(lam), t, atol=1e-10)
    # lambda' by autodiff
    np.testing.assert_allclose(path.d_log_snr(t), jax.vmap(jax.grad(path.log_snr))(t), rtol=1e-9)


def test_linear_and_cosine_lambda_formulas():
    t = jnp.linspace(0.1, 0.9, 9)
    np.testing.assert_allclose(linear_path().d_log_snr(t), 1 / (t * (1 - t)), rtol=1e-12)
    np.testing.assert_allclose(cosine_path().d_log_snr(t), jnp.pi / jnp.sin(jnp.pi * t), rtol=1e-12)


# -- conversions ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(PATHS))
def test_conversions_round_trip_and_agree_with_oracle(name):
    path = PATHS[name]
    flow = _flow(path)
    x, t = _points()

    @jax.jit
    def everything(x, t):
        x1, x0 = flow.posterior_means(x, t)
        truth = {"velocity": flow.velocity(x, t), "data": x1, "noise": x0, "score": flow.score(x, t)}
        out = {"recon": path.alpha(t)[:, None] * x1 + path.sigma(t)[:, None] * x0}
        for src in P.PREDICTIONS:
            pred = truth[src] if src in truth else P.from_data_noise(x1, x0, x, t, path=path, prediction=src)
            out[src] = pred
            for dst in truth:
                got = P.convert(pred, x, t, path=path, src=src, dst=dst)
                out[f"{src}->{dst}"] = got
                out[f"{src}->{dst}->back"] = P.convert(got, x, t, path=path, src=dst, dst=src)
        return truth, out

    truth, out = everything(x, t)
    # x = alpha x1_hat + sigma x0_hat (the posterior means are consistent)
    np.testing.assert_allclose(out["recon"], x, atol=1e-10)
    for src in P.PREDICTIONS:
        for dst, want in truth.items():
            np.testing.assert_allclose(out[f"{src}->{dst}"], want, rtol=1e-7, atol=1e-8, err_msg=f"{name}: {src}->{dst}")
            np.testing.assert_allclose(out[f"{src}->{dst}->back"], out[src], rtol=1e-7, atol=1e-8,
                                       err_msg=f"{name}: round trip {src}->{dst}")


@pytest.mark.parametrize("name", list(PATHS))
def test_score_is_autodiff_of_log_density_and_pf_ode_drift_is_velocity(name):
    path = PATHS[name]
    flow = _flow(path)
    x, t = _points()
    grad = jax.grad(lambda z: jnp.sum(flow.log_prob(z, t)))(x)
    x0_hat = flow.posterior_means(x, t)[1]
    np.testing.assert_allclose(-x0_hat / path.sigma(t)[:, None], grad, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(P.velocity_from_score(grad, x, t, path=path), flow.velocity(x, t), rtol=1e-8, atol=1e-9)
    np.testing.assert_allclose(P.tweedie_data(grad, x, t, path=path), flow.posterior_means(x, t)[0], rtol=1e-8, atol=1e-9)


def test_linear_specialisation():
    path, flow = linear_path(), _flow(linear_path())
    x, t = _points()
    v = flow.velocity(x, t)
    tb = t[:, None]
    np.testing.assert_allclose(P.to_x1(v, x, t, path=path, prediction="velocity"), x + (1 - tb) * v, atol=1e-12)
    np.testing.assert_allclose(P.to_x0(v, x, t, path=path, prediction="velocity"), x - tb * v, atol=1e-12)
    np.testing.assert_allclose(P.to_score(v, x, t, path=path, prediction="velocity"), (tb * v - x) / (1 - tb), atol=1e-10)
    s = flow.score(x, t)
    np.testing.assert_allclose(P.velocity_from_score(s, x, t, path=path), x / tb + (1 - tb) / tb * s, rtol=1e-10)


def test_salimans_ho_v_is_not_fm_velocity():
    path, flow = cosine_path(), _flow(cosine_path())
    x, t = _points()
    v_sh = P.convert(flow.velocity(x, t), x, t, path=path, src="velocity", dst="v_sh")
    np.testing.assert_allclose(v_sh, -(2 / jnp.pi) * flow.velocity(x, t), rtol=1e-9, atol=1e-10)


# -- SNR equivalence and schedule transforms ------------------------------------------------------
def test_vp_to_linear_rescaling_maps_velocities():
    """Spec test 7: t' = alpha/(alpha+sigma), x' = x/(alpha+sigma) turns the VP flow into the linear one."""
    vp, lin = vp_path(), linear_path()
    f_vp, f_lin = _flow(vp), _flow(lin)
    x, t = _points()
    a, s = vp.alpha(t), vp.sigma(t)
    t_lin, scale = schedules.snr_equivalent(vp, lin, t)
    np.testing.assert_allclose(t_lin, a / (a + s), rtol=1e-10)
    np.testing.assert_allclose(scale, 1 / (a + s), rtol=1e-10)
    # chain rule: x'(t) = x(t)/(a+s) => dx'/dt' = [v/(a+s) - x (a'+s')/(a+s)^2] / (dt'/dt)
    v = f_vp.velocity(x, t)
    da, ds = vp.d_alpha(t), vp.d_sigma(t)
    dtp = (da * s - a * ds) / (a + s) ** 2
    dxp = (v / (a + s)[:, None] - x * ((da + ds) / (a + s) ** 2)[:, None]) / dtp[:, None]
    np.testing.assert_allclose(dxp, f_lin.velocity(x / (a + s)[:, None], t_lin), rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize("src,dst", [("vp", "linear"), ("linear", "cosine")])
@pytest.mark.parametrize("prediction", ["noise", "velocity"])
def test_reschedule_trained_model_onto_another_path(src, dst, prediction):
    f_src, f_dst = _flow(PATHS[src]), _flow(PATHS[dst])
    model = f_src.velocity if prediction == "velocity" else (lambda x, t: f_src.posterior_means(x, t)[1])
    v = schedules.reschedule(model, trained_path=PATHS[src], target_path=PATHS[dst], prediction=prediction)
    x, t = _points()
    np.testing.assert_allclose(v(x, t), f_dst.velocity(x, t), rtol=1e-7, atol=1e-8)


# -- grids ---------------------------------------------------------------------------------------
def test_grids():
    path = cosine_path()
    g = schedules.log_snr_grid(path, 10, t_min=0.05, t_max=0.95)
    assert g.shape == (11,) and float(g[0]) == 0.05 and float(g[-1]) == 0.95
    np.testing.assert_allclose(np.diff(path.log_snr(g)), np.diff(path.log_snr(g))[0], rtol=1e-9)
    sig = schedules.edm_sigmas(17, sigma_min=0.002, sigma_max=80.0, rho=7.0)
    np.testing.assert_allclose([sig[0], sig[-1]], [80.0, 0.002], rtol=1e-12)
    # sigma^(1/rho) is linear in i
    np.testing.assert_allclose(np.diff(np.diff(sig ** (1 / 7))), 0.0, atol=1e-12)
    te = schedules.edm_grid(17)
    np.testing.assert_allclose(te, 1 / (1 + sig), rtol=1e-12)
    np.testing.assert_allclose(schedules.edm_sigma(linear_path(), te), sig, rtol=1e-9)
    te_vp = schedules.edm_grid(17, path=vp_path())
    np.testing.assert_allclose(schedules.edm_sigma(vp_path(), te_vp), sig, rtol=1e-7)
    assert float(schedules.edm_grid(5, to_data=True)[-1]) == 1.0
    # SD3 shift: sigma' = s sigma / (1 + (s-1) sigma); fixes the end points; s=1 identity
    t = jnp.linspace(0, 1, 11)
    np.testing.assert_allclose(schedules.shift_time(t, 1.0), t, atol=1e-15)
    sh = schedules.shift_time(t, 3.0)
    np.testing.assert_allclose(1 - sh, 3 * (1 - t) / (1 + 2 * (1 - t)), atol=1e-15)
    assert float(sh[0]) == 0.0 and float(sh[-1]) == 1.0 and np.all(np.asarray(sh) <= np.asarray(t) + 1e-15)
    np.testing.assert_allclose(schedules.flux_shift(256), np.exp(0.5))
    np.testing.assert_allclose(schedules.flux_shift(4096), np.exp(1.15))
    with pytest.raises(ValueError, match="lambda is infinite"):
        schedules.log_snr_grid(linear_path(), 4, t_min=0.0, t_max=0.9)


# -- conventions ---------------------------------------------------------------------------------
def test_meanflow_and_diffusers_adapters_round_trip():
    flow = _flow(linear_path())
    x, t = _points(8)
    s = t * 0.5
    u = lambda x, s, t: (x - 0.3 * s[:, None]) * t[:, None] ** 2  # any u(x, s, t)
    u_mf = conventions.to_meanflow(u)
    np.testing.assert_allclose(conventions.from_meanflow(u_mf)(x, s, t), u(x, s, t), atol=1e-15)
    # MeanFlow semantics: z_r = z_t - (t - r) u_MF(z_t, r, t) is the project step X_{s,t} = x + (t-s) u.
    r_mf, t_mf = 1 - t, 1 - s
    np.testing.assert_allclose(x - (t_mf - r_mf)[:, None] * u_mf(x, r_mf, t_mf), x + (t - s)[:, None] * u(x, s, t), atol=1e-14)
    v_mf = conventions.to_meanflow_velocity(flow.velocity)
    np.testing.assert_allclose(conventions.from_meanflow_velocity(v_mf)(x, t), flow.velocity(x, t), atol=1e-15)
    # diffusers: x = (1 - sig) x1 + sig eps, model predicts eps - x1 = -v at timestep 1000 sig
    model = conventions.to_diffusers_flow(flow.velocity)
    x1, x0 = flow.posterior_means(x, t)
    np.testing.assert_allclose(model(x, (1 - t) * 1000.0), x0 - x1, atol=1e-12)
    np.testing.assert_allclose(conventions.from_diffusers_flow(model)(x, t), flow.velocity(x, t), atol=1e-12)
    # book time: velocity dx/dtau = -v / T
    book = conventions.to_diffusion_time(flow.velocity, prediction="velocity", horizon=1000.0)
    np.testing.assert_allclose(book(x, 1000.0 * (1 - t)), -flow.velocity(x, t) / 1000.0, atol=1e-14)
    back = conventions.from_diffusion_time(book, prediction="velocity", horizon=1000.0)
    np.testing.assert_allclose(back(x, t), flow.velocity(x, t), atol=1e-12)


@pytest.mark.parametrize("name", ["linear", "vp"])
def test_edm_adapters_agree_with_a_ve_oracle(name):
    path = PATHS[name]
    ve = AffinePath("ve", lambda t: jnp.ones_like(t), lambda t: 10.0 * (1 - t), lambda t: jnp.zeros_like(t),
                    lambda t: -10.0 * jnp.ones_like(t))
    ve_flow = _flow(ve)  # x_E = x1 + sigma_E x0 with sigma_E = 10 (1 - t): posterior means are exact
    tau = jnp.linspace(0.2, 0.95, 8)
    sig_e = 10.0 * (1 - tau)
    x_e = ve_flow.sample_marginal(jax.random.key(3), 8, tau)
    truth = ve_flow.posterior_means(x_e, tau)[0]
    flow = _flow(path)
    denoiser = jax.jit(conventions.to_edm(flow.velocity, path=path, prediction="velocity"))
    np.testing.assert_allclose(denoiser(x_e, sig_e), truth, rtol=1e-7, atol=1e-8)
    # and back: from_edm(D) is the data predictor of the project path
    x, t = _points()
    data_fn = jax.jit(conventions.from_edm(denoiser, path=path))
    np.testing.assert_allclose(data_fn(x, t), flow.posterior_means(x, t)[0], rtol=1e-7, atol=1e-8)
    # EDM preconditioning is an exact re-parameterisation: F = (D - c_skip x)/c_out inverts it.
    c_skip, c_out, c_in, c_noise = P.edm_coefficients(sig_e)
    raw = lambda xin, cn: (denoiser(xin / c_in[:, None], jnp.exp(4 * cn)) - c_skip[:, None] * xin / c_in[:, None]) / c_out[:, None]
    np.testing.assert_allclose(jax.jit(P.edm_precondition(raw))(x_e, sig_e), truth, rtol=1e-7, atol=1e-8)


# -- losses --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["linear", "vp"])
def test_loss_error_identities_for_random_predictions(name):
    """v_hat - v = -sigma lambda' (x0_hat - x0) etc. (spec test 5), for arbitrary predictions."""
    path = PATHS[name]
    k0, k1, k2, k3 = jax.random.split(jax.random.key(1), 4)
    x0, x1 = jax.random.normal(k0, (16, 2)), jax.random.normal(k1, (16, 2))
    t = jax.random.uniform(k2, (16,), minval=0.05, maxval=0.95)
    xt, _ = path.sample(x0, x1, t)
    eps_hat = jax.random.normal(k3, (16, 2))
    for p in P.PREDICTIONS:
        p_hat = P.convert(eps_hat, xt, t, path=path, src="noise", dst=p)
        p_cond = P.from_data_noise(x1, x0, xt, t, path=path, prediction=p)
        k = P.error_scale(p, t, path=path)[:, None]
        np.testing.assert_allclose(p_hat - p_cond, k * (eps_hat - x0), rtol=1e-8, atol=1e-9, err_msg=p)
    v_err = jnp.sum((P.convert(eps_hat, xt, t, path=path, src="noise", dst="velocity") - path.sample(x0, x1, t)[1]) ** 2, -1)
    lam_dot = path.d_log_snr(t)
    np.testing.assert_allclose(v_err, path.sigma(t) ** 2 * lam_dot**2 * jnp.sum((eps_hat - x0) ** 2, -1), rtol=1e-8)


@pytest.mark.parametrize("prediction", ["velocity", "data", "noise"])
def test_denoising_loss_native_weight_equals_cfm(prediction):
    net = lambda x, t: jnp.sin(x) * t[:, None]
    x1 = jax.random.normal(jax.random.key(2), (32, 2))
    key = jax.random.key(5)
    a, aux = denoising_loss(net, key, x1, path=cosine_path(), prediction=prediction, weighting=prediction)
    b, _ = cfm(net, key, x1, path=cosine_path(), prediction=prediction)
    np.testing.assert_allclose(a, b, rtol=1e-12)
    np.testing.assert_allclose(aux["native_mse"], b, rtol=1e-12)


def test_denoising_loss_weightings_are_epsilon_mse_with_time_weights():
    path = linear_path()
    net = lambda x, t: jnp.cos(x) + t[:, None]  # a velocity net
    x1 = jax.random.normal(jax.random.key(2), (64, 2))
    key = jax.random.key(7)
    k0, _, kt = jax.random.split(key, 3)
    x0 = jax.random.normal(k0, x1.shape)
    t = jax.random.uniform(kt, (64,))
    xt, _ = path.sample(x0, x1, t)
    eps_err = jnp.mean((P.to_x0(net(xt, t), xt, t, path=path, prediction="velocity") - x0) ** 2, -1)
    for w, expect in (("noise", jnp.ones_like(t)), ("velocity", 1 / t**2), ("data", ((1 - t) / t) ** 2),
                      ("score", 1 / (1 - t) ** 2), ("elbo", 1 / (t * (1 - t)))):
        loss, aux = jax.jit(lambda k, x: denoising_loss(net, k, x, path=path, prediction="velocity", weighting=w))(key, x1)
        np.testing.assert_allclose(loss, jnp.mean(expect * eps_err), rtol=1e-9, err_msg=w)
        np.testing.assert_allclose(epsilon_weight(w, t, path=path), expect, rtol=1e-12)
    np.testing.assert_allclose(aux["eps_mse"], jnp.mean(eps_err), rtol=1e-9)
    # the same loss from an epsilon network gives the same number (parameterisation invariance)
    eps_net = lambda x, t: P.to_x0(net(x, t), x, t, path=path, prediction="velocity")
    l1, _ = denoising_loss(net, key, x1, path=path, prediction="velocity", weighting="elbo")
    l2, _ = denoising_loss(eps_net, key, x1, path=path, prediction="noise", weighting="elbo")
    np.testing.assert_allclose(l1, l2, rtol=1e-9)
    # sum reduction over features multiplies by d
    l3, _ = denoising_loss(net, key, x1, path=path, prediction="velocity", weighting="elbo", reduce="sum")
    np.testing.assert_allclose(l3, 2 * l1, rtol=1e-12)


def test_sd3_densities_integrate_to_one_and_match_samplers():
    from flowjax.timesteps import logit_normal
    t = jnp.linspace(1e-6, 1 - 1e-6, 40_001)
    for dens in (logit_normal_density(t, 0.0, 1.0), logit_normal_density(t, 0.5, 0.7), cosmap_density(t)):
        np.testing.assert_allclose(jnp.trapezoid(dens, t), 1.0, atol=2e-4)
    draws = np.asarray(logit_normal(0.5, 0.7)(jax.random.key(0), 50_000))
    counts, edges = np.histogram(draws, bins=10, range=(0, 1))
    # exact bin probabilities by integrating the density (trapezoid on a fine grid per bin)
    probs = [float(jnp.trapezoid(logit_normal_density(g, 0.5, 0.7), g))
             for g in (jnp.linspace(max(a, 1e-9), min(b, 1 - 1e-9), 401) for a, b in zip(edges[:-1], edges[1:]))]
    se = np.sqrt(np.array(probs) * (1 - np.array(probs)) / draws.size)
    assert np.all(np.abs(counts / draws.size - np.array(probs)) < 5 * se + 1e-6)
    w = sd3_weighting(linear_path())(jnp.array([0.5]))
    np.testing.assert_allclose(w, 4.0 * logit_normal_density(jnp.array([0.5])), rtol=1e-12)


def test_input_validation():
    with pytest.raises(ValueError, match="prediction"):
        P.convert(jnp.zeros((2, 2)), jnp.zeros((2, 2)), 0.5, path=linear_path(), src="eps", dst="data")
    with pytest.raises(ValueError, match="weighting"):
        denoising_loss(lambda x, t: x, jax.random.key(0), jnp.zeros((2, 2)), weighting="bogus")
