"""Fused interval rollout of an MLP average-velocity field: K flow-map steps in one kernel.

The few-step hot loop (flow-map sampling, multi-split consistency targets of SplitMeanFlow /
progressive self-distillation / shortcut models) is

    x <- x + (t_{k+1} - t_k) u_theta(x, t_k, t_{k+1}),   k = 0, ..., K - 1,

with ``u_theta`` the :class:`flowjax.nets.MLP` (``two_times=True``). Unfused, XLA runs K x depth
small matmuls with the activations and the weights going through HBM at every step. The kernel
keeps the weights of the whole MLP and one batch tile of ``x`` on chip and loops over the K steps
and the layers inside, writing only the final state.

The time conditioning of the MLP is an additive per-layer bias: layer ``l`` computes
``act([h, e_k] @ W_l + b_l) = act(h @ W_l[:in] + (e_k @ W_l[in:] + b_l))`` where ``e_k`` is the time
(+ label) embedding of step k, which does not depend on ``x``. The wrapper precomputes these
biases ``B[k, l] = e_k @ W_l[in:] + b_l`` with XLA (shape ``(K, L, 1, H)`` for a shared time grid,
``(K, L, n, H)`` for per-sample grids or labels); the kernel only sees ``h @ W + B[k, l]``.

Forward only: the consistency targets that use it are stop-gradient and sampling needs no
gradient. Layout follows the project's kernel contract (DESIGN.md): a pure-jnp reference
(:func:`rollout_reference`, which re-implements the MLP apply directly from the Flax parameters),
a :class:`BlockSizes` dataclass, an ``implementation=None | "pallas" | "interpret" | "xla"`` switch
(``None``: Pallas on GPU/TPU, XLA elsewhere) and interpret-mode tests on CPU.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jaxtyping import Array, ArrayLike

from flowjax.nets.embeddings import timestep_embedding

IMPLEMENTATIONS = (None, "pallas", "interpret", "xla")
ACTIVATIONS = {"silu": jax.nn.silu, "gelu": jax.nn.gelu, "relu": jax.nn.relu, "tanh": jnp.tanh}


@dataclasses.dataclass(frozen=True)
class BlockSizes:
    """Batch rows per kernel program (the batch is padded up to a multiple of it)."""

    batch: int = 128


@dataclasses.dataclass(frozen=True)
class MLPSpec:
    """The static facts about the :class:`flowjax.nets.MLP` that the rollout needs."""

    time_dim: int
    time_mode: str = "st"
    activation: str = "silu"

    @classmethod
    def from_net(cls, net: Any) -> "MLPSpec":
        act = next((name for name, fn in ACTIVATIONS.items() if fn is net.activation), None)
        if act is None:
            raise ValueError(f"unsupported MLP activation {net.activation!r}; supported: {tuple(ACTIVATIONS)}.")
        if not getattr(net, "two_times", False):
            raise ValueError("the rollout needs an average-velocity MLP (two_times=True).")
        return cls(time_dim=net.time_dim, time_mode=net.time_mode, activation=act)


def _layers(params: Any) -> tuple[list[tuple[Array, Array]], tuple[Array, Array], dict]:
    p = params["params"] if "params" in params else params
    depth = sum(1 for k in p if k.startswith("dense_"))
    dense = [(p[f"dense_{i}"]["kernel"], p[f"dense_{i}"]["bias"]) for i in range(depth)]
    return dense, (p["out"]["kernel"], p["out"]["bias"]), p


def time_embedding(params: Any, spec: MLPSpec, s: Array, t: Array, c: Array | None = None) -> Array:
    """The MLP's embedding of ``(s, t)`` (and label ``c``): ``silu(Dense(sin(t)) + Dense(sin(second)))``."""
    _, _, p = _layers(params)
    te = p["TimeEmbedding_0"]
    emb = timestep_embedding(t, spec.time_dim) @ te["t_proj"]["kernel"] + te["t_proj"]["bias"][None]
    second = s if spec.time_mode == "st" else t - s
    emb = emb + timestep_embedding(second, spec.time_dim) @ te["second_time_proj"]["kernel"] + te["second_time_proj"]["bias"][None]
    emb = jax.nn.silu(emb)
    if "label_emb" in p:
        table = p["label_emb"]["embedding"]
        if c is None:  # the MLP's default: the null label (last row)
            c = jnp.full(emb.shape[:1], table.shape[0] - 1, jnp.int32)
        emb = emb + table[c]
    return emb


