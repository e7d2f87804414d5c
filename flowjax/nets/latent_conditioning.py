"""Semantic-map conditioning for latent flow matching: LFM's jointly trained ``SpatialRescaler``.

Dao et al., "Flow Matching in Latent Space", arXiv 2307.08698 (spec ``latent-fm.md`` section 3.3, from the
official code): ``c = R_psi(onehot(S))`` where ``R_psi`` applies ``n_stages`` bilinear x0.5
downsamplings and then a 1x1 conv from #classes to the latent channels; it is trained jointly with
the velocity net (do not freeze it at its random init), and the velocity net sees ``concat(x_t, c)``.
Ours: ``flatten=True`` returns the map flattened, the analogue for a flat (MLP) latent.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from jaxtyping import Array

__all__ = ["SpatialRescaler", "one_hot_map"]


def one_hot_map(seg: Array, num_classes: int) -> Array:
    """Integer map ``(B, H, W)`` -> float one-hot ``(B, H, W, K)``."""
    seg = jnp.asarray(seg)
    if seg.ndim != 3 or not jnp.issubdtype(seg.dtype, jnp.integer):
        raise ValueError(f"`seg` must be an integer map of shape (B, H, W), got {seg.dtype} {seg.shape}.")
    return jax.nn.one_hot(seg, num_classes, dtype=jnp.float32)


class SpatialRescaler(nn.Module):
    """``n_stages`` bilinear x0.5 downsamplings then a 1x1 conv to ``out_channels`` (LFM, paper code)."""

    out_channels: int = 4
    n_stages: int = 3
    flatten: bool = False

    @nn.compact
    def __call__(self, onehot: Array) -> Array:
        if onehot.ndim != 4:
            raise ValueError(f"`onehot` must have shape (B, H, W, K), got {onehot.shape}.")
        h = onehot
        for _ in range(self.n_stages):
            b, hh, ww, k = h.shape
            if hh % 2 or ww % 2:
                raise ValueError(f"map size {(hh, ww)} is not divisible by 2 at every one of n_stages={self.n_stages}.")
            h = jax.image.resize(h, (b, hh // 2, ww // 2, k), method="bilinear", antialias=False)
        h = nn.Conv(self.out_channels, (1, 1), name="proj")(h)
        return h.reshape(h.shape[0], -1) if self.flatten else h
