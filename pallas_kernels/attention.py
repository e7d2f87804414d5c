"""Fused attention in Pallas with reverse mode *and* forward mode (JVP).

Flash attention (Dao et al. 2022, arXiv:2205.14135; FlashAttention-2, Dao 2023, arXiv:2307.08691):
the forward pass streams KV tiles through an online softmax with float32 statistics and saves the
row log-sum-exp; the backward pass recomputes the probabilities from the log-sum-exp, with separate
dK/dV and dQ passes. That part is the papers'.

Ours: a forward-mode path. Every fused attention we know of (Pallas flash/splash, cuDNN, tokamax,
PyTorch SDPA) is a ``custom_vjp``, so ``jax.jvp`` through it fails and MeanFlow-type losses
(Geng et al. 2025, arXiv:2505.13447; flow maps, Boffi et al. 2025, arXiv:2505.18825) fall back to
slow unfused attention. Here ``attention`` is a ``custom_jvp`` whose tangent comes from a Pallas
kernel, and whose *transpose* is the flash backward, so one function serves ``jax.jvp``,
``jax.grad`` and ``jax.grad`` of a loss that contains a ``jax.jvp`` (MeanFlow).

Math, per batch element and head, with ``S = scale * Q K^T``, allowed set ``A`` (mask, causal,
KV routing), ``P = softmax_A(S)``, ``O = P V`` and ``lse_i = log sum_{j in A_i} exp(S_ij)``:

- tangent:   ``dS = scale (dQ K^T + Q dK^T)``, ``mu_i = sum_j P_ij dS_ij``,
             ``dO = (P o dS) V - mu o O + P dV``  (``o`` = elementwise product).
  The tangent kernel recomputes ``P_ij = exp(S_ij - lse_i)`` tile by tile from the saved
  log-sum-exp, so it needs no online rescaling and never forms a seq x seq array.
- transpose (= backward): ``dV = P^T G``, ``dP = G V^T``, ``Delta_i = rowsum(G o O) - g_lse_i``,
  ``dS = P o (dP - Delta)``, ``dQ = scale dS K``, ``dK = scale dS^T Q``.

Structure (why it composes): ``attention`` is a ``custom_jvp``. Its JVP rule returns the primal
from a ``custom_vjp`` (flash forward, flash backward) and the tangent from
``jax.custom_derivatives.linear_call(tangent_kernel, backward_kernels)``: the tangent is linear in
``(dQ, dK, dV)`` and its transpose is the flash backward. So ``jax.grad`` (linearise, transpose)
runs the forward and backward kernels; ``jax.jvp`` runs the forward and tangent kernels; the
gradient of a loss through the primal of a ``jax.jvp`` runs all of them. Second derivatives
*through the tangent* (a gradient that flows into a JVP output that is not stop-gradiented, or a
Hessian) are correct but use the unfused jnp reference for that term (seq x seq memory).

Why two kernels for ``jax.jvp`` (flash forward, then the tangent pass) rather than one kernel that
carries the tangent through the online softmax: reverse mode needs the primal to be computable
without the tangent inputs (JAX linearises by splitting known primal work from unknown tangent
work), so a fused (O, dO) kernel could not serve ``jax.grad`` or a MeanFlow gradient. The cost is
one extra ``Q K^T`` per tile and a second read of Q, K, V (7 vs 6 tile matmuls).

Backends: ``"pallas"`` on GPU lowers through Triton (``pallas.triton.CompilerParams`` is passed
explicitly, since JAX >= 0.7 defaults GPU Pallas to Mosaic GPU); the Pallas -> Triton lowering of
all four kernels is checked on CPU by cross-lowering for CUDA (tests), but PTX compilation and
speed need a GPU (``benchmarks/gpu_check.sh``). On TPU (Mosaic) the arrays are transposed to
``[batch, heads, seq, head_dim]``; the block shapes pass Pallas' TPU checks, but the kernels have
not been compiled on a TPU, and they keep one head's full K/V in VMEM (moderate lengths only).

Conventions: layout ``[batch, seq, heads, head_dim]``; GQA/MQA when the KV heads divide the
query heads; causal masking is top-left aligned like ``jax.nn.dot_product_attention`` (query ``i``
sees keys ``j <= i + q_offset``); a query row with no allowed key returns 0 (and gradient 0).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.custom_derivatives import SymbolicZero, linear_call
from jax.experimental import pallas as pl

try:  # Triton-specific compiler params (GPU). jax>=0.7 defaults GPU Pallas to Mosaic GPU.
    from jax.experimental.pallas import triton as _pl_triton
except Exception:  # pragma: no cover - absent on some builds
    _pl_triton = None

__all__ = [
    "BlockSizes",
    "attention",
    "attention_reference",
    "default_implementation",
    "IMPLEMENTATIONS",
]

IMPLEMENTATIONS = ("pallas", "interpret", "xla")

# Large finite negative logit for masked entries: exp(NEG - m) underflows to 0 without the
# inf - inf = nan of a -inf fill.
_NEG = -0.7 * float(np.finfo(np.float32).max)


# ----------------------------------------------------------------------------------------------
# Block sizes
# ----------------------------------------------------------------------------------------------


def _is_pow2(n: int) -> bool:
    return isinstance(n, int) and n >= 1 and (n & (n - 1)) == 0


@dataclasses.dataclass(frozen=True)
class BlockSizes:
    """Tile sizes of the four kernels (powers of two, >= 16 for the tensor-core dots).

    Attributes:
      block_q, block_k: query / KV tile of the forward kernel.
      block_q_dkv, block_k_dkv: tiles of the dK/dV backward kernel (grid over KV tiles).
      block_q_dq, block_k_dq: tiles of the dQ backward kernel (grid over query tiles).
      block_q_jvp, block_k_jvp: tiles of the tangent (forward-mode) kernel.
      num_warps: Triton warps per program (``None``: 4 for head_dim <= 64, else 8).
      num_stages: Triton software-pipelining stages.

    Use :meth:`get_default` for per-backend defaults; tiles larger than the (padded) sequence are
    shrunk automatically.
    """

    block_q: int = 128
    block_k: int = 64
    block_q_dkv: int = 64
    block_k_dkv: int = 64
    block_q_dq: int = 64
    block_k_dq: int = 64
    block_q_jvp: int = 64
    block_k_jvp: int = 64
    num_warps: int | None = None
    num_stages: int = 2

    def __post_init__(self):
        for f in dataclasses.fields(self):
            if f.name.startswith("block_"):
                v = getattr(self, f.name)
                if not _is_pow2(v) or v < 16:
                    raise ValueError(f"`BlockSizes.{f.name}` must be a power of two >= 16, got {v!r}.")
        if self.num_warps is not None and not _is_pow2(self.num_warps):
            raise ValueError(f"`BlockSizes.num_warps` must be a power of two, got {self.num_warps!r}.")
        if not isinstance(self.num_stages, int) or self.num_stages < 1:
            raise ValueError(f"`BlockSizes.num_stages` must be a positive int, got {self.num_stages!r}.")

    @classmethod
    def get_default(cls, backend: str | None = None, *, head_dim: int = 64) -> "BlockSizes":
        """Defaults per backend: ``"gpu"`` (H100-class, Triton), ``"tpu"``, or ``"cpu"`` (interpret)."""
        backend = backend or _backend()
        if backend in ("gpu", "cuda", "rocm"):
            if head_dim <= 64:
                return cls(128, 64, 64, 64, 64, 64, 64, 64, num_warps=4, num_stages=3)
            if head_dim <= 128:
                return cls(128, 64, 64, 64, 64, 64, 64, 32, num_warps=8, num_stages=2)
            return cls(64, 32, 32, 32, 32, 32, 32, 32, num_warps=8, num_stages=1)
        if backend == "tpu":
            return cls(128, 128, 128, 128, 128, 128, 128, 128)
        # CPU: interpret mode is for tests; small tiles exercise the tiling logic.
        return cls(32, 32, 32, 32, 32, 32, 32, 32)


# ----------------------------------------------------------------------------------------------
# Static configuration of one call of the core
# ----------------------------------------------------------------------------------------------


class _Cfg(NamedTuple):
    scale: float
    causal: bool
    kv_len: int  # number of real (unpadded) KV entries; entries >= kv_len are invalid
    has_mask: bool
    has_qpos: bool  # explicit query positions (q_offset, q_positions or KV routing); else arange
    has_kvpos: bool  # explicit KV positions (KV routing; -1 = padding); else arange
    groups: int  # query heads per KV head
    blocks: BlockSizes
    interpret: bool
    layout: str  # "bnhd" (GPU/interpret) or "bhnd" (TPU)
    backend: str


def _dot(a, b, *, trans_a=False, trans_b=False):
    """2-D matmul with float32 accumulation (``pl.dot`` semantics, lowers on Triton)."""
    ca = 0 if trans_a else 1
    cb = 1 if trans_b else 0
    return lax.dot_general(a, b, (((ca,), (cb,)), ((), ())), preferred_element_type=jnp.float32)


def _tile_allowed(cfg: _Cfg, qpos, kpos, mask_tile):
    """Boolean (bq, bk) tile of allowed entries, or None when every entry is allowed."""
    allowed = None

    def _and(a, b):
        return b if a is None else jnp.logical_and(a, b)

    shape = (qpos.shape[0], kpos.shape[1])  # qpos is a (bq, 1) column, kpos a (1, bk) row
    if cfg.has_kvpos:
        allowed = _and(allowed, jnp.broadcast_to(kpos >= 0, shape))
    else:
        allowed = _and(allowed, jnp.broadcast_to(kpos < cfg.kv_len, shape))
    if cfg.causal:
        allowed = _and(allowed, qpos >= kpos)
    if mask_tile is not None:
        allowed = _and(allowed, mask_tile != 0)
    return allowed


def _any(x):
    """Scalar 'any' of a 2-D boolean tile, written with max reductions (Triton has no reduce_or)."""
    xi = x.astype(jnp.int32)
    return jnp.max(jnp.max(xi, axis=1), axis=0) > 0


def _data_dependent(cfg: _Cfg) -> bool:
    return cfg.has_mask or cfg.has_qpos or cfg.has_kvpos


def _kv_loop_bound(cfg: _Cfg, i, bq: int, bk: int, n_kv_blocks: int):
    """Number of KV tiles query tile ``i`` must visit (implicit positions only)."""
    live = pl.cdiv(cfg.kv_len, bk)  # tiles past kv_len hold padding only
    upper = min(n_kv_blocks, live)
    if cfg.causal and not cfg.has_qpos and not cfg.has_kvpos:
        causal_upper = lax.div(jnp.int32(bq) * (i + 1) + jnp.int32(bk - 1), jnp.int32(bk))
        return jnp.minimum(causal_upper, upper)
    return upper


def _maybe_skip(cfg: _Cfg, allowed, compute, carry):
    """Run ``compute(carry)`` only on tiles with an allowed entry when masking is data dependent."""
    if allowed is not None and _data_dependent(cfg):
        return lax.cond(_any(allowed), compute, lambda c: c, carry)
    return compute(carry)


# ----------------------------------------------------------------------------------------------
# Kernels. Every ref and value is 2-D (TPU-friendly): tiles (seq, head_dim), row statistics and
# query positions as (seq, 1) columns, KV positions as (1, seq) rows.
# ----------------------------------------------------------------------------------------------


def _qcol(i, bq: int):
    return i * bq + lax.broadcasted_iota(jnp.int32, (bq, 1), 0)


def _krow(start, bk: int):
    return start + lax.broadcasted_iota(jnp.int32, (1, bk), 1)


def _split_refs(refs, cfg: _Cfg, n_main: int):
    main = list(refs[:n_main])
    rest = list(refs[n_main:])
    mask_ref = rest.pop(0) if cfg.has_mask else None
    qpos_ref = rest.pop(0) if cfg.has_qpos else None
    kvpos_ref = rest.pop(0) if cfg.has_kvpos else None
    return main, mask_ref, qpos_ref, kvpos_ref, rest


def _fwd_kernel(*refs, cfg: _Cfg, bq: int, bk: int):
    (q_ref, k_ref, v_ref), mask_ref, qpos_ref, kvpos_ref, (o_ref, lse_ref) = _split_refs(refs, cfg, 3)
    i = pl.program_id(0)
    n_kv = k_ref.shape[0] // bk
    q = q_ref[...]
    qpos = qpos_ref[...] if cfg.has_qpos else _qcol(i, bq)

    def body(j, carry):
        ks = pl.multiple_of(j * bk, bk)
        kpos = kvpos_ref[:, pl.ds(ks, bk)] if cfg.has_kvpos else _krow(ks, bk)
        mtile = mask_ref[:, pl.ds(ks, bk)] if cfg.has_mask else None
        allowed = _tile_allowed(cfg, qpos, kpos, mtile)

        def compute(carry):
            acc, m_prev, l_prev = carry
            k = k_ref[pl.ds(ks, bk), :]
            v = v_ref[pl.ds(ks, bk), :]
            s = _dot(q, k, trans_b=True) * cfg.scale
            if allowed is not None:
                s = jnp.where(allowed, s, _NEG)
            m_new = jnp.maximum(m_prev, jnp.max(s, axis=1, keepdims=True))
            alpha = jnp.exp(m_prev - m_new)
            p = jnp.exp(s - m_new)
            if allowed is not None:
                p = jnp.where(allowed, p, 0.0)
            l_new = alpha * l_prev + jnp.sum(p, axis=1, keepdims=True)
            acc = alpha * acc + _dot(p.astype(v.dtype), v)
            return acc, m_new, l_new

        return _maybe_skip(cfg, allowed, compute, carry)

    init = (
        jnp.zeros((bq, q.shape[-1]), jnp.float32),
        jnp.full((bq, 1), _NEG, jnp.float32),
        jnp.zeros((bq, 1), jnp.float32),
    )
    acc, m, l = lax.fori_loop(0, _kv_loop_bound(cfg, i, bq, bk, n_kv), body, init)
    has = l > 0.0
    o_ref[...] = (acc / jnp.where(has, l, 1.0)).astype(o_ref.dtype)
    lse_ref[...] = jnp.where(has, m + jnp.log(jnp.where(has, l, 1.0)), jnp.inf)


def _tangent_kernel(*refs, cfg: _Cfg, bq: int, bk: int):
    """dO = (P o dS) V - mu o O + P dV with P recomputed from the saved log-sum-exp."""
    (q_ref, k_ref, v_ref, o_ref, lse_ref, dq_ref, dk_ref, dv_ref), mask_ref, qpos_ref, kvpos_ref, (
        t_ref,
    ) = _split_refs(refs, cfg, 8)
    i = pl.program_id(0)
    n_kv = k_ref.shape[0] // bk
    q = q_ref[...]
    dq = dq_ref[...]
    lse = lse_ref[...]
    qpos = qpos_ref[...] if cfg.has_qpos else _qcol(i, bq)

    def body(j, carry):
        ks = pl.multiple_of(j * bk, bk)
        kpos = kvpos_ref[:, pl.ds(ks, bk)] if cfg.has_kvpos else _krow(ks, bk)
        mtile = mask_ref[:, pl.ds(ks, bk)] if cfg.has_mask else None
        allowed = _tile_allowed(cfg, qpos, kpos, mtile)

        def compute(carry):
            acc, mu = carry
            k = k_ref[pl.ds(ks, bk), :]
            v = v_ref[pl.ds(ks, bk), :]
            dk = dk_ref[pl.ds(ks, bk), :]
            dv = dv_ref[pl.ds(ks, bk), :]
            s = _dot(q, k, trans_b=True) * cfg.scale
            p = jnp.exp(s - lse)
            if allowed is not None:
                p = jnp.where(allowed, p, 0.0)
            ds = (_dot(dq, k, trans_b=True) + _dot(q, dk, trans_b=True)) * cfg.scale
            pds = p * ds
            mu = mu + jnp.sum(pds, axis=1, keepdims=True)
            acc = acc + _dot(pds.astype(v.dtype), v) + _dot(p.astype(dv.dtype), dv)
            return acc, mu

        return _maybe_skip(cfg, allowed, compute, carry)

    init = (jnp.zeros((bq, q.shape[-1]), jnp.float32), jnp.zeros((bq, 1), jnp.float32))
    acc, mu = lax.fori_loop(0, _kv_loop_bound(cfg, i, bq, bk, n_kv), body, init)
    t = acc - mu * o_ref[...].astype(jnp.float32)
    t_ref[...] = t.astype(t_ref.dtype)


def _dq_kernel(*refs, cfg: _Cfg, bq: int, bk: int):
    (q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref), mask_ref, qpos_ref, kvpos_ref, (dq_ref,) = _split_refs(
        refs, cfg, 6
    )
    i = pl.program_id(0)
    n_kv = k_ref.shape[0] // bk
    q = q_ref[...]
    do = do_ref[...]
    lse = lse_ref[...]
    delta = delta_ref[...]
    qpos = qpos_ref[...] if cfg.has_qpos else _qcol(i, bq)

    def body(j, dq):
        ks = pl.multiple_of(j * bk, bk)
        kpos = kvpos_ref[:, pl.ds(ks, bk)] if cfg.has_kvpos else _krow(ks, bk)
        mtile = mask_ref[:, pl.ds(ks, bk)] if cfg.has_mask else None
        allowed = _tile_allowed(cfg, qpos, kpos, mtile)

        def compute(dq):
            k = k_ref[pl.ds(ks, bk), :]
            v = v_ref[pl.ds(ks, bk), :]
            s = _dot(q, k, trans_b=True) * cfg.scale
            p = jnp.exp(s - lse)
            if allowed is not None:
                p = jnp.where(allowed, p, 0.0)
            dp = _dot(do, v, trans_b=True)
            ds = p * (dp - delta)
            return dq + _dot(ds.astype(k.dtype), k)

        return _maybe_skip(cfg, allowed, compute, dq)

    dq = lax.fori_loop(
        0, _kv_loop_bound(cfg, i, bq, bk, n_kv), body, jnp.zeros((bq, q.shape[-1]), jnp.float32)
    )
    dq_ref[...] = (dq * cfg.scale).astype(dq_ref.dtype)


def _dkv_kernel(*refs, cfg: _Cfg, bq: int, bk: int):
    (q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref), mask_ref, qpos_ref, kvpos_ref, (dk_ref, dv_ref) = (
        _split_refs(refs, cfg, 6)
    )
    j = pl.program_id(0)
    n_q = q_ref.shape[0] // bq
    k = k_ref[...]
    v = v_ref[...]
    kpos = kvpos_ref[...] if cfg.has_kvpos else _krow(j * bk, bk)

    def body(i, carry):
        qs = pl.multiple_of(i * bq, bq)
        qpos = qpos_ref[pl.ds(qs, bq), :] if cfg.has_qpos else qs + lax.broadcasted_iota(jnp.int32, (bq, 1), 0)
        mtile = mask_ref[pl.ds(qs, bq), :] if cfg.has_mask else None
        allowed = _tile_allowed(cfg, qpos, kpos, mtile)

        def compute(carry):
            dk, dv = carry
            q = q_ref[pl.ds(qs, bq), :]
            do = do_ref[pl.ds(qs, bq), :]
            lse = lse_ref[pl.ds(qs, bq), :]
            delta = delta_ref[pl.ds(qs, bq), :]
            s = _dot(q, k, trans_b=True) * cfg.scale
            p = jnp.exp(s - lse)
            if allowed is not None:
                p = jnp.where(allowed, p, 0.0)
            dv = dv + _dot(p.astype(do.dtype), do, trans_a=True)
            dp = _dot(do, v, trans_b=True)
            ds = p * (dp - delta)
            dk = dk + _dot(ds.astype(q.dtype), q, trans_a=True)
            return dk, dv

        return _maybe_skip(cfg, allowed, compute, carry)

    if cfg.causal and not cfg.has_qpos and not cfg.has_kvpos:
        lower = lax.div(j * jnp.int32(bk), jnp.int32(bq))  # earlier query tiles see none of this KV tile
    else:
        lower = 0
    zeros = jnp.zeros((bk, k.shape[-1]), jnp.float32)
    dk, dv = lax.fori_loop(lower, n_q, body, (zeros, zeros))
    dk_ref[...] = (dk * cfg.scale).astype(dk_ref.dtype)
    dv_ref[...] = dv.astype(dv_ref.dtype)


# ----------------------------------------------------------------------------------------------
# pallas_call wrappers (arrays are already padded: seq to the tiles, head_dim to a power of two)
# ----------------------------------------------------------------------------------------------


def _seq_spec(cfg: _Cfg, block: int | None, head_of, tile_axis_is_grid0: bool):
    """BlockSpec of a [B, S, H, D] array (or [B, H, S, D] on TPU) seen as a (block, D) tile.

    ``block=None`` means the full sequence. ``head_of`` maps the grid's head index to this array's
    head index (identity for query-shaped arrays, ``h // groups`` for KV-shaped arrays).
    """
    tpu = cfg.layout == "bhnd"

    def index_map(g0, b, h):
        s_idx = g0 if (block is not None and tile_axis_is_grid0) else 0
        hh = head_of(h)
        return (b, hh, s_idx, 0) if tpu else (b, s_idx, hh, 0)

    return index_map, tpu


def _make_spec(cfg: _Cfg, shape, block, head_of, tiled: bool):
    index_map, tpu = _seq_spec(cfg, block, head_of, tiled)
    seq = block if block is not None else (shape[2] if tpu else shape[1])
    d = shape[-1]
    blk = (None, None, seq, d) if tpu else (None, seq, None, d)
    return pl.BlockSpec(blk, index_map)


def _row_spec(block, seq, tiled: bool):
    """BlockSpec of a [B, H, S, 1] float array (lse, delta) seen as a (block, 1) column."""
    if tiled:
        return pl.BlockSpec((None, None, block, 1), lambda g0, b, h: (b, h, g0, 0))
    return pl.BlockSpec((None, None, seq, 1), lambda g0, b, h: (b, h, 0, 0))


def _aux_specs(cfg: _Cfg, aux, bq_tile, bk_tile, n_q, n_kv):
    """BlockSpecs for (mask, qpos, kvpos): ``bq_tile``/``bk_tile`` is the tile size when that axis is
    tiled by the grid (grid axis 0), or None when the kernel sees the full axis."""
    mask, qpos, kvpos = aux
    specs, args = [], []
    if cfg.has_mask:
        bm, hm = mask.shape[0], mask.shape[1]
        qb = bq_tile if bq_tile is not None else n_q
        kb = bk_tile if bk_tile is not None else n_kv

        def mask_map(g0, b, h, _bm=bm, _hm=hm):
            return (
                b if _bm > 1 else 0,
                h if _hm > 1 else 0,
                g0 if bq_tile is not None else 0,
                g0 if bk_tile is not None else 0,
            )

        specs.append(pl.BlockSpec((None, None, qb, kb), mask_map))
        args.append(mask)
    if cfg.has_qpos:
        bqp = qpos.shape[0]
        qb = bq_tile if bq_tile is not None else n_q
        specs.append(
            pl.BlockSpec(
                (None, qb, 1),
                lambda g0, b, h, _b=bqp: (b if _b > 1 else 0, g0 if bq_tile is not None else 0, 0),
            )
        )
        args.append(qpos)
    if cfg.has_kvpos:
        bkp = kvpos.shape[0]
        kb = bk_tile if bk_tile is not None else n_kv
        specs.append(
            pl.BlockSpec(
                (None, 1, kb),
                lambda g0, b, h, _b=bkp: (b if _b > 1 else 0, 0, g0 if bk_tile is not None else 0),
            )
        )
        args.append(kvpos)
    return specs, args


def _compiler_params(cfg: _Cfg, head_dim: int):
    if cfg.interpret or cfg.backend != "gpu" or _pl_triton is None:
        return None
    warps = cfg.blocks.num_warps or (4 if head_dim <= 64 else 8)
    return _pl_triton.CompilerParams(num_warps=warps, num_stages=cfg.blocks.num_stages)


def _dims(cfg: _Cfg, x):
    if cfg.layout == "bhnd":
        b, h, n, d = x.shape
    else:
        b, n, h, d = x.shape
    return b, n, h, d


def _call(kernel, cfg: _Cfg, grid, in_specs, out_specs, out_shape, args, name, head_dim):
    params = _compiler_params(cfg, head_dim)
    kwargs = {} if params is None else {"compiler_params": params}
    return pl.pallas_call(
        kernel,
        grid=grid,
        in_specs=in_specs,
        out_specs=out_specs,
        out_shape=out_shape,
        interpret=cfg.interpret,
        name=name,
        **kwargs,
    )(*args)


def _blocks(cfg: _Cfg, which: str, n: int, m: int):
    b = cfg.blocks
    bq, bk = {
        "fwd": (b.block_q, b.block_k),
        "jvp": (b.block_q_jvp, b.block_k_jvp),
        "dq": (b.block_q_dq, b.block_k_dq),
        "dkv": (b.block_q_dkv, b.block_k_dkv),
    }[which]
    return min(bq, n), min(bk, m)


def _flash_fwd(cfg: _Cfg, q, k, v, aux):
    bsz, n, h, d = _dims(cfg, q)
    m = _dims(cfg, k)[1]
    bq, bk = _blocks(cfg, "fwd", n, m)
    grid = (n // bq, bsz, h)
    g = cfg.groups
    in_specs = [
        _make_spec(cfg, q.shape, bq, lambda hh: hh, True),
        _make_spec(cfg, k.shape, None, lambda hh: hh // g, False),
        _make_spec(cfg, v.shape, None, lambda hh: hh // g, False),
    ]
    a_specs, a_args = _aux_specs(cfg, aux, bq, None, n, m)
    out_specs = [_make_spec(cfg, q.shape, bq, lambda hh: hh, True), _row_spec(bq, n, True)]
    out_shape = [jax.ShapeDtypeStruct(q.shape, q.dtype), jax.ShapeDtypeStruct((bsz, h, n, 1), jnp.float32)]
    o, lse = _call(
        functools.partial(_fwd_kernel, cfg=cfg, bq=bq, bk=bk),
        cfg, grid, in_specs + a_specs, out_specs, out_shape, [q, k, v, *a_args], "flash_fwd", d,
    )
    return o, lse


def _flash_tangent(cfg: _Cfg, q, k, v, aux, o, lse, dq, dk, dv):
    bsz, n, h, d = _dims(cfg, q)
    m = _dims(cfg, k)[1]
    bq, bk = _blocks(cfg, "jvp", n, m)
    grid = (n // bq, bsz, h)
    g = cfg.groups
    qspec = _make_spec(cfg, q.shape, bq, lambda hh: hh, True)
    kspec = _make_spec(cfg, k.shape, None, lambda hh: hh // g, False)
    in_specs = [qspec, kspec, kspec, qspec, _row_spec(bq, n, True), qspec, kspec, kspec]
    a_specs, a_args = _aux_specs(cfg, aux, bq, None, n, m)
    (t,) = _call(
        functools.partial(_tangent_kernel, cfg=cfg, bq=bq, bk=bk),
        cfg, grid, in_specs + a_specs, [qspec], [jax.ShapeDtypeStruct(q.shape, q.dtype)],
        [q, k, v, o, lse, dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype), *a_args],
        "flash_jvp", d,
    )
    return t


def _flash_bwd(cfg: _Cfg, q, k, v, aux, o, lse, do, dlse):
    bsz, n, h, d = _dims(cfg, q)
    m = _dims(cfg, k)[1]
    hkv = _dims(cfg, k)[2]
    g = cfg.groups
    do = do.astype(q.dtype)
    # Delta_i = rowsum(dO o O) - g_lse_i (the lse cotangent enters like a shift of Delta).
    delta = jnp.sum(do.astype(jnp.float32) * o.astype(jnp.float32), axis=-1)
    if cfg.layout != "bhnd":
        delta = jnp.swapaxes(delta, 1, 2)  # [B, H, N]
    delta = delta[..., None] - dlse.astype(jnp.float32)  # [B, H, N, 1]

    # dQ: grid over query tiles.
    bq, bk = _blocks(cfg, "dq", n, m)
    qspec = _make_spec(cfg, q.shape, bq, lambda hh: hh, True)
    kfull = _make_spec(cfg, k.shape, None, lambda hh: hh // g, False)
    a_specs, a_args = _aux_specs(cfg, aux, bq, None, n, m)
    (dq,) = _call(
        functools.partial(_dq_kernel, cfg=cfg, bq=bq, bk=bk),
        cfg, (n // bq, bsz, h),
        [qspec, kfull, kfull, qspec, _row_spec(bq, n, True), _row_spec(bq, n, True)] + a_specs,
        [qspec], [jax.ShapeDtypeStruct(q.shape, q.dtype)],
        [q, k, v, do, lse, delta, *a_args], "flash_bwd_dq", d,
    )

    # dK, dV: grid over KV tiles and *query* heads; GQA groups are summed afterwards.
    bq, bk = _blocks(cfg, "dkv", n, m)
    qfull = _make_spec(cfg, q.shape, None, lambda hh: hh, False)
    ktile = _make_spec(cfg, k.shape, bk, lambda hh: hh // g, True)
    part_shape = (bsz, h, m, d) if cfg.layout == "bhnd" else (bsz, m, h, d)
    part_spec = _make_spec(cfg, part_shape, bk, lambda hh: hh, True)
    part_dtype = jnp.float32 if g > 1 else k.dtype
    a_specs, a_args = _aux_specs(cfg, aux, None, bk, n, m)
    dk, dv = _call(
        functools.partial(_dkv_kernel, cfg=cfg, bq=bq, bk=bk),
        cfg, (m // bk, bsz, h),
        [qfull, ktile, ktile, qfull, _row_spec(bq, n, False), _row_spec(bq, n, False)] + a_specs,
        [part_spec, part_spec],
        [jax.ShapeDtypeStruct(part_shape, part_dtype)] * 2,
        [q, k, v, do, lse, delta, *a_args], "flash_bwd_dkv", d,
    )
    if g > 1:
        if cfg.layout == "bhnd":
            dk = dk.reshape(bsz, hkv, g, m, d).sum(axis=2)
            dv = dv.reshape(bsz, hkv, g, m, d).sum(axis=2)
        else:
            dk = dk.reshape(bsz, m, hkv, g, d).sum(axis=3)
            dv = dv.reshape(bsz, m, hkv, g, d).sum(axis=3)
        dk, dv = dk.astype(k.dtype), dv.astype(v.dtype)
    return dq, dk, dv


# ----------------------------------------------------------------------------------------------
# Differentiation wiring
# ----------------------------------------------------------------------------------------------


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _fwd_vjp(cfg: _Cfg, q, k, v, aux):
    """(O, lse) with the flash backward as its VJP (used for the primal inside the JVP rule)."""
    return _flash_fwd(cfg, q, k, v, aux)


def _fwd_vjp_fwd(cfg, q, k, v, aux):
    o, lse = _flash_fwd(cfg, q, k, v, aux)
    return (o, lse), (q, k, v, aux, o, lse)


def _fwd_vjp_bwd(cfg, res, cts):
    q, k, v, aux, o, lse = res
    do, dlse = cts
    dq, dk, dv = _flash_bwd(cfg, q, k, v, aux, o, lse, do, dlse)
    return dq, dk, dv, jax.tree_util.tree_map(lambda _: None, aux)


_fwd_vjp.defvjp(_fwd_vjp_fwd, _fwd_vjp_bwd)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _tangent_fn(cfg: _Cfg, q, k, v, aux, o, lse, dq, dk, dv):
    """The attention tangent: linear in (dq, dk, dv), with the flash backward as its transpose.

    A tangent given as ``None`` is zero; it is not a linear input then, so that ``jax.grad`` with
    respect to a subset of (q, k, v) transposes only the inputs that carry a tangent.
    """

    def fun(res, lin):
        q_, k_, v_, aux_, o_, lse_ = res
        ldq, ldk, ldv = lin
        ldq = jnp.zeros_like(q_) if ldq is None else ldq
        ldk = jnp.zeros_like(k_) if ldk is None else ldk
        ldv = jnp.zeros_like(v_) if ldv is None else ldv
        return _flash_tangent(cfg, q_, k_, v_, aux_, o_, lse_, ldq, ldk, ldv)

    def fun_t(res, ct):
        q_, k_, v_, aux_, o_, lse_ = res
        gq, gk, gv = _flash_bwd(cfg, q_, k_, v_, aux_, o_, lse_, ct, jnp.zeros_like(lse_))
        return (None if dq is None else gq, None if dk is None else gk, None if dv is None else gv)

    return linear_call(fun, fun_t, (q, k, v, aux, o, lse), (dq, dk, dv))


@_tangent_fn.defjvp
def _tangent_fn_jvp(cfg, primals, tangents):
    # Second order (rare: a gradient into a JVP output that is not stop-gradiented, or a
    # Hessian). Correct, but through the unfused jnp formula below (seq x seq memory).
    q, k, v, aux, o, lse, dq, dk, dv = primals
    tq, tk, tv, _, to, tlse, tdq, tdk, tdv = tangents
    out = _tangent_fn(cfg, *primals)

    def fill(x, like):
        return jnp.zeros_like(like) if x is None else x

    dq, tdq = fill(dq, q), fill(tdq, q)
    dk, tdk = fill(dk, k), fill(tdk, k)
    dv, tdv = fill(dv, v), fill(tdv, v)
    f = functools.partial(_tangent_formula_ref, cfg, aux=aux)
    _, dout = jax.jvp(f, (q, k, v, o, lse, dq, dk, dv), (tq, tk, tv, to, tlse, tdq, tdk, tdv))
    return out, dout


def _allowed_dense(cfg: _Cfg, aux, bsz, h, n, m):
    """Dense [B|1, H|1, N, M] boolean mask equal to what the kernels apply (reference paths only)."""
    mask, qpos, kvpos = aux
    qp = qpos if cfg.has_qpos else jnp.arange(n, dtype=jnp.int32)[None, :, None]  # [Bq, N, 1]
    kp = kvpos if cfg.has_kvpos else jnp.arange(m, dtype=jnp.int32)[None, None, :]  # [Bk, 1, M]
    valid = (kp >= 0) if cfg.has_kvpos else (kp < cfg.kv_len)
    allowed = jnp.broadcast_to(valid[:, None], (valid.shape[0], 1, n, m))
    if cfg.causal:
        allowed = jnp.logical_and(allowed, qp[:, None] >= kp[:, None])
    if cfg.has_mask:
        allowed = jnp.logical_and(allowed, mask != 0)
    return allowed


def _to_bhnd(cfg, x):
    return x if cfg.layout == "bhnd" else jnp.swapaxes(x, 1, 2)


def _from_bhnd(cfg, x):
    return x if cfg.layout == "bhnd" else jnp.swapaxes(x, 1, 2)


def _tangent_formula_ref(cfg: _Cfg, q, k, v, o, lse, dq, dk, dv, *, aux):
    """jnp version of the tangent kernel's formula (inputs o, lse treated as given)."""
    qh, kh, vh = _to_bhnd(cfg, q), _to_bhnd(cfg, k), _to_bhnd(cfg, v)
    dqh, dkh, dvh, oh = _to_bhnd(cfg, dq), _to_bhnd(cfg, dk), _to_bhnd(cfg, dv), _to_bhnd(cfg, o)
    bsz, h, n, _ = qh.shape
    m = kh.shape[2]
    g = cfg.groups
    kh, vh, dkh, dvh = (jnp.repeat(x, g, axis=1) for x in (kh, vh, dkh, dvh))
    f32 = jnp.float32
    s = jnp.einsum("bhnd,bhmd->bhnm", qh.astype(f32), kh.astype(f32)) * cfg.scale
    allowed = _allowed_dense(cfg, aux, bsz, h, n, m)
    p = jnp.where(allowed, jnp.exp(s - lse), 0.0)
    ds = (
        jnp.einsum("bhnd,bhmd->bhnm", dqh.astype(f32), kh.astype(f32))
        + jnp.einsum("bhnd,bhmd->bhnm", qh.astype(f32), dkh.astype(f32))
    ) * cfg.scale
    pds = p * ds
    mu = jnp.sum(pds, axis=-1, keepdims=True)
    t = (
        jnp.einsum("bhnm,bhmd->bhnd", pds, vh.astype(f32))
        + jnp.einsum("bhnm,bhmd->bhnd", p, dvh.astype(f32))
        - mu * oh.astype(f32)
    )
    return _from_bhnd(cfg, t).astype(q.dtype)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _attn_core(cfg: _Cfg, q, k, v, aux):
    return _flash_fwd(cfg, q, k, v, aux)[0]


def _attn_core_jvp(cfg, primals, tangents):
    q, k, v, aux = primals
    dq, dk, dv = (None if isinstance(t, SymbolicZero) else t for t in tangents[:3])
    o, lse = _fwd_vjp(cfg, q, k, v, aux)
    if dq is None and dk is None and dv is None:
        return o, jnp.zeros_like(o)
    t = _tangent_fn(cfg, q, k, v, aux, o, lse, dq, dk, dv)
    return o, t


_attn_core.defjvp(_attn_core_jvp, symbolic_zeros=True)


# ----------------------------------------------------------------------------------------------
# vmap support for linear_call (jax 0.10 ships it without a batching rule)
# ----------------------------------------------------------------------------------------------


def _register_linear_call_batching() -> bool:
    """Give ``linear_call`` a batching rule (vmap of the JVP/grad of attention; jacfwd/hessian).

    The rule vmaps the callee and its transpose and re-binds ``linear_call``; linear inputs are
    made batched so that the transposed call returns cotangents with matching shapes. Uses JAX
    internals; if they move, vmap over the tangent path raises JAX's usual "Batching rule for
    'linear_call' not implemented" and nothing else is affected.
    """
    try:
        from jax._src import core as jcore
        from jax._src.custom_derivatives import linear_call_p
        from jax._src.interpreters import batching
    except Exception:  # pragma: no cover
        return False
    if linear_call_p in batching.fancy_primitive_batchers:
        return True

    def rule(axis_data, args, dims, *, callee, transpose_thunk, num_callee_consts, num_res):
        size = axis_data.size
        moved = [x if d is None else jnp.moveaxis(x, d, 0) for x, d in zip(args, dims)]
        ax = [None if d is None else 0 for d in dims]
        nc, nr = num_callee_consts, num_res
        consts, res, lin = moved[:nc], moved[nc : nc + nr], moved[nc + nr :]
        cax, rax, lax_ = ax[:nc], ax[nc : nc + nr], ax[nc + nr :]
        lin = [x if a == 0 else jnp.broadcast_to(x, (size, *x.shape)) for x, a in zip(lin, lax_)]

        def f(cr, lin_):
            c, r = cr
            return jax.vmap(
                lambda c_, r_, l_: jcore.eval_jaxpr(callee.jaxpr, callee.consts, *c_, *r_, *l_),
                in_axes=(cax, rax, 0),
                axis_size=size,
            )(c, r, lin_)

        def ft(cr, cts):
            t_jaxpr, t_consts = transpose_thunk()
            _, r = cr
            return jax.vmap(
                lambda r_, ct_: jcore.eval_jaxpr(t_jaxpr.jaxpr, t_jaxpr.consts, *t_consts, *r_, *ct_),
                in_axes=(rax, 0),
                axis_size=size,
            )(r, list(cts))

        out = linear_call(f, ft, (consts, res), lin)
        return out, [0] * len(out)

    batching.fancy_primitive_batchers[linear_call_p] = rule
    return True


_LINEAR_CALL_VMAP = _register_linear_call_batching()


# ----------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------


def _backend() -> str:
    """The platform kernels are built for (tests patch this to cross-lower for CUDA on a CPU)."""
    return jax.default_backend()


def default_implementation() -> str:
    """``"pallas"`` on GPU/TPU, ``"xla"`` elsewhere (interpret mode is for tests only)."""
    return "pallas" if _backend() in ("gpu", "tpu") else "xla"


def _round_up(x: int, m: int) -> int:
    return -(-x // m) * m


def _next_pow2(x: int) -> int:
    return 1 << max(0, (x - 1).bit_length())


def _pad_axis(x, axis: int, size: int, value=0):
    if x.shape[axis] == size:
        return x
    pads = [(0, 0)] * x.ndim
    pads[axis] = (0, size - x.shape[axis])
    return jnp.pad(x, pads, constant_values=value)


def _validate(q, k, v, mask, kv_index, scale, implementation, block_sizes, causal):
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not hasattr(x, "shape") or x.ndim != 4:
            raise ValueError(
                f"`{name}` must have shape [batch, seq, heads, head_dim], got {getattr(x, 'shape', type(x))}."
            )
        if not jnp.issubdtype(x.dtype, jnp.floating):
            raise TypeError(f"`{name}` must be floating, got {x.dtype}.")
    if k.shape != v.shape:
        raise ValueError(f"`k` and `v` must have the same shape, got {k.shape} and {v.shape}.")
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"`q`, `k`, `v` must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}.")
    if q.shape[0] != k.shape[0]:
        raise ValueError(f"`q` and `k` must have the same batch size, got {q.shape[0]} and {k.shape[0]}.")
    if q.shape[3] != k.shape[3]:
        raise ValueError(f"`q` and `k` must have the same head_dim, got {q.shape[3]} and {k.shape[3]}.")
    if q.shape[2] % k.shape[2] != 0:
        raise ValueError(
            f"KV heads must divide query heads (GQA/MQA), got {k.shape[2]} KV heads and {q.shape[2]} query heads."
        )
    if not isinstance(causal, (bool, np.bool_)):
        raise TypeError(f"`causal` must be a Python bool, got {type(causal).__name__}.")
    if implementation is not None and implementation not in IMPLEMENTATIONS:
        raise ValueError(f"`implementation` must be one of {IMPLEMENTATIONS} or None, got {implementation!r}.")
    if block_sizes is not None and not isinstance(block_sizes, BlockSizes):
        raise TypeError(f"`block_sizes` must be a BlockSizes, got {type(block_sizes).__name__}.")
    if scale is not None and not (isinstance(scale, (int, float)) and scale > 0):
        raise ValueError(f"`scale` must be a positive Python float, got {scale!r}.")
    b, n, h, _ = q.shape
    m = k.shape[1]
    if mask is not None:
        if mask.ndim != 4:
            raise ValueError(f"`mask` must be rank 4, broadcastable to (batch, heads, q_seq, kv_seq); got {mask.shape}.")
        for ax, (got, full, nm) in enumerate(zip(mask.shape, (b, h, n, m), ("batch", "heads", "q_seq", "kv_seq"))):
            if got not in (1, full):
                raise ValueError(
                    f"`mask` axis {ax} ({nm}) must be 1 or {full}, got shape {mask.shape} "
                    f"(expected broadcastable to {(b, h, n, m)})."
                )
    if kv_index is not None:
        if not jnp.issubdtype(kv_index.dtype, jnp.integer):
            raise TypeError(f"`kv_index` must be an integer array, got {kv_index.dtype}.")
        if kv_index.ndim not in (2, 3):
            raise ValueError(
                f"`kv_index` must have shape (q_blocks, n_selected) or (batch, q_blocks, n_selected), got {kv_index.shape}."
            )
        if kv_index.ndim == 3 and kv_index.shape[0] not in (1, b):
            raise ValueError(f"`kv_index` batch axis must be 1 or {b}, got shape {kv_index.shape}.")
        c = kv_index.shape[-2]
        if n % c != 0:
            raise ValueError(f"`kv_index` has {c} query blocks, which must divide the query length {n}.")
        if not isinstance(kv_index, jax.core.Tracer):
            idx = np.asarray(kv_index)
            if idx.size and idx.max() >= m:
                raise ValueError(f"`kv_index` entries must be < kv_seq={m} (use -1 for padding), got max {idx.max()}.")
            srt = np.sort(idx, axis=-1)
            if np.any((srt[..., 1:] == srt[..., :-1]) & (srt[..., 1:] >= 0)):
                raise ValueError("`kv_index` rows must not repeat a KV index (only -1 padding may repeat).")


def attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    causal: bool = False,
    mask: jax.Array | None = None,
    kv_index: jax.Array | None = None,
    scale: float | None = None,
    implementation: str | None = None,
    block_sizes: BlockSizes | None = None,
    q_offset: int | jax.Array = 0,
    q_positions: jax.Array | None = None,
) -> jax.Array:
    """Multi-head attention ``softmax(scale Q K^T + mask) V`` with fused reverse and forward mode.

    Args:
      q: ``[batch, q_seq, heads, head_dim]`` (float32, bfloat16 or float16).
      k, v: ``[batch, kv_seq, kv_heads, head_dim]``; ``kv_heads`` divides ``heads`` (GQA/MQA).
      causal: query ``i`` attends to key ``j`` only if ``j <= i + q_offset`` (top-left aligned,
        as ``jax.nn.dot_product_attention``).
      mask: optional boolean, broadcastable to ``(batch, heads, q_seq, kv_seq)``; True = attend.
      kv_index: optional int array ``(q_blocks, n_sel)`` or ``(batch|1, q_blocks, n_sel)``: query
        block ``c`` (queries ``[c*q_seq/q_blocks, (c+1)*q_seq/q_blocks)``) may attend only to the
        listed KV entries (distinct indices into ``kv_seq``; ``-1`` = padding). Used for stochastic
        KV routing (KVPO), sliding windows and block-sparse patterns. Only the listed entries are
        gathered and visited, so unlisted KV is never read; ``causal`` and ``mask`` still apply
        (in original positions).
      scale: logit scale; default ``1/sqrt(head_dim)``.
      implementation: ``"pallas"`` (GPU Triton or TPU Mosaic lowering), ``"interpret"`` (Pallas
        interpreter, CPU tests), ``"xla"`` (``jax.nn.dot_product_attention``), or ``None``
        (:func:`default_implementation`: Pallas on GPU/TPU, XLA on CPU).
      block_sizes: tiles of the Pallas kernels; default ``BlockSizes.get_default(backend)``.
      q_offset: position of the first query for causal masking (int, or ``(batch,)`` ints), e.g.
        the number of cached tokens when decoding with a KV cache.
      q_positions: alternatively, the causal position of every query, ``(q_seq,)`` or
        ``(batch, q_seq)`` ints: query ``i`` sees keys ``j <= q_positions[i]``. With
        ``q_positions[i] = (i // F + 1) F - 1`` this is block (frame) causal attention.

    Returns:
      ``[batch, q_seq, heads, head_dim]`` in ``q.dtype``. Rows with no allowed key are 0.

    Differentiation: ``jax.grad`` runs the flash backward kernels, ``jax.jvp`` the forward and
    tangent kernels, and both compose (gradient through the primal of a JVP). Memory is linear in
    the sequence lengths on the Pallas path, except for a user-supplied dense ``mask`` and for
    second-order terms through the tangent (a gradient into a JVP output that is not under
    ``stop_gradient``), which use the unfused reference. A MeanFlow loss (JVP target under
    ``stop_gradient``) compiles to a program without any seq x seq array (tested).
    """
    _validate(q, k, v, mask, kv_index, scale, implementation, block_sizes, causal)
    impl = implementation or default_implementation()
    backend = _backend()
    if impl == "pallas" and backend not in ("gpu", "tpu"):
        raise ValueError(
            f'implementation="pallas" needs a GPU or TPU backend (got {backend!r}); '
            'use "interpret" for the Pallas interpreter or "xla".'
        )
    b, n, h, d = q.shape
    m = k.shape[1]
    scale = float(scale) if scale is not None else 1.0 / math.sqrt(d)
    causal = bool(causal)

    # Query positions (explicit only when shifted by q_offset or given).
    offset_is_zero = isinstance(q_offset, (int, np.integer)) and int(q_offset) == 0
    qpos = None
    if q_positions is not None:
        if not offset_is_zero:
            raise ValueError("Pass at most one of `q_offset` and `q_positions`.")
        qp_arr = jnp.asarray(q_positions, jnp.int32)
        if qp_arr.shape not in ((n,), (1, n), (b, n)):
            raise ValueError(f"`q_positions` must have shape ({n},) or ({b}, {n}), got {qp_arr.shape}.")
        qpos = qp_arr.reshape(-1, n)
    elif not offset_is_zero:
        off = jnp.asarray(q_offset, jnp.int32)
        if off.ndim > 1 or (off.ndim == 1 and off.shape[0] != b):
            raise ValueError(f"`q_offset` must be an int or shape ({b},), got shape {off.shape}.")
        qpos = jnp.reshape(off, (-1, 1)) + jnp.arange(n, dtype=jnp.int32)[None, :]  # [1|B, N]

    kvpos = None
    if kv_index is not None:
        # Gather the routed KV entries per query block and fold the blocks into the batch.
        idx = jnp.asarray(kv_index, jnp.int32)
        if idx.ndim == 2:
            idx = idx[None]
        c, s_sel = idx.shape[1], idx.shape[2]
        cq = n // c
        idx = jnp.broadcast_to(idx, (b, c, s_sel))
        valid = idx >= 0
        safe = jnp.where(valid, idx, 0)
        take = lambda x: jnp.take_along_axis(x[:, None], safe[:, :, :, None, None], axis=2)  # noqa: E731
        k, v = take(k), take(v)  # [B, C, S, Hkv, D]
        k = k.reshape(b * c, s_sel, *k.shape[3:])
        v = v.reshape(b * c, s_sel, *v.shape[3:])
        kvpos = jnp.where(valid, idx, -1).reshape(b * c, s_sel)
        base = (jnp.arange(c, dtype=jnp.int32) * cq)[:, None] + jnp.arange(cq, dtype=jnp.int32)[None, :]
        qp = base[None] if qpos is None else qpos.reshape(-1, c, cq)
        qpos = jnp.broadcast_to(qp, (b, c, cq)).reshape(b * c, cq) if (qpos is not None or causal) else None
        if mask is not None:
            mb = jnp.broadcast_to(mask, (b, mask.shape[1], n, m)).reshape(b, mask.shape[1], c, cq, m)
            mb = jnp.take_along_axis(mb, safe[:, None, :, None, :], axis=4)  # [B, Hm, C, Cq, S]
            mask = jnp.swapaxes(mb, 1, 2).reshape(b * c, mb.shape[1], cq, s_sel)
        q = q.reshape(b * c, cq, h, d)
        out = _attention_dense(q, k, v, mask, qpos, kvpos, causal, scale, impl, block_sizes, backend)
        return out.reshape(b, n, h, d)
    return _attention_dense(q, k, v, mask, qpos, None, causal, scale, impl, block_sizes, backend)


