"""Samplers: ODE/SDE solvers (diffrax), likelihoods, few-step flow-map samplers, guidance."""

from flowjax.samplers.guidance import anderson
from flowjax.samplers.guidance import cfg_nfe
from flowjax.samplers.guidance import cfg_sample
from flowjax.samplers.guidance import cfg_velocity
from flowjax.samplers.guidance import conditional_pair
from flowjax.samplers.guidance import constant_scale
from flowjax.samplers.guidance import interval_scale
from flowjax.samplers.guidance import linear_scale
from flowjax.samplers.guidance import manifold_project
from flowjax.samplers.guidance import picard
from flowjax.samplers.guidance import projection_operator
from flowjax.samplers.inverse import calibrate_weights
from flowjax.samplers.inverse import crw_schedule
from flowjax.samplers.inverse import data_consistency
from flowjax.samplers.inverse import flair
from flowjax.samplers.inverse import flair_time_grid
from flowjax.samplers.inverse import projected_euler
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
    "calibrate_weights",
    "crw_schedule",
    "data_consistency",
    "flair",
    "flair_time_grid",
    "projected_euler",
    "anderson",
    "cfg_nfe",
    "cfg_sample",
    "cfg_velocity",
    "conditional_pair",
    "constant_scale",
    "interval_scale",
    "linear_scale",
    "manifold_project",
    "picard",
    "projection_operator",
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
