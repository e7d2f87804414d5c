"""Solver zoo (flowjax.samplers.solvers) against the analytic Gaussian-mixture oracle."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowjax import schedules
from flowjax.paths import cosine_path, linear_path, vp_path
from flowjax.samplers import solvers as S
from flowjax.testing import GaussianMixtureFlow, gaussian_flow

T_A, T_B = 0.05, 0.95


def _mixture(path):
    # A smooth 1D three-component mixture: the asymptotic regime starts at a few steps.
    return GaussianMixtureFlow(jnp.array([[-1.5], [0.5], [2.0]]), jnp.array([0.5, 0.4, 0.6]),
                               jnp.array([0.3, 0.4, 0.3]), path=path)


@pytest.fixture(scope="module", params=["linear", pytest.param("vp", marks=pytest.mark.slow)])
def problem(request):
    path = {"linear": linear_path(), "vp": vp_path()}[request.param]
    flow = _mixture(path)
    x = flow.sample_marginal(jax.random.key(0), 16, T_A)
    ref = flow.flow_map(x, T_A, T_B)
    return request.param, path, flow, x, ref


def _predictor(flow, prediction):
    if prediction == "velocity":
        return flow.velocity
    if prediction == "data":
        return lambda x, t: flow.posterior_means(x, t)[0]
    if prediction == "noise":
        return lambda x, t: flow.posterior_means(x, t)[1]
    return flow.score


# (solver, sample kwargs, theoretical order, grid)
CASES = [
    ("euler", {}, 1, "t"), ("midpoint", {}, 2, "t"), ("heun", {}, 2, "t"), ("rk4", {}, 4, "t"),
    ("ddim", {}, 1, "lam"), ("exp_em", {}, 1, "lam"),
    ("dpm_solver1", {}, 1, "lam"), ("dpm_solver2", {}, 2, "lam"), ("dpm_solver3", {}, 3, "lam"),
    ("dpmpp_1", {}, 1, "lam"), ("dpmpp_2s", {}, 2, "lam"), ("dpmpp_2m", {}, 2, "lam"),
    ("dpmpp_3m", {"warmup": "singlestep"}, 3, "lam"),
    ("unipc", {"order": 1}, 2, "lam"), ("unipc", {"order": 2}, 3, "lam"),
]
STEPS = (8, 16, 32, 64)


def _errors(path, flow, x, ref, solver, kwargs, grid_kind, prediction="velocity"):
    fn = _predictor(flow, prediction)
    run = lambda x, g: S.sample(fn, x, times=g, solver=solver, path=path, prediction=prediction, scan=False, **kwargs)
    errs = []
    for n in STEPS:
        grid = (schedules.uniform_grid(n, t_min=T_A, t_max=T_B) if grid_kind == "t"
                else schedules.log_snr_grid(path, n, t_min=T_A, t_max=T_B))
        errs.append(float(jnp.max(jnp.abs(run(x, grid) - ref))))
    return np.array(errs)


def _check_order(name, path, flow, x, ref, solver, kwargs, order, grid, prediction="velocity"):
    errs = _errors(path, flow, x, ref, solver, kwargs, grid, prediction)
    slope = -np.polyfit(np.log(STEPS), np.log(errs), 1)[0]
    assert np.all(errs[1:] < errs[:-1]), (name, solver, errs)
    assert abs(slope - order) < 0.3, (name, solver, errs, slope)


@pytest.mark.parametrize("solver,kwargs,order,grid", CASES, ids=[c[0] + str(c[1].get("order", "")) for c in CASES])
def test_measured_order_matches_theory(problem, solver, kwargs, order, grid):
    """Global order on [0.05, 0.95], N in {8, 16, 32, 64}: slope within 0.3 of theory (linear path by
    default; the VP path, which runs the same checks, is in the slow suite)."""
    _check_order(*problem, solver, kwargs, order, grid)


@pytest.fixture(scope="module")
def vp_problem():
    path = vp_path()
    flow = _mixture(path)
    x = flow.sample_marginal(jax.random.key(0), 16, T_A)
    return "vp", path, flow, x, flow.flow_map(x, T_A, T_B)


@pytest.mark.parametrize("solver,kwargs,order,prediction", [
    pytest.param("heun", {}, 2, "noise", marks=pytest.mark.slow), ("dpmpp_2m", {}, 2, "noise"),
    pytest.param("dpm_solver3", {}, 3, "data", marks=pytest.mark.slow), ("unipc", {"order": 2}, 3, "score"),
])
def test_measured_order_on_vp_with_other_predictions(vp_problem, solver, kwargs, order, prediction):
    """The same solvers driven by noise / data / score predictions on the VP path."""
    _check_order(*vp_problem, solver, kwargs, order, "t" if solver == "heun" else "lam", prediction)


# -- exact identities between solvers -----------------------------------------------------------
def _model(path, prediction="velocity"):
    flow = _mixture(path)
    return S.PredictionModel(_predictor(flow, prediction), path, prediction), flow


@pytest.mark.parametrize("pathname", ["linear", "vp", "cosine"])
def test_ddim0_equals_first_order_exponential_integrators(pathname):
    path = {"linear": linear_path(), "vp": vp_path(), "cosine": cosine_path()}[pathname]
    model, flow = _model(path, "noise")
    x = flow.sample_marginal(jax.random.key(1), 8, 0.3)
    for t, t1 in ((0.3, 0.45), (0.3, 0.9)):
        ddim = S.ddim_step(model, x, t, t1, eta=0.0)
        for other in (S.dpmpp_1_step(model, x, t, t1), S.dpm_solver1_step(model, x, t, t1),
                      S.exp_em_step(model, x, t, t1, eta=0.0)):
            np.testing.assert_allclose(other, ddim, rtol=1e-11, atol=1e-12)
        # DPM-Solver++(2M)'s first step and UniPC-1 without corrector are DDIM as well
        np.testing.assert_allclose(S.dpmpp_2m_step(model, x, t, t1)[0], ddim, rtol=1e-11, atol=1e-12)
        d0, _ = model.data_noise(x, t)
        hist = ((d0,), (path.log_snr(jnp.asarray(t)),))
        np.testing.assert_allclose(S.unipc_step(model, x, t, t1, hist, order=1, corrector=False)[0], ddim, rtol=1e-11, atol=1e-12)
        if pathname == "linear":
            np.testing.assert_allclose(S.euler_step(model, x, t, t1), ddim, rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("pathname", ["linear", "vp"])
def test_ddim1_is_the_ddpm_posterior_and_the_exponential_em_step(pathname):
    path = {"linear": linear_path(), "vp": vp_path()}[pathname]
    model, flow = _model(path, "velocity")
    x = flow.sample_marginal(jax.random.key(1), 8, 0.3)
    s, t = 0.3, 0.6
    key = jax.random.key(9)
    a_s, s_s, a_t, s_t = (float(f(jnp.asarray(v))) for f, v in ((path.alpha, s), (path.sigma, s), (path.alpha, t), (path.sigma, t)))
    var_st = s_s**2 - (a_s / a_t) ** 2 * s_t**2
    var = var_st * s_t**2 / s_s**2
    x1_hat = flow.posterior_means(x, s)[0]
    mean = a_s * s_t**2 / (a_t * s_s**2) * x + a_t * var_st / s_s**2 * x1_hat
    xi = jax.random.normal(key, x.shape, x.dtype)
    np.testing.assert_allclose(S.ddim_step(model, x, s, t, eta=1.0, key=key), mean + np.sqrt(var) * xi, rtol=1e-10, atol=1e-11)
    np.testing.assert_allclose(S.exp_em_step(model, x, s, t, eta=1.0, key=key), mean + np.sqrt(var) * xi, rtol=1e-10, atol=1e-11)


def test_sample_scan_matches_loop_and_contracts():
    path = linear_path()
    model, flow = _model(path, "velocity")
    x = flow.sample_source(jax.random.key(2), 6)
    grid = schedules.log_snr_grid(path, 6, t_min=0.02, t_max=0.98)
    for solver, kw in (("dpmpp_3m", {}), ("unipc", {"order": 3}), ("exp_em", {"eta": 1.0, "key": jax.random.key(0)})):
        a = jax.jit(lambda x: S.sample(model, x, times=grid, solver=solver, **kw))(x)
        b = S.sample(model, x, times=grid, solver=solver, scan=False, **kw)
        assert a.shape == x.shape and bool(jnp.all(jnp.isfinite(a)))
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12, err_msg=solver)
    assert S.nfe("heun", 5, heun_final_euler=True) == 9 and S.nfe("unipc", 5) == 5 and S.nfe("dpm_solver3", 4) == 12
    with pytest.raises(ValueError, match="needs a PRNG"):
        S.sample(model, x, times=grid, solver="ddim", eta=1.0)
    with pytest.raises(ValueError, match="increasing"):
        S.sample(model, x, times=grid[::-1], solver="euler")
    with pytest.raises(ValueError, match="solver"):
        S.sample(model, x, times=grid, solver="bogus")


def test_final_denoise_and_adaptive_solver():
    path = vp_path()
    model, flow = _model(path, "noise")
    x = flow.sample_marginal(jax.random.key(3), 8, 0.1)
    ref = flow.flow_map(x, 0.1, 0.9)
    out, calls = S.sample_adaptive(model, x, t0=0.1, t1=0.9, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(out, ref, atol=1e-6)
    assert int(calls) > 6
    grid = schedules.log_snr_grid(path, 40, t_min=0.1, t_max=0.9)
    den = S.sample(model, x, times=grid, solver="dpmpp_2m", final_denoise=True, scan=False)
    end = S.sample(model, x, times=grid, solver="dpmpp_2m", scan=False)
    np.testing.assert_allclose(den, flow.posterior_means(end, 0.9)[0], rtol=1e-12)
    np.testing.assert_allclose(end, ref, atol=3e-3)