def _attention_dense(q, k, v, mask, qpos, kvpos, causal, scale, impl, block_sizes, backend):
    """Attention on gathered/shaped inputs: dispatch to XLA or the Pallas core."""
    if impl == "xla":
        return _attention_xla(q, k, v, mask, qpos, kvpos, causal, scale)
    b, n, h, d = q.shape
    m, hkv = k.shape[1], k.shape[2]
    kern_backend = "cpu" if impl == "interpret" else backend
    blocks = block_sizes or BlockSizes.get_default(kern_backend, head_dim=d)
    # Pad head_dim to a power of two (>= 16) and the sequences to whole tiles.
    dp = max(16, _next_pow2(d))
    bq_all = [blocks.block_q, blocks.block_q_dkv, blocks.block_q_dq, blocks.block_q_jvp]
    bk_all = [blocks.block_k, blocks.block_k_dkv, blocks.block_k_dq, blocks.block_k_jvp]
    n16, m16 = max(16, _next_pow2(n)), max(16, _next_pow2(m))
    np_ = _round_up(n, max(min(x, n16) for x in bq_all))
    mp = _round_up(m, max(min(x, m16) for x in bk_all))
    qq = _pad_axis(_pad_axis(q, 3, dp), 1, np_)
    kk = _pad_axis(_pad_axis(k, 3, dp), 1, mp)
    vv = _pad_axis(_pad_axis(v, 3, dp), 1, mp)
    mask_i8 = None
    if mask is not None:
        # Expand a mask broadcast along q_seq or kv_seq (size 1, e.g. a (B, 1, 1, M) key-padding mask)
        # first: padding a size-1 axis with zeros would disallow every real query row / key column but
        # the first (the kernels index the mask as a full (q_seq, kv_seq) array).
        mask = jnp.broadcast_to(mask, mask.shape[:2] + (n, m))
        mask_i8 = _pad_axis(_pad_axis(mask.astype(jnp.int8), 2, np_), 3, mp)
    qp = None if qpos is None else _pad_axis(qpos.astype(jnp.int32), 1, np_)[:, :, None]  # [Bq, Np, 1]
    kp = None if kvpos is None else _pad_axis(kvpos.astype(jnp.int32), 1, mp, value=-1)[:, None, :]  # [Bk, 1, Mp]
    layout = "bhnd" if (impl == "pallas" and backend == "tpu") else "bnhd"
    cfg = _Cfg(
        scale=scale,
        causal=causal,
        kv_len=m,
        has_mask=mask is not None,
        has_qpos=qpos is not None,
        has_kvpos=kvpos is not None,
        groups=h // hkv,
        blocks=blocks,
        interpret=impl == "interpret",
        layout=layout,
        backend="gpu" if kern_backend in ("gpu", "cuda", "rocm") else kern_backend,
    )
    if layout == "bhnd":
        qq, kk, vv = (jnp.swapaxes(x, 1, 2) for x in (qq, kk, vv))
    out = _attn_core(cfg, qq, kk, vv, (mask_i8, qp, kp))
    if layout == "bhnd":
        out = jnp.swapaxes(out, 1, 2)
    return out[:, :n, :, :d]


