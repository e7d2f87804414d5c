"""Losses: one pure function per method, ``loss(model_fn, key, x1, *, ...) -> (loss, aux)``."""

from flowjax.losses.cfm import cfm
from flowjax.losses.denoising import denoising_loss
from flowjax.losses.repa import cka_alignment
from flowjax.losses.repa import cosine_alignment
from flowjax.losses.repa import linear_cka
from flowjax.losses.repa import repa_cfm

__all__ = [
    "cfm",
    "denoising_loss",
    "cka_alignment",
    "cosine_alignment",
    "linear_cka",
    "repa_cfm",
]
