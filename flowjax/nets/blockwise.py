"""MLP versions of the Blockwise Flow Matching networks (arXiv 2510.21167; spec blockwise-fm.md 5).

The paper's networks are transformers (SiT/REPA-based, spec 3.1); these are the toy-scale MLP
analogues the spec's CPU experiment prescribes (ours):

* :class:`ConditionalMLP`: ``[x, emb(t), emb(y)] -> depth x Dense(width)+SiLU -> Dense(out)`` with
  ``emb(t)`` 32 sinusoidal (Fourier) features and ``emb(y)`` a 32-d learned table (null label =
  ``num_classes``). Used as the single-network baseline and as the FRA network ``F_psi``.
* :class:`BlockwiseMLP`: a shared semantic feature MLP ``R`` on ``[x, emb(t), emb(y)]`` giving
  ``r``; K segment stacks on ``[x, emb(t), emb(y), r]`` (token-wise concatenation of the code's
  ``c_r``, reduced to one token); a projection head ``h_phi(r)`` for the alignment loss. Calling
  it routes each sample to the stack of its segment ``k(t) = min(floor(t K), K - 1)``.

MAC counts (``macs``) are the dense layers' multiply-accumulates per sample (embeddings free).
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp
from jaxtyping import Array

from flowjax.nets.embeddings import timestep_embedding


def _dense_stack_macs(in_dim: int, width: int, depth: int, out_dim: int) -> int:
    dims = [in_dim] + [width] * depth + [out_dim]
    return int(sum(a * b for a, b in zip(dims[:-1], dims[1:])))


class _Stack(nn.Module):
    width: int
    depth: int
    out_dim: int
    zero_out: bool = False

    @nn.compact
    def __call__(self, h: Array) -> Array:
        for i in range(self.depth):
            h = nn.silu(nn.Dense(self.width, name=f"dense_{i}")(h))
        init = nn.initializers.zeros if self.zero_out else nn.linear.default_kernel_init
        return nn.Dense(self.out_dim, kernel_init=init, name="out")(h)


class _Embed(nn.Module):
    emb_dim: int
    num_classes: int

    @nn.compact
    def __call__(self, x: Array, t: Array, c: Array | None) -> Array:
        n = x.shape[0]
        t = jnp.broadcast_to(jnp.asarray(t, x.dtype), (n,))
        parts = [x.reshape(n, -1), timestep_embedding(t, self.emb_dim).astype(x.dtype)]
        if self.num_classes > 0:
            if c is None:
                c = jnp.full((n,), self.num_classes, jnp.int32)
            parts.append(nn.Embed(self.num_classes + 1, self.emb_dim, name="label")(c).astype(x.dtype))
        return jnp.concatenate(parts, axis=-1)


class ConditionalMLP(nn.Module):
    """``[x, emb(t), emb(y)] -> MLP -> out_dim`` (default: the data dimension, reshaped like x)."""

    width: int = 256
    depth: int = 6
    emb_dim: int = 32
    num_classes: int = 0
    out_dim: int | None = None
    zero_out: bool = False

    @nn.compact
    def __call__(self, x: Array, t: Array, c: Array | None = None) -> Array:
        h = _Embed(self.emb_dim, self.num_classes, name="embed")(x, t, c)
        d = x[0].size
        out = _Stack(self.width, self.depth, self.out_dim or d, self.zero_out, name="mlp")(h)
        return out.reshape(x.shape) if self.out_dim in (None, d) else out

    def macs(self, data_dim: int) -> int:
        in_dim = data_dim + self.emb_dim * (2 if self.num_classes > 0 else 1)
        return _dense_stack_macs(in_dim, self.width, self.depth, self.out_dim or data_dim)


class BlockwiseMLP(nn.Module):
    """K segment velocity stacks sharing a semantic feature MLP (BFM's architecture, MLP form).

    Methods (through ``apply(..., method=...)``): ``features(x, t, c) -> r``,
    ``velocity(x, t, r, c, segment=k) -> v`` (stack k only), ``project(r) -> h``, and
    ``__call__(x, t, c) -> (v, h)`` (per-sample routing by ``k(t)``; all stacks are evaluated and
    the right one selected, so other stacks get exactly zero gradient). ``data_dim`` is the
    flattened data dimension; ``proj_depth`` counts the head's hidden layers.
    """

    data_dim: int
    num_segments: int = 4
    feature_width: int = 256
    feature_depth: int = 4
    feature_dim: int = 128
    stack_width: int = 128
    stack_depth: int = 2
    emb_dim: int = 32
    num_classes: int = 0
    proj_width: int = 128
    proj_depth: int = 1
    proj_dim: int = 64

    def setup(self):
        self.embed = _Embed(self.emb_dim, self.num_classes)
        self.feature_net = _Stack(self.feature_width, self.feature_depth, self.feature_dim)
        self.stacks = [_Stack(self.stack_width, self.stack_depth, self.data_dim) for _ in range(self.num_segments)]
        self.head = _Stack(self.proj_width, self.proj_depth, self.proj_dim)

    def features(self, x: Array, t: Array, c: Array | None = None) -> Array:
        return self.feature_net(self.embed(x, t, c))

    def project(self, r: Array) -> Array:
        return self.head(r)

    def velocity(self, x: Array, t: Array, r: Array, c: Array | None = None, *, segment: int) -> Array:
        h = jnp.concatenate([self.embed(x, t, c), r.astype(x.dtype)], axis=-1)
        return self.stacks[segment](h).reshape(x.shape)

    def __call__(self, x: Array, t: Array, c: Array | None = None) -> tuple[Array, Array]:
        n = x.shape[0]
        t = jnp.broadcast_to(jnp.asarray(t, x.dtype), (n,))
        r = self.features(x, t, c)
        k = jnp.minimum(jnp.floor(t * self.num_segments), self.num_segments - 1).astype(jnp.int32)
        v = jnp.zeros_like(x)
        for j in range(self.num_segments):
            vj = self.velocity(x, t, r, c, segment=j)
            mask = (k == j).reshape((n,) + (1,) * (x.ndim - 1))
            v = jnp.where(mask, vj, v)
        return v, self.project(r)

    def macs(self) -> dict[str, int]:
        data_dim = self.data_dim
        emb = self.emb_dim * (2 if self.num_classes > 0 else 1)
        feature = _dense_stack_macs(data_dim + emb, self.feature_width, self.feature_depth, self.feature_dim)
        stack = _dense_stack_macs(data_dim + emb + self.feature_dim, self.stack_width, self.stack_depth, data_dim)
        return {"feature": feature, "stack": stack, "per_nfe": feature + stack}


__all__ = ["BlockwiseMLP", "ConditionalMLP"]
