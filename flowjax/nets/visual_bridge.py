"""Visual Bridge networks: multi-scale circular task embedding and a token MLP-Mixer velocity field.

Gao et al., "Visual Bridge: Universal Visual Perception Representations Generating", arXiv 2511.07877
(spec ``visual-bridge.md``). The paper's (from its abstract and summaries; the full text was not
retrieved): ONE velocity field, conditioned on time, scale and task through a "multi-scale, circular
task embedding", carries foundation-model patch tokens to task-specific representations.

Ours / derived (spec section 3.2-3.3, not from the paper): task ``k`` of ``K`` sits on a circle at
``phi_k = 2 pi k / K`` and is embedded by multi-frequency features
``[cos(m phi_k), sin(m phi_k)]_{m=1..M}`` followed by an MLP (so the embedding is periodic in ``k``
with period ``K``); the ``scale`` embedding is a sinusoidal embedding of a scale index (token-grid
level); ``emb(t) + e_task + e_scale`` is added to every token after the input projection; the
backbone is a small MLP-Mixer (token-mixing and channel-mixing MLPs with LayerNorm and residuals).
A learned table (``task_embedding="table"``) is provided so the choice can be ablated.

Each example's output depends only on that example (no batch statistics), so mixed-task batches
give the same per-example outputs as single-task batches.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
from jaxtyping import Array

from flowjax._checks import check_choice, check_positive_int
from flowjax.nets.embeddings import timestep_embedding

__all__ = ["circular_task_features", "TaskEmbedding", "BridgeMixer"]


def circular_task_features(task: Array, num_tasks: int, *, frequencies: int = 4) -> Array:
    """``[cos(m phi), sin(m phi)]_{m=1..M}`` with ``phi = 2 pi task / num_tasks``; shape ``(B, 2M)``.

    Periodic in ``task`` with period ``num_tasks``. With ``M >= 1`` and ``K >= 2`` distinct tasks in
    ``[0, K)`` get distinct features (the ``m = 1`` pair alone is injective on the circle).
    """
    check_positive_int("num_tasks", num_tasks)
    check_positive_int("frequencies", frequencies)
    phi = 2.0 * jnp.pi * jnp.asarray(task, jnp.float32) / num_tasks
    m = jnp.arange(1, frequencies + 1, dtype=jnp.float32)
    ang = phi[:, None] * m[None, :]
    return jnp.concatenate([jnp.cos(ang), jnp.sin(ang)], axis=-1)


class TaskEmbedding(nn.Module):
    """Task embedding ``e_task(k)``: ``"circular"`` (MLP of :func:`circular_task_features`) or ``"table"`` (learned)."""

    dim: int
    num_tasks: int
    kind: str = "circular"
    frequencies: int = 4

    @nn.compact
    def __call__(self, task: Array) -> Array:
        check_choice("kind", self.kind, ("circular", "table"))
        if self.kind == "table":
            return nn.Embed(self.num_tasks, self.dim)(jnp.asarray(task, jnp.int32))
        h = circular_task_features(task, self.num_tasks, frequencies=self.frequencies)
        return nn.Dense(self.dim)(nn.silu(nn.Dense(self.dim)(h)))


class BridgeMixer(nn.Module):
    """MLP-Mixer velocity ``v(x, t, c=task)`` on token sets ``x (B, N, d)``; output like ``x``.

    Attributes:
      dim: token width after the input projection.
      blocks: number of mixer blocks (spec: 2).
      token_hidden, channel_hidden: hidden widths of the token- and channel-mixing MLPs.
      num_tasks: K (1 = single-task / specialist).
      task_embedding: ``"circular"`` (derived; default) or ``"table"``.
      frequencies: M, the number of circular frequencies.
      use_time: False gives the deterministic regressor ``x0 -> x1`` (same architecture, no t).
      scale_levels: >0 adds a sinusoidal embedding of an integer ``scale`` argument (multi-scale targets).
    """

    dim: int = 64
    blocks: int = 2
    token_hidden: int = 64
    channel_hidden: int = 128
    num_tasks: int = 1
    task_embedding: str = "circular"
    frequencies: int = 4
    use_time: bool = True
    scale_levels: int = 0

    @nn.compact
    def __call__(self, x: Array, t: Array | None = None, *, c: Array | None = None, scale: Array | None = None) -> Array:
        if x.ndim != 3:
            raise ValueError(f"`x` must be tokens of shape (B, N, d), got {x.shape}.")
        b, n, d = x.shape
        h = nn.Dense(self.dim, name="in_proj")(x)
        cond = jnp.zeros((b, self.dim), h.dtype)
        if self.use_time:
            if t is None:
                raise ValueError("`t` is required when use_time=True.")
            tt = jnp.broadcast_to(jnp.asarray(t, h.dtype), (b,))
            cond = cond + nn.Dense(self.dim, name="time_out")(nn.silu(nn.Dense(self.dim, name="time_in")(timestep_embedding(tt, 64))))
        if self.num_tasks > 1:
            if c is None:
                raise ValueError(f"`c` (task ids in [0, {self.num_tasks})) is required when num_tasks > 1.")
            cond = cond + TaskEmbedding(self.dim, self.num_tasks, self.task_embedding, self.frequencies, name="task")(c)
        if self.scale_levels > 0:
            s = jnp.zeros((b,), h.dtype) if scale is None else jnp.broadcast_to(jnp.asarray(scale, h.dtype), (b,))
            cond = cond + nn.Dense(self.dim, name="scale_out")(timestep_embedding(s / self.scale_levels, 32))
        h = h + cond[:, None, :]  # emb(t) + e_task + e_scale added to every token (derived, spec 3.2)
        for i in range(self.blocks):
            y = nn.LayerNorm(name=f"ln_tok_{i}")(h).transpose(0, 2, 1)  # (B, dim, N): mix across tokens
            y = nn.Dense(n, name=f"tok_out_{i}")(nn.gelu(nn.Dense(self.token_hidden, name=f"tok_in_{i}")(y)))
            h = h + y.transpose(0, 2, 1)
            y = nn.LayerNorm(name=f"ln_ch_{i}")(h)
            h = h + nn.Dense(self.dim, name=f"ch_out_{i}")(nn.gelu(nn.Dense(self.channel_hidden, name=f"ch_in_{i}")(y)))
        return nn.Dense(d, name="out_proj")(nn.LayerNorm(name="ln_out")(h))
