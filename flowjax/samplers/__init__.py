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
from flowjax.samplers.ode import velocity_and_divergence
from flowjax.samplers.first_order import data_and_noise
from flowjax.samplers.first_order import first_order
from flowjax.samplers.first_order import to_data_sample
from flowjax.samplers.boss import bellman_path
from flowjax.samplers.boss import bellman_times
from flowjax.samplers.boss import brute_force_path
from flowjax.samplers.boss import cost_matrix
from flowjax.samplers.boss import straightening_pairs
from flowjax.samplers.flowturbo import flowturbo
from flowjax.samplers.flowturbo import flowturbo_nfe
from flowjax.samplers.flowturbo import make_flowturbo_sampler
from flowjax.samplers.flowturbo import pseudo_corrector
from flowjax.samplers import sde_family
from flowjax.samplers import solvers
from flowjax.samplers.sde_family import pf_ode_log_likelihood
from flowjax.samplers.sde_family import sample_sde
from flowjax.samplers.solvers import PredictionModel
from flowjax.samplers.latent_conditioning import latent_inpaint
from flowjax.samplers.latent_conditioning import latent_conditional_sample
from flowjax.samplers.latent_conditioning import inpainting_condition
from flowjax.samplers.latent_conditioning import paste_known
from flowjax.samplers.latent_conditioning import latent_replacement_inpaint
from flowjax.samplers.latent_conditioning import masked_pixel_condition

from flowjax.samplers.unrolled import unrolled_ode
from flowjax.samplers.blockwise import blockwise_macs
from flowjax.samplers.blockwise import blockwise_ode
__all__ = [
    "latent_inpaint",
    "latent_conditional_sample",
    "inpainting_condition",
    "paste_known",
    "latent_replacement_inpaint",
    "masked_pixel_condition",
    "blockwise_macs",
    "blockwise_ode",
    "unrolled_ode",
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
    "flowmap",
    "flowmap_mlp",
    "divergence_hutchinson",
    "get_solver",
    "log_likelihood",
    "velocity_and_divergence",
    "ode",
    "pf_ode_log_likelihood",
    "sample_with_log_likelihood",
    "sample_sde",
    "sde",
    "sde_family",
    "solvers",
    "standard_normal_log_prob",
    "uniform_grid",
    "data_and_noise",
    "first_order",
    "to_data_sample",
    "bellman_path",
    "bellman_times",
    "brute_force_path",
    "cost_matrix",
    "straightening_pairs",
    "flowturbo",
    "flowturbo_nfe",
    "make_flowturbo_sampler",
    "pseudo_corrector",
]
