"""ArcFlow student network for vectors: the MLP trunk plus momentum-mixture heads (2602.09014).

The trunk mirrors :class:`flowjax.nets.MLP` layer for layer (same parameter names), so a
teacher MLP's parameters initialise it; the heads replace the output layer (spec ``arcflow.md``
§3.1, from the official Qwen heads):

- ``means``: ``K`` component velocities; initialised by replicating the teacher's output layer
  ``K`` times (+ bias noise, std 0.05 in the code) so that at init every component is the
  teacher's velocity;
- ``logits``: one mixture logit per component, zero-initialised (uniform mixture);
- ``log_rates``: ``K - 1`` rates (``g_1 = 0``), zero kernel, bias ``log(gamma_k)`` with ``gamma_k``
  log-spaced in ``[0.2, 4.0]``.

For 2D/vector data one logit and one rate per sample are shared across coordinates (the code's
"one per latent pixel, shared across channels").
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array

from flowjax.losses.arcflow import ArcPolicy
from flowjax.nets.mlp import TimeEmbedding


def default_log_rates(k: int, gamma_min: float = 0.2, gamma_max: float = 4.0) -> np.ndarray:
    """``log(gamma_k)`` for the ``K - 1`` free components, log-spaced in ``[gamma_min, gamma_max]``."""
    if k < 2:
        return np.zeros((0,))
    return np.linspace(np.log(gamma_min), np.log(gamma_max), k - 1)


class ArcFlowMLP(nn.Module):
    """``apply(params, x, t) -> ArcPolicy`` with ``K`` momentum components (``t`` is the step start)."""

    hidden: int = 256
    depth: int = 3
    time_dim: int = 64
    num_components: int = 4
    gamma_min: float = 0.2
    gamma_max: float = 4.0
    activation: Callable[[Array], Array] = nn.silu

    @nn.compact
    def __call__(self, x: Array, t: Array) -> ArcPolicy:
        n = x.shape[0]
        t = jnp.broadcast_to(jnp.asarray(t, x.dtype), (n,))
        temb = TimeEmbedding(self.time_dim)(t)
        h = x.reshape(n, -1)
        d = h.shape[1]
        for i in range(self.depth):
            h = jnp.concatenate([h, temb.astype(h.dtype)], axis=-1)
            h = self.activation(nn.Dense(self.hidden, name=f"dense_{i}")(h))
        k = self.num_components
        means = nn.Dense(k * d, name="means")(h).reshape((n, k) + x.shape[1:])
        logits = nn.Dense(k, kernel_init=nn.initializers.zeros, name="logits")(h)
        rates0 = jnp.asarray(default_log_rates(k, self.gamma_min, self.gamma_max), h.dtype)
        free = nn.Dense(k - 1, kernel_init=nn.initializers.zeros, bias_init=lambda *_: rates0, name="log_rates")(h) if k > 1 else jnp.zeros((n, 0), h.dtype)
        rates = jnp.concatenate([jnp.zeros((n, 1), h.dtype), free], axis=1)
        extra = (1,) * (x.ndim - 1)
        return ArcPolicy(means, logits.reshape((n, k) + extra), rates.reshape((n, k) + extra), t)


def init_arcflow_from_teacher(arc_params: Any, teacher_params: Any, *, key: Array | None = None, noise_std: float = 0.05) -> Any:
    """Copy the teacher MLP's trunk into ``arc_params`` and replicate its output layer into ``means``.

    With ``noise_std = 0`` the student's velocity at the step start equals the teacher's exactly.
    """
    arc = jax.tree.map(lambda a: a, arc_params)
    src, dst = teacher_params["params"], dict(arc["params"])
    for name, value in src.items():
        if name == "out":
            continue
        if name not in dst:
            raise ValueError(f"teacher layer {name!r} has no counterpart in the ArcFlow trunk.")
        dst[name] = value
    k_times_d = dst["means"]["kernel"].shape[1]
    d = src["out"]["kernel"].shape[1]
    k = k_times_d // d
    kernel = jnp.tile(src["out"]["kernel"], (1, k))
    bias = jnp.tile(src["out"]["bias"], (k,))
    if noise_std > 0:
        if key is None:
            raise ValueError("`key` is required when noise_std > 0.")
        bias = bias + noise_std * jax.random.normal(key, bias.shape, bias.dtype)
    dst["means"] = {"kernel": kernel, "bias": bias}
    return {**arc, "params": dst}


__all__ = ["ArcFlowMLP", "default_log_rates", "init_arcflow_from_teacher"]