def _attention_xla(q, k, v, mask, qpos, kvpos, causal, scale):
    b, n, h, d = q.shape
    m = k.shape[1]
    plain_causal = causal and qpos is None and kvpos is None
    dense = None
    if (causal and not plain_causal) or kvpos is not None:
        qp = qpos if qpos is not None else jnp.arange(n, dtype=jnp.int32)[None, :]
        kp = kvpos if kvpos is not None else jnp.arange(m, dtype=jnp.int32)[None, :]
        dense = jnp.broadcast_to((kp >= 0)[:, None, None, :], (kp.shape[0], 1, n, m))
        if causal:
            dense = jnp.logical_and(dense, qp[:, None, :, None] >= kp[:, None, None, :])
    if mask is not None:
        mk = mask.astype(bool)
        dense = mk if dense is None else jnp.logical_and(dense, mk)
    if dense is not None:
        dense = jnp.broadcast_to(dense, (b, dense.shape[1], n, m))
        if plain_causal:
            dense = jnp.logical_and(dense, jnp.tril(jnp.ones((n, m), bool))[None, None])
        out = jax.nn.dot_product_attention(q, k, v, mask=dense, scale=scale, implementation="xla")
        # Rows with no allowed key: 0 (jax.nn returns a uniform average there).
        row_any = jnp.any(dense, axis=-1)  # [B, Hm, N]
        row_any = jnp.swapaxes(row_any, 1, 2)[..., None]  # [B, N, Hm, 1]
        return jnp.where(jnp.broadcast_to(row_any, (b, n, row_any.shape[2], 1)), out, jnp.zeros((), out.dtype))
    return jax.nn.dot_product_attention(q, k, v, scale=scale, is_causal=plain_causal, implementation="xla")


