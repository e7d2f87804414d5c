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
from flowjax.samplers import sde_family
from flowjax.samplers import solvers
from flowjax.samplers.sde_family import pf_ode_log_likelihood
from flowjax.samplers.sde_family import sample_sde
from flowjax.samplers.solvers import PredictionModel

__all__ = [
    "NFE_PER_STEP",
    "PredictionModel",
    "RK4",
    "SOLVER_NAMES",
    "divergence_exact",
    "divergence_hutchinson",
    "get_solver",
    "log_likelihood",
    "ode",
    "pf_ode_log_likelihood",
    "sample_with_log_likelihood",
    "sample_sde",
    "sde",
    "sde_family",
    "solvers",
    "standard_normal_log_prob",
]
