"""Embedding helpers shared by the velocity networks.

`timestep_embedding` is the sinusoidal embedding of Vaswani et al. (2017, arXiv:1706.03762, sec. 3.5)
in the form used by DDPM/ADM and DiT (Peebles & Xie 2023, arXiv:2212.09748): half the channels
are cosines and half sines of ``t * freq_k`` with geometrically spaced frequencies
``freq_k = max_period ** (-k / half)``.

Ours (project convention): flow-matching times live in ``[0, 1]`` (t=0 noise, t=1 data), whereas
the DiT embedding was tuned for integer diffusion steps in ``[0, 1000)``. We therefore multiply
``t`` by ``TIME_SCALE = 1000`` before the sinusoids so the same frequency range is exercised.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
from jax import Array

__all__ = [
    "TIME_SCALE",
    "pair_time_embedding",
    "sincos_embedding_1d",
    "sincos_embedding_2d",
    "timestep_embedding",
]

#: Factor applied to t in [0, 1] before the sinusoids (matches DiT's integer-step range).
TIME_SCALE: float = 1000.0


def timestep_embedding(t: Array, dim: int, *, max_period: float = 10_000.0, scale: float = TIME_SCALE) -> Array:
    """Sinusoidal embedding of times ``t``.

    Args:
      t: scalar or shape ``(B,)`` times, nominally in ``[0, 1]`` (project convention). They are
        multiplied by ``TIME_SCALE = 1000`` before the sinusoids (ours; DiT embeds integer steps).
      dim: embedding width (positive int). Odd ``dim`` is zero-padded by one channel.
      max_period: the largest period of the sinusoids (paper default 10000).
      scale: the factor ``t`` is multiplied by (default ``TIME_SCALE``). Networks differentiated in
        ``t`` (MeanFlow's JVP) see feature derivatives up to ``scale``; ``scale=1`` gives smooth features.

    Returns:
      Array of shape ``(B, dim)`` (``(1, dim)`` for a scalar ``t``), float32 unless ``t`` is float64:
      ``[cos(1000 t f_0), ..., cos(1000 t f_{h-1}), sin(1000 t f_0), ..., sin(1000 t f_{h-1})]``
      with ``h = dim // 2`` and ``f_k = max_period ** (-k / h)``.
    """
    if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
        raise ValueError(f"`dim` must be a positive integer, got {dim!r}.")
    t = jnp.asarray(t)
    if t.ndim > 1:
        raise ValueError(f"`t` must be a scalar or of shape (B,), got shape {tuple(t.shape)}.")
    if not jnp.issubdtype(t.dtype, jnp.floating):
        t = t.astype(jnp.float32)
    if not scale > 0:
        raise ValueError(f"`scale` must be positive, got {scale!r}.")
    t = jnp.atleast_1d(t)
    half = dim // 2
    dtype = t.dtype if t.dtype == jnp.float64 else jnp.float32
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=dtype) / max(half, 1))
    args = (scale * t.astype(dtype))[:, None] * freqs[None, :]
    emb = jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)
    if dim % 2:
        emb = jnp.concatenate([emb, jnp.zeros((emb.shape[0], 1), dtype)], axis=-1)
    return emb


def pair_time_embedding(
    s: Array, t: Array, dim: int, *, mode: str = "st", max_period: float = 10_000.0
) -> Array:
    """Embedding of a time pair for average-velocity (flow-map) networks ``u(x, s, t)``.

    ``mode="st"`` concatenates the embeddings of ``s`` and ``t``; ``mode="t_dt"`` embeds ``t`` and
    the interval ``t - s`` (the MeanFlow variant, Geng et al. 2025, arXiv:2505.13447, which found the
    (t, t - r) parametrisation convenient). Each half has ``dim // 2`` channels; returns ``(B, dim)``
    (``dim`` must be even).
    """
    if mode not in ("st", "t_dt"):
        raise ValueError(f"`mode` must be one of ('st', 't_dt'), got {mode!r}.")
    if not isinstance(dim, int) or dim < 2 or dim % 2:
        raise ValueError(f"`dim` must be a positive even integer, got {dim!r}.")
    s = jnp.asarray(s)
    t = jnp.asarray(t)
    first, second = (s, t) if mode == "st" else (t, t - s)
    a = timestep_embedding(first, dim // 2, max_period=max_period)
    b = timestep_embedding(second, dim // 2, max_period=max_period)
    if a.shape[0] != b.shape[0]:
        n = max(a.shape[0], b.shape[0])
        a = jnp.broadcast_to(a, (n, a.shape[1]))
        b = jnp.broadcast_to(b, (n, b.shape[1]))
    return jnp.concatenate([a, b], axis=-1)


def sincos_embedding_1d(positions: Array, dim: int, *, max_period: float = 10_000.0) -> Array:
    """Fixed sinusoidal embedding of integer positions (Vaswani et al. 2017, sec. 3.5).

    ``positions``: int or float array of any shape ``S``; returns ``S + (dim,)`` float32 with the
    layout ``[sin(p f_0..f_{h-1}), cos(p f_0..f_{h-1})]``, ``f_k = max_period ** (-k / h)``,
    ``h = dim // 2`` (MAE/DiT convention; no ``TIME_SCALE`` here: positions are not times).
    """
    if not isinstance(dim, int) or dim < 2 or dim % 2:
        raise ValueError(f"`dim` must be a positive even integer, got {dim!r}.")
    pos = jnp.asarray(positions, jnp.float32)
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    args = pos[..., None] * freqs.reshape((1,) * pos.ndim + (half,))
    return jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)


def sincos_embedding_2d(height: int, width: int, dim: int) -> Array:
    """Fixed 2-D sin-cos embedding of a ``height x width`` grid (DiT / MAE), shape ``(H*W, dim)``.

    Half the channels embed the row index and half the column index (``dim`` divisible by 4).
    """
    if dim % 4:
        raise ValueError(f"`dim` must be divisible by 4 for a 2-D embedding, got {dim}.")
    rows = jnp.repeat(jnp.arange(height), width)
    cols = jnp.tile(jnp.arange(width), height)
    return jnp.concatenate([sincos_embedding_1d(rows, dim // 2), sincos_embedding_1d(cols, dim // 2)], axis=-1)