def mlp_average_velocity(params: Any, spec: MLPSpec, x: Array, s: Array, t: Array, c: Array | None = None) -> Array:
    """``u(x, s, t)`` of the MLP, written directly in jnp from its parameters (2D ``x``)."""
    dense, (w_out, b_out), _ = _layers(params)
    n = x.shape[0]
    s = jnp.broadcast_to(jnp.asarray(s, x.dtype), (n,))
    t = jnp.broadcast_to(jnp.asarray(t, x.dtype), (n,))
    temb = time_embedding(params, spec, s, t, c).astype(x.dtype)
    act = ACTIVATIONS[spec.activation]
    h = x
    for w, b in dense:
        h = act(jnp.concatenate([h, temb], axis=-1) @ w + b[None])
    return h @ w_out + b_out[None]


def _grid(times: ArrayLike, n: int, dtype) -> Array:
    g = jnp.asarray(times, dtype)
    return g[:, None] if g.ndim == 1 else g  # (K+1, 1) shared or (K+1, n) per sample


def rollout_reference(params: Any, spec: MLPSpec, x0: Array, times: ArrayLike, c: Array | None = None) -> Array:
    """Pure-jnp reference: a Python loop of K flow-map steps of :func:`mlp_average_velocity`."""
    g = _grid(times, x0.shape[0], x0.dtype)
    x = x0
    for k in range(g.shape[0] - 1):
        s, t = g[k], g[k + 1]
        s_n, t_n = jnp.broadcast_to(s, (x.shape[0],)), jnp.broadcast_to(t, (x.shape[0],))
        x = x + (t_n - s_n)[:, None] * mlp_average_velocity(params, spec, x, s_n, t_n, c)
    return x


def _step_biases(params: Any, spec: MLPSpec, x0: Array, times: ArrayLike, c: Array | None):
    """Per-step, per-layer additive biases ``(K, L, m, H)`` and step sizes ``(K, m, 1)`` (m = 1 or n)."""
    dense, _, _ = _layers(params)
    g = _grid(times, x0.shape[0], x0.dtype)
    per_sample = g.shape[1] > 1 or c is not None
    m = x0.shape[0] if per_sample else 1
    g = jnp.broadcast_to(g, (g.shape[0], m))

    def one_step(s, t):
        temb = time_embedding(params, spec, s, t, c).astype(x0.dtype)  # (m, time_dim)
        temb = jnp.broadcast_to(temb, (m, temb.shape[-1]))
        return jnp.stack([temb @ w[w.shape[0] - temb.shape[1]:] + b[None] for w, b in dense])  # (L, m, H)

    biases = jax.vmap(one_step)(g[:-1], g[1:])  # (K, L, m, H)
    dts = (g[1:] - g[:-1])[..., None]  # (K, m, 1)
    return biases, dts, per_sample


def _rollout_kernel(x_ref, w0_ref, wr_ref, bias_ref, dt_ref, wo_ref, bo_ref, o_ref, *, num_steps, depth, act):
    w0 = w0_ref[...]
    wo = wo_ref[...]
    bo = bo_ref[...]

    def step(k, x):
        h = act(jnp.dot(x, w0, preferred_element_type=jnp.float32).astype(x.dtype) + bias_ref[k, 0])
        for l in range(1, depth):
            h = act(jnp.dot(h, wr_ref[l - 1], preferred_element_type=jnp.float32).astype(x.dtype) + bias_ref[k, l])
        u = jnp.dot(h, wo, preferred_element_type=jnp.float32).astype(x.dtype) + bo
        return x + dt_ref[k] * u

    o_ref[...] = jax.lax.fori_loop(0, num_steps, step, x_ref[...])


