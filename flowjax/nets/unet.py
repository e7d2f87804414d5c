"""A small UNet velocity network for 8x8 (digits) and 28x28 (MNIST) images, NHWC layout.

Two resolutions (channels ``(c, 2c)``), residual blocks with GroupNorm and a time (and optional
label) embedding added per block, one self-free bottleneck. Used as ``net.apply(params, x, t)``
or, with ``two_times=True``, ``net.apply(params, x, s, t)``.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from jaxtyping import Array

from flowjax.nets.mlp import condition_embedding


def _groups(channels: int) -> int:
    for g in (8, 4, 2, 1):
        if channels % g == 0:
            return g
    return 1


class ResBlock(nn.Module):
    channels: int

    @nn.compact
    def __call__(self, x: Array, emb: Array) -> Array:
        h = nn.silu(nn.GroupNorm(num_groups=_groups(x.shape[-1]))(x))
        h = nn.Conv(self.channels, (3, 3))(h)
        h = h + nn.Dense(self.channels)(emb)[:, None, None, :]
        h = nn.silu(nn.GroupNorm(num_groups=_groups(self.channels))(h))
        h = nn.Conv(self.channels, (3, 3), kernel_init=nn.initializers.zeros)(h)
        skip = x if x.shape[-1] == self.channels else nn.Conv(self.channels, (1, 1))(x)
        return skip + h


class UNet(nn.Module):
    """Small UNet: ``x (n, H, W, C) -> same shape``; H and W must be even."""

    channels: int = 32
    time_dim: int = 128
    two_times: bool = False
    time_mode: str = "st"
    zero_init_second_time: bool = False
    num_classes: int = 0

    @nn.compact
    def __call__(self, x: Array, *times: Array, c: Array | None = None) -> Array:
        if x.ndim != 4:
            raise ValueError(f"UNet expects images of shape (n, H, W, C), got {x.shape}.")
        if x.shape[1] % 2 or x.shape[2] % 2:
            raise ValueError(f"UNet needs even H and W, got {x.shape[1:3]}.")
        n = x.shape[0]
        emb = condition_embedding(self, x, times, c)
        c1, c2 = self.channels, 2 * self.channels
        h0 = nn.Conv(c1, (3, 3))(x)
        h1 = ResBlock(c1)(h0, emb)
        d = nn.avg_pool(h1, (2, 2), strides=(2, 2))
        h2 = ResBlock(c2)(d, emb)
        h2 = ResBlock(c2)(h2, emb)
        u = jax.image.resize(h2, (n, h1.shape[1], h1.shape[2], c2), "nearest")
        h3 = ResBlock(c1)(jnp.concatenate([u, h1], axis=-1), emb)
        h3 = nn.silu(nn.GroupNorm(num_groups=_groups(c1))(h3))
        return nn.Conv(x.shape[-1], (3, 3), kernel_init=nn.initializers.zeros)(h3)
