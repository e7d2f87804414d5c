"""Losses: one pure function per method, ``loss(model_fn, key, x1, *, ...) -> (loss, aux)``."""

from flowjax.losses.cfm import cfm
from flowjax.losses.denoising import denoising_loss
from flowjax.losses.discrete import discrete_fm
from flowjax.losses.riemannian import riemannian_cfm

__all__ = [
    "cfm",
    "denoising_loss",
    "discrete_fm",
    "riemannian_cfm",
]
