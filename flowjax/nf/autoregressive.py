"""Autoregressive transformer normalizing flows: TarFlow, STARFlow and STARFlow-V.

Papers: TarFlow (Zhai et al., arXiv:2412.06329), STARFlow (Gu et al., arXiv:2506.06276) and
STARFlow-V (Gu et al., arXiv:2511.20462). Spec: ``shared/papers/starflow-v.md``. The full texts
were not available to us; the numerics follow the official code (apple/ml-tarflow,
apple/ml-starflow) as summarised in the spec, which we read but did not copy.

A normalizing flow is a discrete invertible map, not an ODE. Project notation: the forward map
``f`` goes data -> noise (``X_{1,0}``) and sampling is ``f^{-1}`` (``X_{0,1}``); the prior is
``x0 = z ~ N(0, I)``. Data are token sequences ``x (B, N, C)`` ordered (frame, row, col) for video:
``N = F * S`` tokens, ``S`` tokens per frame.

One affine autoregressive (AF) block (paper, TarFlow eq. for MAF-style blocks; STARFlow scale)::

    forward   z_i = (x_i - b_i(x_<i)) / a_i(x_<i)          logdet = -sum_i sum_c log a_ic
    inverse   x_i = b_i(x_<i) + a_i(x_<i) * z_i

``(b, a)`` come from a causal transformer (:class:`flowjax.nets.CausalTransformer`, token causal)
reading ``[sos, x_1, ..., x_{N-1}]`` (a learned start token, STARFlow's choice; so token 1 is
transformed too). Scale: ``a = softplus(kappa tanh(r_a / kappa) + softplus^{-1}(1))`` (STARFlow code,
``soft_clip`` kappa = 4) or ``a = exp(r_a)`` (TarFlow). The transformer's output layer is zero
initialised, so every block starts as the identity.

Blocks carry a *scope* and an *order*:

- ``scope="global"``: the whole sequence is one autoregression (TarFlow's blocks; STARFlow-V's deep
  block, which is therefore causal over frames);
- ``scope="frame"``: each frame is its own sequence of ``S`` tokens (STARFlow-V's "local" shallow
  blocks; no cross-frame dependencies);
- ``flip=True`` reverses the token order (within the frame for frame-scoped blocks). TarFlow
  alternates identity / flip; STARFlow-V's shallow blocks alternate identity / in-frame flip and
  its deep block keeps the time order.

Sampling inverts each block either sequentially (``N`` single-token transformer calls with a KV
cache) or by block-wise Jacobi fixed-point iteration (:func:`af_block_inverse`), STARFlow-V's
"video-aware Jacobi": chunks of tokens solved in turn, each by parallel iterations
``x^{(k+1)} = F(x^{(k)})`` with ``F_i(x) = b_i(x_<i) + a_i(x_<i) z_i``, a relative convergence test
``mean((x_new - x_old)^2) / mean(x_new^2) < tol``, an iteration cap, a KV cache that commits only the
converged chunk (rolling back is not committing), and an initial guess taken from the same spatial
positions one frame earlier. Because ``F`` is strictly lower triangular, after ``k`` iterations the
first ``k`` tokens of a chunk are exact, whatever the guess: with ``max_iter >= chunk length`` and
``tol = 0`` the result equals the sequential inverse.

What is the papers' and what is ours:

- Paper/code: the AF block and its log-det, SOS vs. shift, softplus scale with soft clip and
  zero init, alternating permutations, the global-local split, the Jacobi chunking, the relative
  residual test and ``tol``/``max_iter`` defaults (1e-3 README, 32), the previous-frame initial
  guess.
- Ours: the frozen-dataclass + pure-function layout, one chunk size throughout by default (the code
  uses 4x larger chunks after the first frame; :func:`af_block_inverse` takes explicit
  ``chunk_sizes``), the first input of a chunk taken from the already solved token (the code reads
  the whole input window from the previous frame), the per-chunk iteration counts returned for
  reporting, and a batch-global convergence flag (the code reduces "done" over devices too).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Float

from flowjax import _checks
from flowjax.nets.causal_transformer import CausalTransformer, init_kv_cache

__all__ = [
    "INV_SOFTPLUS_1",
    "AFBlockSpec",
    "ARFlow",
    "tarflow",
    "starflow_v",
    "init_flow",
    "affine_params",
    "af_block_forward",
    "af_block_inverse",
    "flow_forward",
    "flow_inverse",
    "flow_log_prob",
    "flow_sample",
    "noise_level_to_time",
]

#: ``softplus^{-1}(1) = log(e - 1)``: the offset that makes ``a = 1`` at zero raw output (STARFlow code).
INV_SOFTPLUS_1 = math.log(math.e - 1.0)


@dataclasses.dataclass(frozen=True)
class AFBlockSpec:
    """One AF block: ``scope`` ("global" | "frame"), ``flip`` (reverse order), transformer ``depth``."""

    scope: Literal["global", "frame"] = "global"
    flip: bool = False
    depth: int = 2


@dataclasses.dataclass(frozen=True)
class ARFlow:
    """A stack of AF blocks (data -> noise order) over ``num_frames * tokens_per_frame`` tokens of width ``channels``.

    Attributes:
      channels: token width ``C`` (e.g. ``p*p*c`` for ``p x p`` patches).
      tokens_per_frame: ``S`` (use ``num_tokens`` with ``num_frames=1`` for images).
      num_frames: ``F``.
      blocks: :class:`AFBlockSpec` per block, in the forward (data -> noise) order. In STARFlow(-V)
        the deep block is the last one (next to the prior).
      dim, heads, mlp_ratio: transformer width (shared by the blocks).
      scale: "softplus" (STARFlow, ``a = softplus(r + softplus^{-1}(1))``) or "exp" (TarFlow).
      soft_clip: ``kappa`` of ``r <- kappa tanh(r / kappa)`` on the raw scale (STARFlow code: 4;
        None disables).
    """

    channels: int
    tokens_per_frame: int
    num_frames: int = 1
    blocks: tuple[AFBlockSpec, ...] = (AFBlockSpec(),)
    dim: int = 64
    heads: int = 4
    mlp_ratio: float = 4.0
    scale: Literal["softplus", "exp"] = "softplus"
    soft_clip: float | None = 4.0

    def __post_init__(self):
        _checks.check_positive_int("channels", self.channels)
        _checks.check_positive_int("tokens_per_frame", self.tokens_per_frame)
        _checks.check_positive_int("num_frames", self.num_frames)
        _checks.check_choice("scale", self.scale, ("softplus", "exp"))
        if not self.blocks:
            raise ValueError("`blocks` must hold at least one AFBlockSpec, got an empty tuple.")
        for i, b in enumerate(self.blocks):
            _checks.check_choice(f"blocks[{i}].scope", b.scope, ("global", "frame"))
            _checks.check_positive_int(f"blocks[{i}].depth", b.depth)

    @property
    def num_tokens(self) -> int:
        return self.num_frames * self.tokens_per_frame

    @property
    def dim_total(self) -> int:
        """``D = N * C``."""
        return self.num_tokens * self.channels

    def net(self, i: int) -> CausalTransformer:
        """The causal transformer of block ``i`` (token causal, zero-initialised output ``(b, r_a)``)."""
        return CausalTransformer(
            dim=self.dim, depth=self.blocks[i].depth, heads=self.heads, mlp_ratio=self.mlp_ratio,
            out_dim=2 * self.channels, frame_size=1,
        )


def tarflow(channels: int, num_tokens: int, *, num_blocks: int = 4, depth: int = 2, dim: int = 64, heads: int = 4,
            scale: Literal["softplus", "exp"] = "exp", soft_clip: float | None = None) -> ARFlow:
    """TarFlow (arXiv:2412.06329): ``num_blocks`` global blocks of equal depth, alternating identity / reversed order.

    Paper defaults (ImageNet 64): 8 blocks x 8 layers, width 768, patch 2, ``a = exp(alpha)``; small here.
    """
    blocks = tuple(AFBlockSpec("global", flip=bool(k % 2), depth=depth) for k in range(num_blocks))
    return ARFlow(channels, num_tokens, 1, blocks, dim=dim, heads=heads, scale=scale, soft_clip=soft_clip)


def starflow_v(channels: int, tokens_per_frame: int, num_frames: int, *, shallow_blocks: int = 3, shallow_depth: int = 1,
               deep_depth: int = 4, dim: int = 64, heads: int = 4, local: bool = True, soft_clip: float | None = 4.0) -> ARFlow:
    """STARFlow-V's global-local stack (arXiv:2511.20462; code ``shallow_block_local=1``).

    ``shallow_blocks`` shallow blocks next to the data (frame-scoped when ``local``, alternating
    identity / in-frame flip), then one deep global block in time order next to the prior. The
    paper's model has 5 shallow blocks of 2 layers and a 24-layer deep block (width 3072/4096);
    the spec's CPU toy uses 3 x 1 layer + 4 layers, width 64 (our defaults). ``local=False`` gives
    the spec's section-5 baseline: shallow blocks causal over the whole video (flip = full reversal).
    """
    scope = "frame" if local else "global"
    blocks = tuple(AFBlockSpec(scope, flip=bool(k % 2), depth=shallow_depth) for k in range(shallow_blocks))
    blocks = blocks + (AFBlockSpec("global", flip=False, depth=deep_depth),)
    return ARFlow(channels, tokens_per_frame, num_frames, blocks, dim=dim, heads=heads, scale="softplus",
                  soft_clip=soft_clip)


def init_flow(flow: ARFlow, key: Array) -> list[dict]:
    """Parameters: one ``{"sos": (C,), "net": flax variables (unboxed)}`` per block (output layer zero, so ``f = id``)."""
    keys = jax.random.split(key, len(flow.blocks))
    params = []
    for i, k in enumerate(keys):
        k_net, k_sos = jax.random.split(k)
        length = flow.tokens_per_frame if flow.blocks[i].scope == "frame" else flow.num_tokens
        x = jnp.zeros((1, length, flow.channels), jnp.float32)
        params.append({"sos": 0.02 * jax.random.normal(k_sos, (flow.channels,), jnp.float32),
                       "net": nn.meta.unbox(flow.net(i).init(k_net, x))})
    return params


# -- one block ---------------------------------------------------------------------------------

def affine_params(flow: ARFlow, raw: Float[Array, "... 2C"]) -> tuple[Array, Array]:
    """``(b, log a)`` from the transformer's raw output (STARFlow code: soft clip, softplus offset)."""
    rb, ra = jnp.split(raw.astype(jnp.float32), 2, axis=-1)
    if flow.soft_clip is not None:
        ra = flow.soft_clip * jnp.tanh(ra / flow.soft_clip)
    if flow.scale == "softplus":
        log_a = jnp.log(jax.nn.softplus(ra + INV_SOFTPLUS_1))
    else:
        log_a = ra
    return rb, log_a


