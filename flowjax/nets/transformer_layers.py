"""Shared transformer layers for the velocity networks (DiT, spatial-temporal, causal).

- Attention goes through :func:`pallas_kernels.attention` (fused forward, backward *and* JVP on
  GPU/TPU; XLA on CPU), optionally with QK-norm (RMSNorm of queries and keys per head, which
  keeps logits bounded and stabilises JVP-based training such as MeanFlow).
- :class:`CrossAttention` (queries from one sequence, keys and values from another, with a key-padding
  mask) and a :class:`SwiGLU` feed-forward, for Perceiver-style nets (the CSFM source net,
  :class:`flowjax.nets.PerceiverSource`).
- adaLN-Zero conditioning (Peebles & Xie 2023, arXiv:2212.09748, sec. 3.2): a zero-initialised
  linear map of the condition gives per-channel shift, scale and gate for each residual branch,
  so every block starts as the identity.
- Sharding: parameters carry logical axis names (``nn.with_logical_partitioning``) and activations
  logical constraints; :data:`LOGICAL_AXIS_RULES` maps them to the ``data``/``fsdp`` mesh (batch over
  both, parameters' ``embed`` axis over ``fsdp``). Without a mesh the annotations are no-ops.
  Under a mesh, the Pallas attention call is wrapped in ``jax.shard_map`` over the batch axes
  (a ``pallas_call`` is not auto-partitioned).
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import PartitionSpec as P
from jaxtyping import Array

from flowjax.nets.embeddings import timestep_embedding
from pallas_kernels.attention import BlockSizes, attention, default_implementation

__all__ = [
    "LOGICAL_AXIS_RULES",
    "Attention",
    "ConditionEmbedder",
    "CrossAttention",
    "FeedForward",
    "AdaLNBlock",
    "FinalLayer",
    "SwiGLU",
    "dense",
    "modulate",
    "param_shardings",
    "sharded_attention",
]

#: Logical axis -> mesh axis rules for the ``("data", "fsdp")`` mesh. Activations use the ``act_*``
#: names (unsharded features, batch over both axes); parameters shard their ``embed`` axis over
#: ``fsdp`` (ZeRO-3 style; XLA all-gathers them per layer).
LOGICAL_AXIS_RULES: tuple[tuple[str, Any], ...] = (
    ("batch", ("data", "fsdp")),
    ("act_len", None),
    ("act_embed", None),
    ("embed", "fsdp"),
    ("mlp", None),
    ("qkv", None),
    ("vocab", None),
    ("patch", None),
)


def dense(features: int, name: str, axes: tuple[str | None, str | None], *, zero: bool = False, dtype=jnp.float32):
    """``nn.Dense`` with logically partitioned kernel/bias (xavier init, or zeros for adaLN-Zero)."""
    kinit = nn.initializers.zeros if zero else nn.initializers.xavier_uniform()
    return nn.Dense(
        features,
        name=name,
        dtype=dtype,
        kernel_init=nn.with_logical_partitioning(kinit, axes),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (axes[1],)),
    )


def modulate(x: Array, shift: Array, scale: Array) -> Array:
    """adaLN modulation ``x (1 + scale) + shift`` with per-sample ``(B, D)`` shift/scale, ``x (B, L, D)``."""
    return x * (1 + scale[:, None, :]) + shift[:, None, :]


def _constrain(x: Array, axes: tuple) -> Array:
    return nn.with_logical_constraint(x, axes)


def param_shardings(variables: Any, mesh: jax.sharding.Mesh, rules=LOGICAL_AXIS_RULES) -> Any:
    """NamedShardings for (boxed) variables returned by ``module.init``, from their logical axes."""
    specs = nn.get_partition_spec(variables)
    return nn.logical_to_mesh_sharding(specs, mesh, rules)


def _batch_axes(mesh, batch: int) -> tuple[str, ...]:
    axes = tuple(a for a in ("data", "fsdp") if a in mesh.axis_names and mesh.shape[a] > 1)
    size = math.prod(mesh.shape[a] for a in axes) if axes else 1
    return axes if axes and batch % size == 0 else ()


def sharded_attention(q: Array, k: Array, v: Array, *, implementation: str | None = None, **kwargs) -> Array:
    """:func:`pallas_kernels.attention`, wrapped in ``jax.shard_map`` over the batch axes when a mesh
    with ``data``/``fsdp`` axes is active and the Pallas path is used (XLA partitions by itself).

    Array keyword arguments with a batch axis (``mask`` with batch > 1, 3-D ``kv_index``, 2-D
    ``q_positions``, 1-D ``q_offset``) are split along the batch like ``q``; others are replicated.
    """
    impl = implementation or default_implementation()
    mesh = jax.sharding.get_abstract_mesh()
    if impl == "xla" or mesh.empty:
        return attention(q, k, v, implementation=impl, **kwargs)
    axes = _batch_axes(mesh, q.shape[0])
    if not axes:
        return attention(q, k, v, implementation=impl, **kwargs)
    batched_rank = {"mask": 4, "kv_index": 3, "q_positions": 2, "q_offset": 1}
    arr_names, arr_vals, arr_specs, static = [], [], [], {}
    for name, val in kwargs.items():
        if name in batched_rank and val is not None and hasattr(val, "ndim"):
            split = val.ndim == batched_rank[name] and val.shape[0] == q.shape[0] and q.shape[0] > 1
            arr_names.append(name)
            arr_vals.append(val)
            arr_specs.append(P(axes) if split else P())
        else:
            static[name] = val
    bspec = P(axes)

    def local(q_, k_, v_, *extra):
        kw = dict(static, **dict(zip(arr_names, extra)))
        return attention(q_, k_, v_, implementation=impl, **kw)

    return jax.shard_map(
        local, mesh=mesh, in_specs=(bspec, bspec, bspec, *arr_specs), out_specs=bspec, check_vma=False
    )(q, k, v, *arr_vals)


class Attention(nn.Module):
    """Multi-head self-attention with GQA, optional QK-norm and an optional KV cache.

    Call: ``(x (B, L, dim), *, causal, mask, kv_index, q_positions, cache) -> (y (B, L, dim), new_cache)``.
    With ``cache = {"k": (B, M, kv_heads, head_dim), "v": ..., "length": int32}`` the new keys and
    values are written at ``[length, length + L)`` and the queries attend over the whole cache with
    causal positions ``q_positions`` (default ``length + arange(L)``); ``new_cache`` holds the
    updated arrays (the caller advances ``length``). Without a cache ``new_cache`` is None.
    """

    dim: int
    heads: int
    kv_heads: int | None = None
    qk_norm: bool = False
    implementation: str | None = None
    block_sizes: BlockSizes | None = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, causal=False, mask=None, kv_index=None, q_positions=None, cache=None):
        b, n, _ = x.shape
        if self.dim % self.heads:
            raise ValueError(f"`dim` ({self.dim}) must be divisible by `heads` ({self.heads}).")
        hd = self.dim // self.heads
        kvh = self.kv_heads or self.heads
        q = dense(self.heads * hd, "q", ("embed", "qkv"), dtype=self.dtype)(x).reshape(b, n, self.heads, hd)
        k = dense(kvh * hd, "k", ("embed", "qkv"), dtype=self.dtype)(x).reshape(b, n, kvh, hd)
        v = dense(kvh * hd, "v", ("embed", "qkv"), dtype=self.dtype)(x).reshape(b, n, kvh, hd)
        if self.qk_norm:
            q = nn.RMSNorm(name="q_norm", dtype=self.dtype)(q)
            k = nn.RMSNorm(name="k_norm", dtype=self.dtype)(k)
        new_cache = None
        if cache is not None:
            length = jnp.asarray(cache["length"], jnp.int32)
            zero = jnp.zeros((), jnp.int32)
            ck = lax.dynamic_update_slice(cache["k"], k.astype(cache["k"].dtype), (zero, length, zero, zero))
            cv = lax.dynamic_update_slice(cache["v"], v.astype(cache["v"].dtype), (zero, length, zero, zero))
            new_cache = {"k": ck, "v": cv}
            k, v = ck.astype(q.dtype), cv.astype(q.dtype)
            if q_positions is None:
                q_positions = length + jnp.arange(n, dtype=jnp.int32)
            causal = True  # cache entries past the queries' positions are empty
        o = sharded_attention(
            q,
            k,
            v,
            causal=causal,
            mask=mask,
            kv_index=kv_index,
            q_positions=q_positions,
            implementation=self.implementation,
            block_sizes=self.block_sizes,
        )
        y = dense(self.dim, "proj", ("qkv", "embed"), dtype=self.dtype)(o.reshape(b, n, self.heads * hd))
        return y, new_cache


class FeedForward(nn.Module):
    """``Dense(ratio * dim) -> GELU(tanh) -> Dense(dim)``."""

    dim: int
    mlp_ratio: float = 4.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        h = dense(int(self.dim * self.mlp_ratio), "fc1", ("embed", "mlp"), dtype=self.dtype)(x)
        h = nn.gelu(h, approximate=True)
        return dense(self.dim, "fc2", ("mlp", "embed"), dtype=self.dtype)(h)


class ConditionEmbedder(nn.Module):
    """Condition vector ``c (B, dim)`` from time(s) and an optional class label.

    Times: ``MLP(timestep_embedding(t, freq_dim))`` (DiT's TimestepEmbedder; ``t in [0,1]`` scaled
    by 1000). With two times the second embedding (of ``s``, or of ``t - s`` for
    ``time_mode="t_dt"``, MeanFlow's parametrisation) is added through its own MLP. Labels:
    ``nn.Embed(num_classes + 1, dim)``; index ``num_classes`` is the null label for CFG and is
    used when ``labels`` is None.
    """

    dim: int
    two_times: bool = False
    time_mode: str = "st"
    num_classes: int = 0
    freq_dim: int = 256

    def _time_mlp(self, t, name):
        h = timestep_embedding(t, self.freq_dim)
        h = dense(self.dim, f"{name}_fc1", (None, "embed"))(h)
        return dense(self.dim, f"{name}_fc2", ("embed", "mlp"))(nn.silu(h))

    @nn.compact
    def __call__(self, batch: int, times: tuple, labels=None):
        if self.time_mode not in ("st", "t_dt"):
            raise ValueError(f"`time_mode` must be 'st' or 't_dt', got {self.time_mode!r}.")
        expected = 2 if self.two_times else 1
        if len(times) != expected:
            raise ValueError(f"two_times={self.two_times} takes {expected} time argument(s), got {len(times)}.")
        t = jnp.broadcast_to(jnp.asarray(times[-1], jnp.float32), (batch,))
        c = self._time_mlp(t, "t_embed")
        if self.two_times:
            s = jnp.broadcast_to(jnp.asarray(times[0], jnp.float32), (batch,))
            second = s if self.time_mode == "st" else t - s
            c = c + self._time_mlp(second, "s_embed" if self.time_mode == "st" else "dt_embed")
        if self.num_classes > 0:
            if labels is None:
                labels = jnp.full((batch,), self.num_classes, jnp.int32)
            table = nn.Embed(
                self.num_classes + 1,
                self.dim,
                embedding_init=nn.with_logical_partitioning(nn.initializers.normal(0.02), ("vocab", "embed")),
                name="label_embed",
            )
            c = c + table(labels)
        return c


class AdaLNBlock(nn.Module):
    """DiT block with adaLN-Zero: ``x += g1 * Attn(mod(LN x)); x += g2 * MLP(mod(LN x))``.

    ``attn_kwargs`` are passed to :class:`Attention` (causal, mask, kv_index, q_positions, cache).
    Returns ``(x, new_cache)``.
    """

    dim: int
    heads: int
    kv_heads: int | None = None
    mlp_ratio: float = 4.0
    qk_norm: bool = False
    implementation: str | None = None
    block_sizes: BlockSizes | None = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, c, **attn_kwargs):
        mod = dense(6 * self.dim, "adaLN", ("embed", "mlp"), zero=True)(nn.silu(c))
        sh1, sc1, g1, sh2, sc2, g2 = jnp.split(mod, 6, axis=-1)
        ln = lambda name: nn.LayerNorm(use_bias=False, use_scale=False, epsilon=1e-6, name=name)  # noqa: E731
        h = modulate(ln("norm1")(x), sh1, sc1).astype(self.dtype)
        a, new_cache = Attention(
            self.dim, self.heads, self.kv_heads, self.qk_norm, self.implementation, self.block_sizes, self.dtype, name="attn"
        )(h, **attn_kwargs)
        x = x + g1[:, None, :] * a.astype(x.dtype)
        x = _constrain(x, ("batch", "act_len", "act_embed"))
        h = modulate(ln("norm2")(x), sh2, sc2).astype(self.dtype)
        x = x + g2[:, None, :] * FeedForward(self.dim, self.mlp_ratio, self.dtype, name="mlp")(h).astype(x.dtype)
        return _constrain(x, ("batch", "act_len", "act_embed")), new_cache


class FinalLayer(nn.Module):
    """adaLN-modulated LayerNorm then a zero-initialised linear map to ``out_dim`` (DiT)."""

    out_dim: int

    @nn.compact
    def __call__(self, x, c):
        dim = x.shape[-1]
        shift, scale = jnp.split(dense(2 * dim, "adaLN", ("embed", "mlp"), zero=True)(nn.silu(c)), 2, axis=-1)
        h = modulate(nn.LayerNorm(use_bias=False, use_scale=False, epsilon=1e-6)(x), shift, scale)
        return dense(self.out_dim, "out", ("embed", "patch"), zero=True)(h)


class CrossAttention(nn.Module):
    """Multi-head cross-attention: queries from ``x (B, N, dim)``, keys and values from
    ``context (B, M, Dc)``; ``mask (B, M)`` bool, True = attend (a key-padding mask).

    Runs through :func:`sharded_attention` (so :func:`pallas_kernels.attention`: Pallas on GPU/TPU,
    XLA on CPU). A query whose keys are all masked gets 0 (the kernel's convention), so the
    residual branch is then the identity. Returns ``(B, N, dim)``.
    """

    dim: int
    heads: int
    qk_norm: bool = False
    implementation: str | None = None
    block_sizes: BlockSizes | None = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, context, *, mask=None):
        b, n, _ = x.shape
        m = context.shape[1]
        if self.dim % self.heads:
            raise ValueError(f"`dim` ({self.dim}) must be divisible by `heads` ({self.heads}).")
        hd = self.dim // self.heads
        q = dense(self.dim, "q", ("embed", "qkv"), dtype=self.dtype)(x).reshape(b, n, self.heads, hd)
        k = dense(self.dim, "k", ("embed", "qkv"), dtype=self.dtype)(context).reshape(b, m, self.heads, hd)
        v = dense(self.dim, "v", ("embed", "qkv"), dtype=self.dtype)(context).reshape(b, m, self.heads, hd)
        if self.qk_norm:
            q = nn.RMSNorm(name="q_norm", dtype=self.dtype)(q)
            k = nn.RMSNorm(name="k_norm", dtype=self.dtype)(k)
        amask = None if mask is None else jnp.asarray(mask, bool)[:, None, None, :]
        o = sharded_attention(q, k, v, mask=amask, implementation=self.implementation, block_sizes=self.block_sizes)
        return dense(self.dim, "proj", ("qkv", "embed"), dtype=self.dtype)(o.reshape(b, n, self.dim))


class SwiGLU(nn.Module):
    """SwiGLU feed-forward ``W3 (silu(W1 x) * W2 x)`` (Shazeer 2020, arXiv:2002.05202) with hidden width
    ``int(2/3 * mlp_ratio * dim)`` (the usual parameter-matched width, as in LLaMA/DDT)."""

    dim: int
    mlp_ratio: float = 4.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        hidden = max(1, int(self.dim * self.mlp_ratio * 2 / 3))
        h = dense(2 * hidden, "w12", ("embed", "mlp"), dtype=self.dtype)(x)
        h1, h2 = jnp.split(h, 2, axis=-1)
        return dense(self.dim, "w3", ("mlp", "embed"), dtype=self.dtype)(nn.silu(h1) * h2)
