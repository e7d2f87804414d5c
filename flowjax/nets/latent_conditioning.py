"""Semantic-map conditioning for latent flow matching: LFM's jointly trained ``SpatialRescaler``.

Dao et al., "Flow Matching in Latent Space", arXiv 2307.08698 (spec ``latent-fm.md`` section 3.3, from the
official code): ``c = R_psi(onehot(S))`` where ``R_psi`` applies ``n_stages`` bilinear x0.5
downsamplings and then a 1x1 conv from #classes to the latent channels; it is trained jointly with
the velocity net (do not freeze it at its random init), and the velocity net sees ``concat(x_t, c)``.
Ours: ``flatten=True`` returns the map flattened, the analogue for a flat (MLP) latent;
:class:`ConcatConditioned` is the flat analogue of LFM's channel concatenation ``concat(x_t, c)`` for
any velocity net (used with an inpainting condition, a semantic map or a masked pixel image).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from jaxtyping import Array

__all__ = ["ConcatConditioned", "SpatialRescaler", "one_hot_map"]


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


class ConcatConditioned(nn.Module):
    """``v(x, t, c) = net(concat(flat(x), flat(c)), t)``, reshaped like ``x`` (LFM's input concatenation).

    The paper's (spec ``latent-fm.md`` sections 3.2-3.3): the velocity net sees ``concat(x_t, c)`` along
    channels; here the flat analogue for an MLP: ``x`` and ``c`` are flattened per sample and joined on the
    feature axis. ``net`` is any velocity module called as ``net(h, *times)`` whose output has
    ``x[0].size`` features per sample (e.g. ``MLP(out_dim=x[0].size)``). ``c`` is a float condition of
    any per-sample shape (e.g. :func:`flowjax.samplers.inpainting_condition` or
    :func:`flowjax.samplers.latent_conditioning.masked_pixel_condition`).
    """

    net: nn.Module

    @nn.compact
    def __call__(self, x: Array, *times: Array, c: Array | None = None) -> Array:
        if c is None:
            raise ValueError("`c` (the condition) is required by ConcatConditioned.")
        n = x.shape[0]
        if c.shape[0] != n:
            raise ValueError(f"`c` must have the batch size of `x` ({n}), got shape {c.shape}.")
        h = jnp.concatenate([x.reshape(n, -1), c.reshape(n, -1).astype(x.dtype)], axis=-1)
        out = self.net(h, *times)
        if out.size != x.size:
            raise ValueError(f"`net` must return {x[0].size} features per sample (the size of x), got shape {out.shape}; "
                             "set e.g. MLP(out_dim=...).")
        return out.reshape(x.shape)