def _rollout_pallas(params, spec, x0, times, c, block_sizes: BlockSizes, interpret: bool) -> Array:
    dense, (w_out, b_out), _ = _layers(params)
    n, d = x0.shape
    depth = len(dense)
    hidden = dense[0][0].shape[1]
    biases, dts, per_sample = _step_biases(params, spec, x0, times, c)
    num_steps = biases.shape[0]
    tile = min(block_sizes.batch, max(8, pl.next_power_of_2(n)))
    n_pad = pl.cdiv(n, tile) * tile
    x = jnp.pad(x0, ((0, n_pad - n), (0, 0)))
    if per_sample:
        biases = jnp.pad(biases, ((0, 0), (0, 0), (0, n_pad - n), (0, 0)))
        dts = jnp.pad(dts, ((0, 0), (0, n_pad - n), (0, 0)))
    w0 = dense[0][0][:d].astype(x0.dtype)
    w_rest = (jnp.stack([w[:hidden] for w, _ in dense[1:]]) if depth > 1 else jnp.zeros((1, hidden, hidden))).astype(x0.dtype)
    bo = b_out.reshape(1, d).astype(x0.dtype)
    m_block = tile if per_sample else 1
    row = (lambda i: (0, 0, i, 0)) if per_sample else (lambda i: (0, 0, 0, 0))
    dt_row = (lambda i: (0, i, 0)) if per_sample else (lambda i: (0, 0, 0))
    kernel = functools.partial(_rollout_kernel, num_steps=num_steps, depth=depth, act=ACTIVATIONS[spec.activation])
    out = pl.pallas_call(
        kernel,
        out_shape=jax.ShapeDtypeStruct((n_pad, d), x0.dtype),
        grid=(n_pad // tile,),
        in_specs=[
            pl.BlockSpec((tile, d), lambda i: (i, 0)),
            pl.BlockSpec(w0.shape, lambda i: (0, 0)),
            pl.BlockSpec(w_rest.shape, lambda i: (0, 0, 0)),
            pl.BlockSpec((num_steps, depth, m_block, hidden), row),
            pl.BlockSpec((num_steps, m_block, 1), dt_row),
            pl.BlockSpec(w_out.shape, lambda i: (0, 0)),
            pl.BlockSpec(bo.shape, lambda i: (0, 0)),
        ],
        out_specs=pl.BlockSpec((tile, d), lambda i: (i, 0)),
        interpret=interpret,
    )(x, w0, w_rest, biases.astype(x0.dtype), dts.astype(x0.dtype), w_out.astype(x0.dtype), bo)
    return out[:n]


def _rollout_xla(params, spec, x0, times, c) -> Array:
    """The unfused XLA path: the same precomputed biases, a ``lax.scan`` over the K steps."""
    dense, (w_out, b_out), _ = _layers(params)
    d = x0.shape[1]
    hidden = dense[0][0].shape[1]
    biases, dts, _ = _step_biases(params, spec, x0, times, c)
    act = ACTIVATIONS[spec.activation]
    ws = [dense[0][0][:d]] + [w[:hidden] for w, _ in dense[1:]]

    def step(x, inputs):
        bias, dt = inputs
        h = x
        for l, w in enumerate(ws):
            h = act(h @ w + bias[l])
        return x + dt * (h @ w_out + b_out[None]), None

    return jax.lax.scan(step, x0, (biases, dts))[0]


def default_implementation() -> str:
    return "pallas" if jax.default_backend() in ("gpu", "tpu") else "xla"


def rollout(
    params: Any,
    spec: MLPSpec,
    x0: Array,
    times: ArrayLike,
    *,
    c: Array | None = None,
    implementation: str | None = None,
    block_sizes: BlockSizes = BlockSizes(),
) -> Array:
    """K fused flow-map steps of an MLP average velocity (forward only).

    Args:
      params: the :class:`flowjax.nets.MLP` parameters (``two_times=True``).
      spec: :class:`MLPSpec` (``MLPSpec.from_net(net)``).
      x0: ``(n, d)`` start points (flattened features).
      times: grid ``(K+1,)`` shared or ``(K+1, n)`` per sample, either direction.
      c: integer labels ``(n,)`` for a class-conditional MLP.
      implementation: ``None`` (Pallas on GPU/TPU, XLA elsewhere), ``"pallas"``, ``"interpret"``
        (Pallas interpreter; CPU tests) or ``"xla"`` (unfused scan).
      block_sizes: :class:`BlockSizes`.

    Returns:
      ``x_K`` of shape ``(n, d)``; equals :func:`flowjax.samplers.flowmap` of the same MLP.
    """
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"`implementation` must be one of {IMPLEMENTATIONS}, got {implementation!r}.")
    if x0.ndim != 2:
        raise ValueError(f"`x0` must have shape (n, d), got {tuple(x0.shape)}.")
    g = jnp.asarray(times)
    if g.ndim not in (1, 2) or g.shape[0] < 2 or (g.ndim == 2 and g.shape[1] != x0.shape[0]):
        raise ValueError(f"`times` must have shape (K+1,) or (K+1, n) with K >= 1, got {tuple(g.shape)}.")
    impl = implementation or default_implementation()
    if impl == "xla":
        return _rollout_xla(params, spec, x0, times, c)
    return _rollout_pallas(params, spec, x0, times, c, block_sizes, interpret=(impl == "interpret"))


__all__ = [
    "BlockSizes",
    "IMPLEMENTATIONS",
    "MLPSpec",
    "default_implementation",
    "mlp_average_velocity",
    "rollout",
    "rollout_reference",
    "time_embedding",
]
