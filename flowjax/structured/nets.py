"""Small conditional velocity nets for the structured-generation toys (ours).

The papers use heavier backbones (FMPose3D: GCN+attention per joint; PUFM++: RIN; SCOOP: SetConv).
At toy scale we use:

- :class:`ConditionalMLP`: ``[flatten(x), flatten(c), emb(t)]`` → MLP, for poses (x = 3D pose,
  c = 2D keypoints) and actions (x = action, c = dynamics regime). Same width for the regression
  baseline (called with ``x = 0, t = 0``).
- :class:`PointNetField`: per-point MLP with a max-pooled global context and FiLM time
  conditioning (a PointNet-style stand-in for the point transformer, which another helper writes in
  ``flowjax/nets``), for point-cloud velocity fields ``(n_points, 3)``.
"""

from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax.numpy as jnp
from jaxtyping import Array

from flowjax.nets import timestep_embedding


class ConditionalMLP(nn.Module):
    """``v(x, t, c)``: MLP on ``[x, c, emb(t)]`` with the time/condition re-injected at every layer."""

    hidden: int = 256
    depth: int = 3
    time_dim: int = 64
    activation: Callable[[Array], Array] = nn.gelu

    @nn.compact
    def __call__(self, x: Array, t: Array, c: Array | None = None) -> Array:
        n = x.shape[0]
        t = jnp.broadcast_to(jnp.asarray(t, x.dtype), (n,))
        temb = nn.silu(nn.Dense(self.time_dim, name="t_proj")(timestep_embedding(t, self.time_dim)))
        ctx = temb if c is None else jnp.concatenate([temb, c.reshape(n, -1).astype(x.dtype)], -1)
        h = x.reshape(n, -1)
        for i in range(self.depth):
            h = self.activation(nn.Dense(self.hidden, name=f"dense_{i}")(jnp.concatenate([h, ctx], -1)))
        return nn.Dense(x[0].size, name="out")(h).reshape(x.shape)


class PointNetField(nn.Module):
    """Velocity of a point cloud ``x (B, n, 3)`` at time ``t (B,)``.

    Per-point MLP (width ``width``) → max-pool → global feature; each point sees
    ``[local, global]``; time enters by FiLM (scale, shift) at every block. ``blocks`` rounds of
    (per-point MLP, pool, concat). Output ``(B, n, 3)``, last layer zero-initialised.
    """

    width: int = 64
    blocks: int = 2
    time_dim: int = 32

    @nn.compact
    def __call__(self, x: Array, t: Array, c: Array | None = None) -> Array:
        b = x.shape[0]
        t = jnp.broadcast_to(jnp.asarray(t, x.dtype), (b,))
        temb = nn.silu(nn.Dense(self.time_dim)(timestep_embedding(t, self.time_dim)))
        h = x if c is None else jnp.concatenate([x, c.astype(x.dtype)], -1)
        h = nn.gelu(nn.Dense(self.width)(h))
        for i in range(self.blocks):
            g = jnp.max(h, axis=1, keepdims=True)
            h = jnp.concatenate([h, jnp.broadcast_to(g, h.shape)], -1)
            h = nn.Dense(self.width)(h)
            film = nn.Dense(2 * self.width)(temb)[:, None, :]
            scale, shift = jnp.split(film, 2, axis=-1)
            h = nn.gelu(nn.LayerNorm()(h) * (1.0 + scale) + shift)
            h = h + nn.gelu(nn.Dense(self.width)(h))
        return nn.Dense(x.shape[-1], kernel_init=nn.initializers.zeros)(h)


class AFMNet(nn.Module):
    """Action Flow Matching velocity ``v(a_t, t, c=z)`` (spec action-fm.md §3.3, read from the official code).

    Action encoder MLP(``[t, a_t]`` → 64 → 64), dynamics-regime encoder MLP(``z`` → 64 → 64), flow
    head MLP(128 → 128 → 64 → ``|a|``) on their concatenation, ELU activations throughout. Time
    enters raw (no sinusoidal embedding), as in the code.
    """

    width: int = 64

    @nn.compact
    def __call__(self, x: Array, t: Array, c: Array | None = None) -> Array:
        if c is None:
            raise ValueError("AFMNet needs the dynamics-regime condition c=z of shape (n, d_z).")
        n = x.shape[0]
        t = jnp.broadcast_to(jnp.asarray(t, x.dtype), (n,))
        h_a = jnp.concatenate([t[:, None], x], -1)
        h_z = c.reshape(n, -1).astype(x.dtype)
        for i in range(2):
            h_a = nn.elu(nn.Dense(self.width, name=f"action_{i}")(h_a))
            h_z = nn.elu(nn.Dense(self.width, name=f"dynamics_{i}")(h_z))
        h = jnp.concatenate([h_a, h_z], -1)
        h = nn.elu(nn.Dense(2 * self.width, name="flow_0")(h))
        h = nn.elu(nn.Dense(self.width, name="flow_1")(h))
        return nn.Dense(x.shape[-1], name="out")(h)


__all__ = ["AFMNet", "ConditionalMLP", "PointNetField"]
