"""Reward alignment of flow models: Flow-GRPO, Euphonium, LeapAlign, KVPO (pure functions)."""

from flowjax.align import euphonium
from flowjax.align import grpo
from flowjax.align import kvpo
from flowjax.align import leapalign
from flowjax.align.euphonium import distillation_loss
from flowjax.align.euphonium import kl_mode_lambda
from flowjax.align.euphonium import process_advantages
from flowjax.align.euphonium import reward_guidance
from flowjax.align.grpo import clipped_surrogate
from flowjax.align.grpo import constant_diffusion
from flowjax.align.grpo import flow_grpo_diffusion
from flowjax.align.grpo import flow_grpo_loss
from flowjax.align.grpo import gaussian_log_prob
from flowjax.align.grpo import group_advantages
from flowjax.align.grpo import kl_step
from flowjax.align.grpo import sde_rollout
from flowjax.align.grpo import sde_step_mean
from flowjax.align.grpo import step_log_prob
from flowjax.align.kvpo import anchor_advantages
from flowjax.align.kvpo import branch_log_probs
from flowjax.align.kvpo import dispersed_routing_plan
from flowjax.align.kvpo import fuse_advantages
from flowjax.align.kvpo import kvpo_loss
from flowjax.align.kvpo import protect_scale
from flowjax.align.kvpo import routed_context
from flowjax.align.kvpo import trajectory_velocity_energy
from flowjax.align.kvpo import tve_weights
from flowjax.align.leapalign import euler_rollout
from flowjax.align.leapalign import leapalign_loss
from flowjax.align.leapalign import sample_leap_indices
from flowjax.align.leapalign import similarity_weights
from flowjax.align.leapalign import two_leap
from flowjax.align.leapalign import velocity_deviation

__all__ = [
    "clipped_surrogate",
    "constant_diffusion",
    "distillation_loss",
    "euphonium",
    "flow_grpo_diffusion",
    "flow_grpo_loss",
    "gaussian_log_prob",
    "group_advantages",
    "grpo",
    "kl_mode_lambda",
    "kvpo",
    "anchor_advantages",
    "branch_log_probs",
    "dispersed_routing_plan",
    "fuse_advantages",
    "kvpo_loss",
    "protect_scale",
    "routed_context",
    "trajectory_velocity_energy",
    "tve_weights",
    "leapalign",
    "euler_rollout",
    "leapalign_loss",
    "sample_leap_indices",
    "similarity_weights",
    "two_leap",
    "velocity_deviation",
    "kl_step",
    "process_advantages",
    "reward_guidance",
    "sde_rollout",
    "sde_step_mean",
    "step_log_prob",
]
