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


@pytest.fixture(scope="module", params=["linear", "vp"])
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


@pytest.mark.parametrize("solver,kwargs,order,grid", CASES, ids=[c[0] + str(c[1].get("order", "")) for c in CASES])
def test_measured_order_matches_theory(problem, solver, kwargs, order, grid):
    name, path, flow, x, ref = problem
    errs = _errors(path, flow, x, ref, solver, kwargs, grid)
    slope = -np.polyfit(np.log(STEPS), np.log(errs), 1)[0]
    assert np.all(errs[1:] < errs[:-1]), (name, solver, errs)
    assert abs(slope - order) < 0.3, (name, solver, errs, slope)