def attention_reference(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    causal: bool = False,
    mask: jax.Array | None = None,
    kv_index: jax.Array | None = None,
    scale: float | None = None,
    q_offset: int | jax.Array = 0,
    q_positions: jax.Array | None = None,
) -> jax.Array:
    """Pure-jnp attention with the same semantics as :func:`attention` (seq x seq memory).

    Builds the dense allowed set directly (``kv_index`` as a membership test, not a gather) and
    computes the softmax in float32; rows with no allowed key return 0. Differentiable in both
    modes by plain JAX autodiff: it is the oracle for values, VJPs and JVPs in the tests.
    """
    _validate(q, k, v, mask, kv_index, scale, None, None, causal)
    b, n, h, d = q.shape
    m, hkv = k.shape[1], k.shape[2]
    scale = float(scale) if scale is not None else 1.0 / math.sqrt(d)
    g = h // hkv
    f32 = jnp.float32
    kr = jnp.repeat(k, g, axis=2).astype(f32)
    vr = jnp.repeat(v, g, axis=2).astype(f32)
    s = jnp.einsum("bnhd,bmhd->bhnm", q.astype(f32), kr) * scale
    allowed = jnp.ones((1, 1, n, m), bool)
    if causal:
        if q_positions is not None:
            qi = jnp.asarray(q_positions, jnp.int32).reshape(-1, 1, n, 1)
        else:
            off = jnp.reshape(jnp.asarray(q_offset, jnp.int32), (-1, 1, 1, 1))
            qi = jnp.arange(n, dtype=jnp.int32)[None, None, :, None] + off
        allowed = jnp.logical_and(allowed, qi >= jnp.arange(m, dtype=jnp.int32)[None, None, None, :])
    if mask is not None:
        allowed = jnp.logical_and(allowed, mask.astype(bool))
    if kv_index is not None:
        idx = jnp.asarray(kv_index, jnp.int32)
        if idx.ndim == 2:
            idx = idx[None]
        c = idx.shape[1]
        member = jnp.any(idx[:, :, :, None] == jnp.arange(m, dtype=jnp.int32)[None, None, None, :], axis=2)
        member = jnp.repeat(member, n // c, axis=1)  # [B|1, N, M]
        allowed = jnp.logical_and(allowed, member[:, None])
    s = jnp.where(allowed, s, -jnp.inf)
    row_any = jnp.any(allowed, axis=-1, keepdims=True)
    smax = jnp.max(jnp.where(row_any, s, 0.0), axis=-1, keepdims=True)
    e = jnp.where(allowed, jnp.exp(s - jax.lax.stop_gradient(smax)), 0.0)
    denom = jnp.sum(e, axis=-1, keepdims=True)
    p = e / jnp.where(row_any, denom, 1.0)
    out = jnp.einsum("bhnm,bmhd->bnhd", p, vr)
    return out.astype(q.dtype)
