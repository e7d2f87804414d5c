"""Losses: one pure function per method, ``loss(model_fn, key, x1, *, ...) -> (loss, aux)``."""

from flowjax.losses.cfm import cfm
from flowjax.losses.denoising import denoising_loss
from flowjax.losses.kdiff import kdiff
from flowjax.losses.pafm import pafm
from flowjax.losses.sbcfm import icfm
from flowjax.losses.sbcfm import sbcfm
from flowjax.losses.sbcfm import target_cfm
from flowjax.losses.sbcfm import vpcfm
from flowjax.losses.vecor import vecor
from flowjax.losses.wcfm import wcfm

__all__ = [
    "cfm",
    "denoising_loss",
    "icfm",
    "kdiff",
    "pafm",
    "sbcfm",
    "target_cfm",
    "vpcfm",
    "vecor",
    "wcfm",
]