def _to_block_order(flow: ARFlow, i: int, x: Array) -> Array:
    """``(B, N, C)`` -> the block's sequences: ``(B, N, C)`` (global) or ``(B*F, S, C)`` (frame), permuted."""
    spec = flow.blocks[i]
    if spec.scope == "frame":
        b = x.shape[0]
        x = x.reshape(b * flow.num_frames, flow.tokens_per_frame, flow.channels)
    return _reverse_tokens(x) if spec.flip else x


def _reverse_tokens(x: Array) -> Array:
    # A gather, not lax.rev: XLA:CPU's algebraic simplifier aborts on some rev(...) patterns in the
    # Jacobi while-loops ("Invalid binary instruction opcode map", jaxlib 0.10).
    return jnp.take(x, jnp.arange(x.shape[1] - 1, -1, -1), axis=1)


def _from_block_order(flow: ARFlow, i: int, y: Array, batch: int) -> Array:
    spec = flow.blocks[i]
    if spec.flip:
        y = _reverse_tokens(y)
    return y.reshape(batch, flow.num_tokens, flow.channels)


def _shifted(sos: Array, x: Array) -> Array:
    """Teacher-forced inputs ``[sos, x_1, ..., x_{L-1}]``."""
    s = jnp.broadcast_to(sos.astype(x.dtype)[None, None], (x.shape[0], 1, x.shape[-1]))
    return jnp.concatenate([s, x[:, :-1]], axis=1)


