"""Spatial-temporal transformer velocity network for pose/gesture sequences and small videos.

Factorised space-time attention (TimeSformer, Bertasius et al. 2021, arXiv:2102.05095, "divided
attention"; also Latte, Ma et al. 2024, arXiv:2401.03048): each block attends over the tokens of
one frame (spatial), then over the frames of one token (temporal), then applies an MLP, each
branch with adaLN-Zero conditioning on the time(s) and label as in DiT (arXiv:2212.09748). The
factorisation is the papers'; the adaLN-Zero wiring of the three branches, the optional per-frame
condition and the optional temporal causality (for streaming) are ours.

Inputs: ``x (B, T, J, C)`` (T frames of J tokens, e.g. joints with C coordinates) or, with
``patch_size`` set, video frames ``x (B, T, H, W, C)`` patchified per frame. Output has the shape
of ``x``. Times: ``t`` (or ``s, t`` with ``two_times``), scalars or ``(B,)``. Optional labels
``c (B,)`` (null label ``num_classes``) and per-frame features ``frame_cond (B, T, F)`` (e.g.
audio for co-speech gestures), projected and added to every token of the frame.

Usage::

    net = STTransformer(dim=128, depth=4, heads=4)
    params = net.init(key, x, t)
    v = net.apply(params, x, t)
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp
from jaxtyping import Array

from flowjax.nets.dit import patchify, unpatchify
from flowjax.nets.embeddings import sincos_embedding_1d, sincos_embedding_2d
from flowjax.nets.transformer_layers import Attention, ConditionEmbedder, FeedForward, FinalLayer, dense, modulate
from pallas_kernels.attention import BlockSizes

__all__ = ["STBlock", "STTransformer"]


class STBlock(nn.Module):
    """Spatial attention, temporal attention, MLP; each residual branch adaLN-Zero modulated.

    ``x (B, T, J, D)``, ``c (B, D)``; temporal attention is causal over frames when ``temporal_causal``.
    """

    dim: int
    heads: int
    kv_heads: int | None = None
    mlp_ratio: float = 4.0
    qk_norm: bool = False
    temporal_causal: bool = False
    implementation: str | None = None
    block_sizes: BlockSizes | None = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, c):
        b, t, j, d = x.shape
        mod = dense(9 * d, "adaLN", ("embed", "mlp"), zero=True)(nn.silu(c))
        chunks = jnp.split(mod, 9, axis=-1)
        ln = lambda name: nn.LayerNorm(use_bias=False, use_scale=False, epsilon=1e-6, name=name)  # noqa: E731

        def attn(name):
            return Attention(
                d, self.heads, self.kv_heads, self.qk_norm, self.implementation, self.block_sizes, self.dtype, name=name
            )

        # Spatial: tokens of each frame; condition repeated over frames.
        sh, sc, g = chunks[0:3]
        h = modulate(ln("norm_s")(x).reshape(b, t * j, d), sh, sc).reshape(b * t, j, d).astype(self.dtype)
        a, _ = attn("spatial_attn")(h)
        x = x + g[:, None, None, :] * a.reshape(b, t, j, d).astype(x.dtype)
        # Temporal: frames of each token.
        sh, sc, g = chunks[3:6]
        h = modulate(ln("norm_t")(x).reshape(b, t * j, d), sh, sc).reshape(b, t, j, d)
        h = h.transpose(0, 2, 1, 3).reshape(b * j, t, d).astype(self.dtype)
        a, _ = attn("temporal_attn")(h, causal=self.temporal_causal)
        x = x + g[:, None, None, :] * a.reshape(b, j, t, d).transpose(0, 2, 1, 3).astype(x.dtype)
        # MLP.
        sh, sc, g = chunks[6:9]
        h = modulate(ln("norm_m")(x).reshape(b, t * j, d), sh, sc).astype(self.dtype)
        f = FeedForward(d, self.mlp_ratio, self.dtype, name="mlp")(h)
        x = x + g[:, None, None, :] * f.reshape(b, t, j, d).astype(x.dtype)
        return nn.with_logical_constraint(x, ("batch", None, "act_len", "act_embed"))


class STTransformer(nn.Module):
    """Factorised space-time transformer ``v(x, t)`` / ``u(x, s, t)`` for sequences of token sets.

    Attributes:
      dim, depth, heads, kv_heads, mlp_ratio, qk_norm: transformer size (see :class:`~flowjax.nets.dit.DiT`).
      patch_size: None for ``(B, T, J, C)`` inputs; an int ``p`` for video ``(B, T, H, W, C)``.
      temporal_causal: frame ``tau`` only sees frames ``<= tau`` (streaming generation).
      two_times, time_mode, num_classes: conditioning as in DiT.
      frame_cond_dim: width of optional per-frame features ``frame_cond (B, T, F)`` (0 = none).
      out_channels: output channels (default: input channels).
      attention_impl, block_sizes, dtype: as in DiT.
    """

    dim: int = 128
    depth: int = 4
    heads: int = 4
    kv_heads: int | None = None
    mlp_ratio: float = 4.0
    qk_norm: bool = False
    patch_size: int | None = None
    temporal_causal: bool = False
    two_times: bool = False
    time_mode: str = "st"
    num_classes: int = 0
    frame_cond_dim: int = 0
    out_channels: int | None = None
    attention_impl: str | None = None
    block_sizes: BlockSizes | None = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array, *times: Array, c: Array | None = None, frame_cond: Array | None = None) -> Array:
        video = self.patch_size is not None
        if x.ndim != (5 if video else 4):
            want = "(B, T, H, W, C) with patch_size" if video else "(B, T, J, C)"
            raise ValueError(f"STTransformer expects x of shape {want}, got {x.shape}.")
        b, t = x.shape[:2]
        if video:
            p = self.patch_size
            hh, ww, ch = x.shape[2:]
            if hh % p or ww % p:
                raise ValueError(f"Frame size {(hh, ww)} must be divisible by `patch_size`={p}.")
            tok = patchify(x.reshape(b * t, hh, ww, ch), p)
            j = tok.shape[1]
            tok = tok.reshape(b, t, j, -1)
            spatial_pos = sincos_embedding_2d(hh // p, ww // p, self.dim)
        else:
            j, ch = x.shape[2], x.shape[3]
            tok = x
            spatial_pos = sincos_embedding_1d(jnp.arange(j), self.dim)
        cond = ConditionEmbedder(self.dim, self.two_times, self.time_mode, self.num_classes, name="cond")(b, times, c)
        h = dense(self.dim, "in_proj", ("patch", "embed"))(tok)
        temporal_pos = sincos_embedding_1d(jnp.arange(t), self.dim)
        h = h + spatial_pos[None, None].astype(h.dtype) + temporal_pos[None, :, None].astype(h.dtype)
        if self.frame_cond_dim:
            if frame_cond is None or frame_cond.shape != (b, t, self.frame_cond_dim):
                got = None if frame_cond is None else frame_cond.shape
                raise ValueError(f"`frame_cond` must have shape {(b, t, self.frame_cond_dim)}, got {got}.")
            h = h + dense(self.dim, "frame_cond_proj", (None, "embed"))(frame_cond)[:, :, None, :]
        elif frame_cond is not None:
            raise ValueError("`frame_cond` given but `frame_cond_dim` is 0.")
        for i in range(self.depth):
            h = STBlock(
                self.dim,
                self.heads,
                self.kv_heads,
                self.mlp_ratio,
                self.qk_norm,
                self.temporal_causal,
                self.attention_impl,
                self.block_sizes,
                self.dtype,
                name=f"block_{i}",
            )(h, cond)
        out_c = self.out_channels or ch
        out_feat = (self.patch_size**2 * out_c) if video else out_c
        out = FinalLayer(out_feat, name="final")(h.reshape(b, t * j, self.dim).astype(jnp.float32), cond)
        out = out.reshape(b, t, j, out_feat)
        if video:
            out = unpatchify(out.reshape(b * t, j, out_feat), self.patch_size, hh, ww, out_c).reshape(b, t, hh, ww, out_c)
        return out.astype(x.dtype)
