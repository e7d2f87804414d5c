"""Losses: one pure function per method, ``loss(model_fn, key, x1, *, ...) -> (loss, aux)``."""

from flowjax.losses.bifm import bifm
from flowjax.losses.bifm import bifm_time_pairs
from flowjax.losses.cfm import cfm
from flowjax.losses.denoising import denoising_loss
from flowjax.losses.flowmaps import flowmap_eulerian
from flowjax.losses.flowmaps import flowmap_lagrangian
from flowjax.losses.flowmaps import flowmap_progressive
from flowjax.losses.meanflow import meanflow
from flowjax.losses.meanflow import meanflow_time_pairs
from flowjax.losses.shortcut import shortcut
from flowjax.losses.snapflow import snapflow
from flowjax.losses.splitmeanflow import splitmeanflow

__all__ = [
    "bifm",
    "bifm_time_pairs",
    "cfm",
    "denoising_loss",
    "flowmap_eulerian",
    "flowmap_lagrangian",
    "flowmap_progressive",
    "meanflow",
    "meanflow_time_pairs",
    "shortcut",
    "snapflow",
    "splitmeanflow",
]
