"""DiT / SiT velocity network: a transformer on image patches with adaLN-Zero conditioning.

Peebles & Xie, "Scalable Diffusion Models with Transformers" (DiT, arXiv:2212.09748); SiT (Ma et
al. 2024, arXiv:2401.08740) is the same backbone trained as a velocity field (flow matching),
which is how it is used here. From the papers: patchify with a fixed 2-D sin-cos position
embedding; a time embedding MLP on sinusoidal features plus a class embedding with an extra null
class for classifier-free guidance; N blocks with adaLN-Zero (zero-initialised shift/scale/gate,
so the net starts as the identity and its output as 0); final adaLN + linear + unpatchify.

Ours: the average-velocity variant ``u(x, s, t)`` (``two_times=True``) embeds ``(s, t)`` or
``(t, t - s)`` (``time_mode="t_dt"``, MeanFlow, arXiv:2505.13447) with two time MLPs summed;
attention runs through :func:`pallas_kernels.attention` (fused forward/backward and a fused JVP,
so MeanFlow-type losses stay fused on GPU); optional QK-norm and grouped KV heads; logical axis
annotations for the ``data``/``fsdp`` mesh (see :mod:`flowjax.nets.transformer_layers`).

Usage (pure functions of the parameters)::

    net = DiT(patch_size=2, dim=384, depth=12, heads=6, num_classes=10)
    params = net.init(key, x, t, c=labels)          # boxed with logical axis names
    v = net.apply(params, x, t, c=labels)           # x (B, H, W, C), t scalar or (B,)
    # two_times=True: u = net.apply(params, x, s, t, c=labels)
    # intermediate features (REPA / TORA alignment): tokens after block L, shape (B, N, dim)
    v, h = net.apply(params, x, t, c=labels, features_at=L)

Shapes: ``x (B, H, W, C)`` with ``H, W`` divisible by ``patch_size``; output like ``x``
(``out_channels`` defaults to ``C``). Labels ``c (B,)`` ints in ``[0, num_classes]``.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp
from jaxtyping import Array

from flowjax.nets.embeddings import sincos_embedding_2d
from flowjax.nets.transformer_layers import AdaLNBlock, ConditionEmbedder, FinalLayer, dense
from pallas_kernels.attention import BlockSizes

__all__ = ["DiT", "patchify", "unpatchify"]


def patchify(x: Array, p: int) -> Array:
    """``(B, H, W, C) -> (B, (H/p)(W/p), p*p*C)``, row-major over patches."""
    b, h, w, c = x.shape
    x = x.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, (h // p) * (w // p), p * p * c)


def unpatchify(tokens: Array, p: int, h: int, w: int, c: int) -> Array:
    """Inverse of :func:`patchify`: ``(B, (H/p)(W/p), p*p*C) -> (B, H, W, C)``."""
    b = tokens.shape[0]
    x = tokens.reshape(b, h // p, w // p, p, p, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h, w, c)


class DiT(nn.Module):
    """DiT/SiT velocity net ``v(x, t, c=labels)`` or average velocity ``u(x, s, t, c=labels)``.

    Attributes:
      patch_size: patch side ``p`` (paper: 2, 4, 8).
      dim, depth, heads: width, number of blocks, attention heads (DiT-S: 384, 12, 6).
      kv_heads: grouped-query attention (None = heads).
      mlp_ratio: MLP width / dim (paper 4).
      two_times: call with ``(x, s, t)`` for an average-velocity (flow-map) net.
      time_mode: ``"st"`` embeds s and t; ``"t_dt"`` embeds t and t - s.
      num_classes: 0 = unconditional; else labels in ``[0, num_classes]``, ``num_classes`` = null.
      qk_norm: RMS-normalise queries and keys per head (stabilises JVP training).
      out_channels: output channels (default: input channels).
      attention_impl: ``pallas_kernels.attention`` implementation (None = best available).
      block_sizes: Pallas tile sizes (None = backend default).
      dtype: activation dtype (parameters stay float32; softmax statistics float32).
    """

    patch_size: int = 2
    dim: int = 384
    depth: int = 12
    heads: int = 6
    kv_heads: int | None = None
    mlp_ratio: float = 4.0
    two_times: bool = False
    time_mode: str = "st"
    num_classes: int = 0
    qk_norm: bool = False
    out_channels: int | None = None
    attention_impl: str | None = None
    block_sizes: BlockSizes | None = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array, *times: Array, c: Array | None = None, features_at: int | None = None) -> Array | tuple[Array, Array]:
        """``features_at=L`` also returns the tokens after block ``L`` (1-based; 0 = the embedded patches
        before any block), shape ``(B, N, dim)``: the hook REPA/TORA align (ours; same parameters)."""
        if features_at is not None and not (isinstance(features_at, int) and 0 <= features_at <= self.depth):
            raise ValueError(f"`features_at` must be an int in [0, depth={self.depth}], got {features_at!r}.")
        if x.ndim != 4:
            raise ValueError(f"DiT expects images of shape (B, H, W, C), got {x.shape}.")
        b, h, w, ch = x.shape
        p = self.patch_size
        if h % p or w % p:
            raise ValueError(f"Image size {(h, w)} must be divisible by `patch_size`={p}.")
        cond = ConditionEmbedder(self.dim, self.two_times, self.time_mode, self.num_classes, name="cond")(b, times, c)
        tokens = dense(self.dim, "patch_embed", ("patch", "embed"))(patchify(x, p))
        tokens = tokens + sincos_embedding_2d(h // p, w // p, self.dim)[None].astype(tokens.dtype)
        tokens = nn.with_logical_constraint(tokens, ("batch", "act_len", "act_embed"))
        feats = tokens if features_at == 0 else None
        for i in range(self.depth):
            tokens, _ = AdaLNBlock(
                self.dim,
                self.heads,
                self.kv_heads,
                self.mlp_ratio,
                self.qk_norm,
                self.attention_impl,
                self.block_sizes,
                self.dtype,
                name=f"block_{i}",
            )(tokens, cond)
            if features_at == i + 1:
                feats = tokens
        out_c = self.out_channels or ch
        out = FinalLayer(p * p * out_c, name="final")(tokens.astype(jnp.float32), cond)
        out = unpatchify(out, p, h, w, out_c).astype(x.dtype)
        return out if features_at is None else (out, feats)
