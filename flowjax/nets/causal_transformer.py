"""Causal transformer with a KV cache and KV routing, for autoregressive flows and streaming.

A decoder-only transformer (pre-norm blocks with adaLN-Zero conditioning as in DiT,
arXiv:2212.09748) over a token sequence ``x (B, L, in_dim)``. Attention is causal at the
granularity of *frames* of ``frame_size`` tokens: tokens of one frame see each other and all
earlier frames (``frame_size=1`` is ordinary token causality). This is the "deep block" shape of
TarFlow/STARFlow(-V) (arXiv:2412.06329, 2506.06276, 2511.20462: causal over frames, full inside
a frame) and the block-causal generator of streaming video models (KVPO, arXiv:2605.14278).
The papers define those models; this module is our generic backbone for them.

- Streaming: with ``cache`` (from :func:`init_kv_cache`) the call appends the new tokens' keys and
  values at position ``cache["length"]`` and attends over the cache; it returns
  ``(out, new_cache)`` with ``length`` advanced. Calls are pure, so a caller can discard the new
  cache (attend to context without committing a noisy block) or fork it (KVPO branches).
- KV routing: ``kv_index`` (``(q_blocks, n_sel)`` or ``(B, q_blocks, n_sel)`` indices into the KV
  array: the cache when one is given, else the sequence; ``-1`` = padding) restricts which KV
  entries each query block sees, on top of causality; see :func:`pallas_kernels.attention`.
  KVPO re-routes a block's context to a subset of historical frames this way.
- Conditioning: optional time(s) (``time_conditioning``; for velocity nets ``v(x_t, t; KV)``) and
  class labels; with neither, a learned constant condition vector drives the adaLN.

Usage::

    net = CausalTransformer(dim=128, depth=4, heads=4, out_dim=2 * d)       # e.g. (mu, log alpha)
    params = net.init(key, x)
    y = net.apply(params, x)                                                 # (B, L, out_dim)
    cache = init_kv_cache(net, batch=B, max_len=1024)
    y1, cache = net.apply(params, x[:, :16], cache=cache)                    # prefill
    y2, cache = net.apply(params, x[:, 16:17], cache=cache)                  # one more token
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jaxtyping import Array

from flowjax.nets.embeddings import sincos_embedding_1d
from flowjax.nets.transformer_layers import AdaLNBlock, ConditionEmbedder, FinalLayer, dense
from pallas_kernels.attention import BlockSizes

__all__ = ["CausalTransformer", "init_kv_cache", "frame_causal_positions"]


def frame_causal_positions(positions: Array, frame_size: int) -> Array:
    """Causal position of each query for frame-causal attention: the last position of its frame.

    Query at absolute position ``p`` may see keys ``j <= (p // F + 1) F - 1``.
    """
    return (positions // frame_size + 1) * frame_size - 1


def init_kv_cache(module: "CausalTransformer", *, batch: int, max_len: int, dtype: Any = jnp.float32) -> dict:
    """Empty cache: ``{"layers": [{"k", "v"} (B, max_len, kv_heads, head_dim)] * depth, "length": 0}``."""
    hd = module.dim // module.heads
    kvh = module.kv_heads or module.heads
    zeros = lambda: jnp.zeros((batch, max_len, kvh, hd), dtype)  # noqa: E731
    return {"layers": [{"k": zeros(), "v": zeros()} for _ in range(module.depth)], "length": jnp.zeros((), jnp.int32)}


class CausalTransformer(nn.Module):
    """Frame-causal transformer ``(x (B, L, in_dim)[, t | s, t]) -> (B, L, out_dim)``.

    Attributes:
      dim, depth, heads, kv_heads, mlp_ratio, qk_norm: transformer size.
      out_dim: output width (default: ``in_dim``).
      frame_size: tokens per frame for frame-causal attention (1 = token causal). With a cache,
        each call must start at a frame boundary.
      time_conditioning, two_times, time_mode: condition on ``t`` (or ``s, t``) via adaLN.
      num_classes: label conditioning (``num_classes`` = null label).
      attention_impl, block_sizes, dtype: as in DiT.
    """

    dim: int = 128
    depth: int = 4
    heads: int = 4
    kv_heads: int | None = None
    mlp_ratio: float = 4.0
    qk_norm: bool = False
    out_dim: int | None = None
    frame_size: int = 1
    time_conditioning: bool = False
    two_times: bool = False
    time_mode: str = "st"
    num_classes: int = 0
    attention_impl: str | None = None
    block_sizes: BlockSizes | None = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array, *times: Array, c: Array | None = None, cache: dict | None = None, kv_index: Array | None = None):
        if x.ndim != 3:
            raise ValueError(f"CausalTransformer expects x of shape (B, L, in_dim), got {x.shape}.")
        b, n, in_dim = x.shape
        if self.time_conditioning:
            cond = ConditionEmbedder(self.dim, self.two_times, self.time_mode, self.num_classes, name="cond")(b, times, c)
        else:
            if times:
                raise ValueError("This CausalTransformer has time_conditioning=False; pass no times.")
            cond = self.param("null_cond", nn.initializers.normal(0.02), (self.dim,))
            cond = jnp.broadcast_to(cond[None], (b, self.dim))
            if self.num_classes > 0:
                labels = c if c is not None else jnp.full((b,), self.num_classes, jnp.int32)
                cond = cond + nn.Embed(self.num_classes + 1, self.dim, name="label_embed")(labels)
        offset = jnp.zeros((), jnp.int32) if cache is None else jnp.asarray(cache["length"], jnp.int32)
        if cache is not None:
            cap = cache["layers"][0]["k"].shape[1]
            if not isinstance(cache["length"], jax.core.Tracer) and int(cache["length"]) + n > cap:
                raise ValueError(f"KV cache overflow: length {int(cache['length'])} + {n} new tokens > capacity {cap}.")
            if len(cache["layers"]) != self.depth:
                raise ValueError(f"`cache` has {len(cache['layers'])} layers, the model has depth {self.depth}.")
        positions = offset + jnp.arange(n, dtype=jnp.int32)
        h = dense(self.dim, "in_proj", ("patch", "embed"))(x)
        h = h + sincos_embedding_1d(positions, self.dim)[None].astype(h.dtype)
        qpos = frame_causal_positions(positions, self.frame_size) if self.frame_size > 1 else positions
        new_layers = []
        for i in range(self.depth):
            layer_cache = None
            if cache is not None:
                layer_cache = dict(cache["layers"][i], length=offset)
            h, nc = AdaLNBlock(
                self.dim,
                self.heads,
                self.kv_heads,
                self.mlp_ratio,
                self.qk_norm,
                self.attention_impl,
                self.block_sizes,
                self.dtype,
                name=f"block_{i}",
            )(h, cond, causal=True, q_positions=qpos, kv_index=kv_index, cache=layer_cache)
            new_layers.append(nc)
        out = FinalLayer(self.out_dim or in_dim, name="final")(h.astype(jnp.float32), cond)
        out = out.astype(x.dtype)
        if cache is None:
            return out
        return out, {"layers": new_layers, "length": offset + jnp.int32(n)}

