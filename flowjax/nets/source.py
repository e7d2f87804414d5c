"""Learned condition-dependent source networks ``S_phi(c) -> (mu, log sigma^2)`` (CSFM, arXiv 2602.05951).

The paper's ``S_phi`` is a Perceiver over CLIP text tokens (256 learned queries, 8 layers, a mean head
reshaped to the 768x16x16 latent) with an optional log-variance head (bias initialised to 1.0,
clamped to [-10, 10]); the spec's minimal toy version is a per-class embedding table. This module
provides that minimal version (ours: the Perceiver is not implemented here).
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp
from jaxtyping import Array


class ClassConditionalSource(nn.Module):
    """``c -> (mu_c, logvar_c)``: a learned mean per class (an embedding table), and optionally a
    learned per-class log-variance (bias init ``logvar_init``, code 1.0).

    Attributes:
      num_classes: number of classes (labels in ``[0, num_classes)``).
      shape: the per-sample data shape (e.g. ``(2,)`` or ``(8, 8, 1)``).
      learn_logvar: if False, ``logvar`` is returned as zeros (the paper's default fixed std 1).
      logvar_init: initial value of the learned log-variance (code 1.0).
      mean_init_std: std of the normal initialisation of the mean table (0 gives zeros, i.e. the
        standard N(0, I) source at initialisation).
    """

    num_classes: int
    shape: Sequence[int]
    learn_logvar: bool = False
    logvar_init: float = 1.0
    mean_init_std: float = 0.0

    @nn.compact
    def __call__(self, c: Array) -> tuple[Array, Array]:
        d = 1
        for s in self.shape:
            d *= int(s)
        init = nn.initializers.zeros if self.mean_init_std == 0 else nn.initializers.normal(self.mean_init_std)
        mu = nn.Embed(self.num_classes, d, embedding_init=init, name="mean")(c)
        if self.learn_logvar:
            lv = nn.Embed(self.num_classes, d, embedding_init=nn.initializers.constant(self.logvar_init),
                          name="logvar")(c)
        else:
            lv = jnp.zeros_like(mu)
        out_shape = tuple(c.shape) + tuple(int(s) for s in self.shape)
        return mu.reshape(out_shape), lv.reshape(out_shape)


__all__ = ["ClassConditionalSource"]
