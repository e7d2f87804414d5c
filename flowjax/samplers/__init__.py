"""Samplers: ODE/SDE solvers (diffrax), likelihoods, few-step flow-map samplers, guidance."""

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
from flowjax.samplers.first_order import data_and_noise
from flowjax.samplers.first_order import first_order
from flowjax.samplers.first_order import to_data_sample

__all__ = [
    "NFE_PER_STEP",
    "RK4",
    "SOLVER_NAMES",
    "divergence_exact",
    "divergence_hutchinson",
    "get_solver",
    "log_likelihood",
    "ode",
    "sample_with_log_likelihood",
    "sde",
    "standard_normal_log_prob",
    "data_and_noise",
    "first_order",
    "to_data_sample",
]
