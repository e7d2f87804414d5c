"""Losses: one pure function per method, ``loss(model_fn, key, x1, *, ...) -> (loss, aux)``."""

from flowjax.losses.cfm import cfm

__all__ = [
    "cfm",
]