def af_block_forward(flow: ARFlow, i: int, p: dict, x: Float[Array, "B N C"]) -> tuple[Array, Array]:
    """Block ``i`` forward ``z = (x - b) / a`` (teacher forced, one transformer pass); returns ``(z, logdet (B,))``."""
    batch = x.shape[0]
    xs = _to_block_order(flow, i, x)
    raw = flow.net(i).apply(p["net"], _shifted(p["sos"], xs))
    b, log_a = affine_params(flow, raw)
    zs = (xs - b) * jnp.exp(-log_a)
    logdet = -jnp.sum(log_a.reshape(batch, -1), axis=-1)  # per-frame sequences summed back per video
    return _from_block_order(flow, i, zs.astype(x.dtype), batch), logdet


def _chunks(length: int, chunk_sizes: int | Sequence[int] | None) -> list[tuple[int, int]]:
    if chunk_sizes is None:
        chunk_sizes = length
    if isinstance(chunk_sizes, int):
        _checks.check_positive_int("chunk_size", chunk_sizes)
        sizes = [chunk_sizes] * (length // chunk_sizes) + ([length % chunk_sizes] if length % chunk_sizes else [])
    else:
        sizes = [int(c) for c in chunk_sizes]
        if any(c <= 0 for c in sizes) or sum(sizes) != length:
            raise ValueError(f"`chunk_sizes` must be positive and sum to the sequence length {length}, got {sizes}.")
    out, s = [], 0
    for c in sizes:
        out.append((s, s + c))
        s += c
    return out


def af_block_inverse(
    flow: ARFlow,
    i: int,
    p: dict,
    z: Float[Array, "B N C"],
    *,
    method: Literal["sequential", "jacobi"] = "sequential",
    chunk_sizes: int | Sequence[int] | None = None,
    tol: float = 1e-3,
    max_iter: int = 32,
    video_init: bool = True,
) -> tuple[Array, Array]:
    """Invert block ``i``: ``x_i = b_i(x_<i) + a_i(x_<i) z_i``.

    ``method="sequential"``: one single-token transformer call per position (KV cache), ``L`` calls
    (``L = N`` global, ``S`` frame-scoped; frames run in parallel as a batch).

    ``method="jacobi"`` (STARFlow-V's block-wise Jacobi, see the module docstring): the sequence is
    split into chunks (``chunk_sizes``: an int or explicit sizes; default one chunk); each chunk is
    iterated with the cached solved prefix until ``r = mean((x_new - x_old)^2)/mean(x_new^2) < tol``
    or ``max_iter`` iterations (``tol=0``: always ``max_iter``); only the final pass's keys/values
    are committed to the cache. ``video_init`` (global blocks, chunk start ``>= S``): the initial
    guess for a chunk is the solved tokens one frame earlier (same spatial positions), else ``z``.

    ``tol``, ``max_iter`` and ``video_init`` may be traced values (one compilation serves several
    settings); ``chunk_sizes`` and ``method`` are static.

    Returns ``(x (B, N, C), iterations (num_chunks,) int32)``: transformer calls per chunk
    (``L`` ones for sequential).
    """
    _checks.check_choice("method", method, ("sequential", "jacobi"))
    batch = z.shape[0]
    net = flow.net(i)
    zs = _to_block_order(flow, i, z).astype(jnp.float32)
    bsz, length, c = zs.shape
    sos = jnp.broadcast_to(p["sos"].astype(jnp.float32)[None, None], (bsz, 1, c))
    cache = init_kv_cache(net, batch=bsz, max_len=length)

    if method == "sequential":
        def step(j, carry):
            x, cache, prev = carry
            raw, cache = net.apply(p["net"], prev, cache=cache)
            b, log_a = affine_params(flow, raw)
            xj = b + jnp.exp(log_a) * lax.dynamic_slice_in_dim(zs, j, 1, axis=1)
            return lax.dynamic_update_slice_in_dim(x, xj, j, axis=1), cache, xj

        x, _, _ = lax.fori_loop(0, length, step, (jnp.zeros_like(zs), cache, sos))
        iters = jnp.full((1,), length, jnp.int32)
        return _from_block_order(flow, i, x.astype(z.dtype), batch), iters

    if isinstance(max_iter, int) and max_iter < 1:
        raise ValueError(f"`max_iter` must be >= 1, got {max_iter}.")
    if isinstance(tol, (int, float)) and tol < 0:
        raise ValueError(f"`tol` must be >= 0, got {tol}.")
    frame = flow.tokens_per_frame
    # tol, max_iter and video_init may be traced (one compilation for several settings)
    use_video = flow.blocks[i].scope == "global" and flow.num_frames > 1
    x = jnp.zeros_like(zs)
    iters = []
    for s, e in _chunks(length, chunk_sizes):
        z_c = zs[:, s:e]
        guess = jnp.where(jnp.asarray(video_init), x[:, s - frame:e - frame], z_c) if (use_video and s >= frame) else z_c
        first = sos if s == 0 else x[:, s - 1:s]

        def body(state, z_c=z_c, first=first, cache=cache):
            k, x_old, _, _ = state
            inp = jnp.concatenate([first, x_old[:, :-1]], axis=1)
            raw, new_cache = net.apply(p["net"], inp, cache=cache)  # cache length s: prefix only (rollback = not committing)
            b, log_a = affine_params(flow, raw)
            x_new = b + jnp.exp(log_a) * z_c
            r = jnp.mean((x_new - x_old) ** 2) / jnp.maximum(jnp.mean(x_new**2), 1e-30)
            return k + 1, x_new, new_cache, r

        def cond(state):
            k, _, _, r = state
            return (k < max_iter) & ((k == 0) | (r >= tol))

        dummy_cache = {"layers": cache["layers"], "length": jnp.asarray(e, jnp.int32)}
        k, x_c, cache, _ = lax.while_loop(cond, body, (jnp.zeros((), jnp.int32), guess, dummy_cache, jnp.asarray(jnp.inf, jnp.float32)))
        x = x.at[:, s:e].set(x_c)
        iters.append(k)
    return _from_block_order(flow, i, x.astype(z.dtype), batch), jnp.stack(iters)


# -- the stack ---------------------------------------------------------------------------------

def _check_tokens(flow: ARFlow, name: str, x: Any) -> None:
    _checks.check_float_array(name, x, ndim=3)
    if tuple(x.shape[1:]) != (flow.num_tokens, flow.channels):
        raise ValueError(f"`{name}` must have shape (B, {flow.num_tokens}, {flow.channels}), got {tuple(x.shape)}.")


def flow_forward(flow: ARFlow, params: list[dict], x: Float[Array, "B N C"], *, return_intermediates: bool = False):
    """``z = f_T o ... o f_1(x)`` and ``sum_k log|det df_k|`` per sample ``(B,)``.

    With ``return_intermediates`` also the list of block outputs (for STARFlow's latent-norm term).
    """
    _check_tokens(flow, "x", x)
    logdet = jnp.zeros((x.shape[0],), jnp.float32)
    h, hs = x, []
    for i, p in enumerate(params):
        h, ld = af_block_forward(flow, i, p, h)
        logdet = logdet + ld
        hs.append(h)
    return (h, logdet, hs) if return_intermediates else (h, logdet)


def flow_log_prob(flow: ARFlow, params: list[dict], x: Float[Array, "B N C"]) -> Float[Array, " B"]:
    """Exact ``log p(x) = -||z||^2/2 - (D/2) log 2 pi + sum_k log|det df_k|`` (change of variables)."""
    z, logdet = flow_forward(flow, params, x)
    d = flow.dim_total
    return -0.5 * jnp.sum(z.reshape(z.shape[0], -1).astype(jnp.float32) ** 2, axis=-1) - 0.5 * d * math.log(2 * math.pi) + logdet


def flow_inverse(
    flow: ARFlow,
    params: list[dict],
    z: Float[Array, "B N C"],
    *,
    method: Literal["sequential", "jacobi"] = "sequential",
    shallow_method: Literal["sequential", "jacobi"] | None = None,
    chunk_sizes: int | Sequence[int] | None = None,
    tol: float = 1e-3,
    max_iter: int = 32,
    video_init: bool = True,
) -> tuple[Array, dict]:
    """``x = f_1^{-1} o ... o f_T^{-1}(z)``.

    ``method`` inverts the global blocks (the deep block); ``shallow_method`` (default: ``method``)
    the frame-scoped blocks, whose Jacobi uses one chunk per frame (frames in parallel).
    ``chunk_sizes``, ``tol``, ``max_iter``, ``video_init``: see :func:`af_block_inverse` (global blocks).

    Returns ``(x, info)``, ``info = {"iterations": [per-block (num_chunks,) arrays], "calls": total
    sequential transformer calls (int32), "calls_global": calls of the global blocks}``.
    """
    _check_tokens(flow, "z", z)
    shallow_method = shallow_method or method
    h, its = z, [None] * len(params)
    for i in reversed(range(len(params))):
        if flow.blocks[i].scope == "frame":
            h, it = af_block_inverse(flow, i, params[i], h, method=shallow_method, tol=tol, max_iter=max_iter)
        else:
            h, it = af_block_inverse(flow, i, params[i], h, method=method, chunk_sizes=chunk_sizes, tol=tol,
                                     max_iter=max_iter, video_init=video_init)
        its[i] = it
    calls = sum(jnp.sum(it) for it in its)
    calls_global = sum((jnp.sum(it) for it, b in zip(its, flow.blocks) if b.scope == "global"), jnp.zeros((), jnp.int32))
    return h, {"iterations": its, "calls": calls, "calls_global": calls_global}


def flow_sample(flow: ARFlow, params: list[dict], key: Array, n: int, *, temperature: float = 1.0, **inverse_kwargs) -> tuple[Array, dict]:
    """``x = f^{-1}(z)``, ``z ~ N(0, temperature^2 I)`` (noisy samples ``x~``; denoise with :mod:`flowjax.nf.denoise`)."""
    z = temperature * jax.random.normal(key, (n, flow.num_tokens, flow.channels), jnp.float32)
    return flow_inverse(flow, params, z, **inverse_kwargs)


def noise_level_to_time(sigma: float | Array) -> Array:
    """``t_sigma = 1/(1+sigma)`` (derived, spec 3.0): ``x~ = x + sigma eps`` equals ``x_t / t`` on the linear path with
    ``x0 = eps``, ``x1 = x``; so ``E[eps | x~] = E[x0 | x_t]``."""
    return 1.0 / (1.0 + jnp.asarray(sigma))
