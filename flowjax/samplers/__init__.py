"""Samplers: ODE/SDE solvers (diffrax), likelihoods, few-step flow-map samplers, guidance."""

from flowjax.samplers.flowmap import flowmap
from flowjax.samplers.flowmap import flowmap_mlp
from flowjax.samplers.flowmap import uniform_grid
from flowjax.samplers.ode import NFE_PER_STEP
from flowjax.samplers.ode import RK4
from flowjax.samplers.ode import SOLVER_NAMES
from flowjax.samplers.ode import divergence_exact
from flowjax.samplers.ode import divergence_hutchinson
from flowjax.samplers.ode import get_solver
from flowjax.samplers.ode import log_likelihood
from flowjax.samplers.ode import ode
from flowjax.samplers.ode import sample_with_log_likelihood
from flowjax.samplers.ode import sde
from flowjax.samplers.ode import standard_normal_log_prob

__all__ = [
    "NFE_PER_STEP",
    "RK4",
    "SOLVER_NAMES",
    "divergence_exact",
    "flowmap",
    "flowmap_mlp",
    "divergence_hutchinson",
    "get_solver",
    "log_likelihood",
    "ode",
    "sample_with_log_likelihood",
    "sde",
    "standard_normal_log_prob",
    "uniform_grid",
]
