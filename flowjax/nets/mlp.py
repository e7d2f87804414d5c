"""MLP velocity / average-velocity network for low-dimensional data (and flattened images).

Used through a pure apply: ``net.apply(params, x, t)`` for a velocity field ``v(x, t)``, or
``net.apply(params, x, s, t)`` for an average velocity ``u(x, s, t)`` when ``two_times=True``.
Class conditioning adds a learned label embedding; the extra index ``num_classes`` is the null
label used for classifier-free guidance (see :func:`drop_labels`).
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from jaxtyping import Array

from flowjax.nets.embeddings import TIME_SCALE, pair_time_embedding, timestep_embedding
from flowjax.nets.init import init_variables


def drop_labels(key: Array, labels: Array, p: float, null_label: int) -> Array:
    """Replace each label by ``null_label`` with probability ``p`` (CFG label dropout)."""
    drop = jax.random.uniform(key, labels.shape) < p
    return jnp.where(drop, null_label, labels)


class TimeEmbedding(nn.Module):
    """Embed ``t`` (or ``(s, t)``) to a vector of width ``dim``.

    For two times, the first time's embedding is ``Dense(sin(t))`` and the second's (``s`` or
    ``t - s``, per ``time_mode``) goes through its own dense layer, optionally zero-initialised so
    that at initialisation the network equals a one-time network (SnapFlow-style).
    """

    dim: int
    time_mode: str = "st"
    zero_init_second: bool = False
    scale: float = TIME_SCALE

    @nn.compact
    def __call__(self, t: Array, s: Array | None = None) -> Array:
        emb = nn.Dense(self.dim, name="t_proj")(timestep_embedding(t, self.dim, scale=self.scale))
        if s is not None:
            second = s if self.time_mode == "st" else t - s
            init = nn.initializers.zeros if self.zero_init_second else nn.linear.default_kernel_init
            emb = emb + nn.Dense(self.dim, kernel_init=init, name="second_time_proj")(timestep_embedding(second, self.dim, scale=self.scale))
        return nn.silu(emb)


def condition_embedding(module: nn.Module, x: Array, times: tuple[Array, ...], c: Array | None) -> Array:
    """Time (and label) embedding shared by the velocity nets; call inside a compact ``__call__``.

    ``module`` must have ``two_times``, ``time_dim``, ``time_mode``, ``zero_init_second_time`` and
    ``num_classes``. Returns ``(n, time_dim)``; submodules are registered on ``module``
    (``TimeEmbedding_0`` and ``label_emb``).
    """
    expected = 2 if module.two_times else 1
    if len(times) != expected:
        raise ValueError(f"{type(module).__name__}(two_times={module.two_times}) takes {expected} time argument(s), got {len(times)}.")
    if module.time_mode not in ("st", "t_dt"):
        raise ValueError(f"`time_mode` must be 'st' or 't_dt', got {module.time_mode!r}.")
    n = x.shape[0]
    t = jnp.broadcast_to(jnp.asarray(times[-1], x.dtype), (n,))
    s = jnp.broadcast_to(jnp.asarray(times[0], x.dtype), (n,)) if module.two_times else None
    scale = getattr(module, "time_scale", TIME_SCALE)
    emb = TimeEmbedding(module.time_dim, module.time_mode, module.zero_init_second_time, scale)(t, s)
    if module.num_classes > 0:
        if c is None:
            c = jnp.full((n,), module.num_classes, jnp.int32)
        emb = emb + nn.Embed(module.num_classes + 1, module.time_dim, name="label_emb")(c)
    return emb


class MLP(nn.Module):
    """``[x, emb(t)] -> depth x (Dense(hidden) + act) -> Dense(d)``, time re-injected at every layer.

    Attributes:
      hidden: width of hidden layers.
      depth: number of hidden layers.
      time_dim: width of the time embedding.
      two_times: if True the call is ``(x, s, t)`` and the model is an average velocity.
      time_mode: ``"st"`` embeds ``s`` and ``t``; ``"t_dt"`` embeds ``t`` and ``t - s`` (MeanFlow).
      zero_init_second_time: zero-initialise the second time embedding.
      num_classes: 0 for unconditional; otherwise labels in ``[0, num_classes]`` where
        ``num_classes`` is the null label.
      activation: hidden activation (default SiLU).
      time_scale: ``t`` is multiplied by this before the sinusoids (default 1000, see
        :func:`flowjax.nets.embeddings.timestep_embedding`).
    """

    hidden: int = 256
    depth: int = 3
    time_dim: int = 64
    two_times: bool = False
    time_mode: str = "st"
    zero_init_second_time: bool = False
    num_classes: int = 0
    activation: Callable[[Array], Array] = nn.silu
    out_dim: int | None = None
    time_scale: float = TIME_SCALE

    @nn.compact
    def __call__(self, x: Array, *times: Array, c: Array | None = None) -> Array:
        n = x.shape[0]
        temb = condition_embedding(self, x, times, c)
        h = x.reshape(n, -1)
        out_dim = self.out_dim or h.shape[1]
        for i in range(self.depth):
            h = jnp.concatenate([h, temb.astype(h.dtype)], axis=-1)
            h = self.activation(nn.Dense(self.hidden, name=f"dense_{i}")(h))
        out = nn.Dense(out_dim, name="out")(h)
        return out.reshape(x.shape) if out_dim == x[0].size else out


def init_params(module: nn.Module, key: Array, x_example: Array, *, c: Array | None = None) -> Any:
    """Initialise a velocity net from an example batch (one time, or two for ``two_times``)."""
    n = x_example.shape[0]
    t = jnp.zeros((n,), x_example.dtype)
    times = (t, t) if getattr(module, "two_times", False) else (t,)
    kwargs = {} if c is None else {"c": c}
    return init_variables(module, key, x_example, *times, **kwargs)


def count_params(params: Any) -> int:
    return int(sum(x.size for x in jax.tree.leaves(params)))
