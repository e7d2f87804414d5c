"""Losses: one pure function per method, ``loss(model_fn, key, x1, *, ...) -> (loss, aux)``."""

from flowjax.losses.bifm import bifm
from flowjax.losses.bifm import bifm_time_pairs
from flowjax.losses.cfm import cfm
from flowjax.losses.distill import boss_straightening
from flowjax.losses.distill import consistency_distillation
from flowjax.losses.distill import flowturbo_refiner
from flowjax.losses.distill import k_step_distillation
from flowjax.losses.distill import mdt_dist
from flowjax.losses.distill import pseudo_huber
from flowjax.losses.distill import rectified_diffusion
from flowjax.losses.distill import rectify
from flowjax.losses.distill import reflow
from flowjax.losses.distill import to_data_target
from flowjax.losses.distill import velocity_distillation
from flowjax.losses.distill import velocity_matching
from flowjax.losses.arcflow import ArcPolicy
from flowjax.losses.arcflow import arcflow_distill
from flowjax.losses.arcflow import arcflow_sample
from flowjax.losses.denoising import denoising_loss
from flowjax.losses.discrete import discrete_fm
from flowjax.losses.riemannian import riemannian_cfm
from flowjax.losses.repa import cka_alignment
from flowjax.losses.repa import cosine_alignment
from flowjax.losses.repa import linear_cka
from flowjax.losses.repa import repa_cfm
from flowjax.losses.flowmaps import flowmap_eulerian
from flowjax.losses.flowmaps import flowmap_lagrangian
from flowjax.losses.flowmaps import flowmap_progressive
from flowjax.losses.meanflow import meanflow
from flowjax.losses.meanflow import meanflow_time_pairs
from flowjax.losses.shortcut import shortcut
from flowjax.losses.snapflow import snapflow
from flowjax.losses.splitmeanflow import splitmeanflow
from flowjax.losses.kdiff import kdiff
from flowjax.losses.pafm import pafm
from flowjax.losses.sbcfm import icfm
from flowjax.losses.sbcfm import sbcfm
from flowjax.losses.sbcfm import target_cfm
from flowjax.losses.sbcfm import vpcfm
from flowjax.losses.vecor import vecor
from flowjax.losses.wcfm import wcfm
from flowjax.losses.rectok import rectok_loss
from flowjax.losses.rectok import semantic_distillation
from flowjax.losses.visual_bridge import visual_bridge
from flowjax.losses.csfm import csfm

from flowjax.losses.mle import check_residual_window
from flowjax.losses.mle import inference_error_bound
from flowjax.losses.mle import inversion_pairs
from flowjax.losses.mle import mle_finetune
from flowjax.losses.mle import reconstruction_error
from flowjax.losses.mle import residual_field
from flowjax.losses.mle import sensitivity
from flowjax.losses.blockwise import blockwise_fm
from flowjax.losses.blockwise import feature_residual_loss
from flowjax.losses.blockwise import fra_alpha
from flowjax.losses.blockwise import group_sizes
from flowjax.losses.blockwise import projection_alignment
from flowjax.losses.blockwise import segment_index
from flowjax.losses.blockwise import segment_start_end
from flowjax.losses.blockwise import stratified_segment_times
__all__ = [
    "rectok_loss",
    "semantic_distillation",
    "visual_bridge",
    "blockwise_fm",
    "feature_residual_loss",
    "fra_alpha",
    "group_sizes",
    "projection_alignment",
    "segment_index",
    "segment_start_end",
    "stratified_segment_times",
    "check_residual_window",
    "inference_error_bound",
    "inversion_pairs",
    "mle_finetune",
    "reconstruction_error",
    "residual_field",
    "sensitivity",
    "csfm",
    "bifm",
    "bifm_time_pairs",
    "cfm",
    "boss_straightening",
    "consistency_distillation",
    "flowturbo_refiner",
    "k_step_distillation",
    "mdt_dist",
    "pseudo_huber",
    "rectified_diffusion",
    "rectify",
    "reflow",
    "to_data_target",
    "velocity_distillation",
    "velocity_matching",
    "ArcPolicy",
    "arcflow_distill",
    "arcflow_sample",
    "denoising_loss",
    "discrete_fm",
    "riemannian_cfm",
    "cka_alignment",
    "cosine_alignment",
    "linear_cka",
    "repa_cfm",
    "flowmap_eulerian",
    "flowmap_lagrangian",
    "flowmap_progressive",
    "meanflow",
    "meanflow_time_pairs",
    "shortcut",
    "snapflow",
    "splitmeanflow",
    "icfm",
    "kdiff",
    "pafm",
    "sbcfm",
    "target_cfm",
    "vpcfm",
    "vecor",
    "wcfm",
]
