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

Class conditioning and classifier-free guidance (CFG). With ``ARFlow(num_classes=K)`` the
conditioned blocks (``cond_blocks="top"``: only the last, deep block, STARFlow's ``cond_top_only``;
``"all"``: every block, TarFlow) read a class label ``c in {0..K-1}`` through the transformer's adaLN
label embedding; label ``K`` is the null (unconditional) label. Train with :func:`condition_dropout`
(labels replaced by the null label with probability ``p``; code ``drop_label = 0.1``) so that one
network gives both ``(b_c, a_c) = h(x_<i; c)`` and ``(b_u, a_u) = h(x_<i; null)``. Guided inversion
(:func:`af_block_inverse` / :func:`flow_inverse` with ``guidance=w``) evaluates both branches on the
*same* prefix (the guided one: both halves of the code's doubled batch carry the same ``x``) and
inverts each token with the guided Gaussian conditional ``N(b_w, a_w^2)`` from :func:`guided_affine`.
Guidance is applied only in the conditioned blocks (the shallow blocks of STARFlow-V carry no label).

What is extrapolated, and the scale convention. OUR ``w`` is the usual CFG scale: ``w = 1`` is the
conditional sampler and ``w = 0`` the unconditional one (both exactly: the endpoints are selected,
not recomputed). The papers' code uses ``w_code = w - 1`` (its ``guidance=0`` means "off", i.e.
conditional). Two rules (:func:`guided_affine`):

- ``"product"`` (STARFlow code ``logits_guided``; default): the guided conditional is the normalised
  ``N(b_c, a_c^2)^w N(b_u, a_u^2)^(1-w)`` (the code's ``(1+w_code) log p_c - w_code log p_u``). With
  ``s = a_c^2 / a_u^2`` its precision is ``(w + (1-w) s) / a_c^2`` and its mean
  ``b_u + lambda (b_c - b_u)``, ``lambda = w / (w + (1-w) s)``. For ``w > 1`` the code clips ``s <= 1``
  (keeps the precision positive; then the scale never exceeds ``a_c``); we apply the clip only for
  ``w > 1``, where it is needed: for ``0 <= w <= 1`` the product is a proper Gaussian without it, so
  ``w = 0`` is exactly the unconditional conditional (the code's clip would not give that).
- ``"linear"`` (TarFlow, spec 3.4): ``b_w = b_u + w (b_c - b_u)`` and ``log a_w = log a_u + w (log a_c -
  log a_u)``: extrapolation of the mean and the LOG-scale (TarFlow's ``alpha``; the STARFlow code's
  alternative ``original_guidance`` extrapolates ``a`` itself, which can turn negative; not ours).

Not implemented: TarFlow's linear annealing of ``w`` over the token index (in the STARFlow code the
annealing factor does not reach ``logits_guided``), and TarFlow's attention-temperature guidance for
unconditional models.

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
from flowjax.nets.init import init_variables

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
    "condition_dropout",
    "guided_affine",
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
      num_classes: ``K`` class labels (0 = unconditional flow); label ``K`` is the null label.
      cond_blocks: which blocks read the label: "top" (the last block only; STARFlow's
        ``cond_top_only``) or "all" (TarFlow).
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
    num_classes: int = 0
    cond_blocks: Literal["top", "all"] = "top"

    def __post_init__(self):
        _checks.check_positive_int("channels", self.channels)
        if not isinstance(self.num_classes, int) or isinstance(self.num_classes, bool) or self.num_classes < 0:
            raise ValueError(f"`num_classes` must be an integer >= 0, got {self.num_classes!r}.")
        _checks.check_choice("cond_blocks", self.cond_blocks, ("top", "all"))
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

    def is_conditional(self, i: int) -> bool:
        """Whether block ``i`` reads the class label."""
        return self.num_classes > 0 and (self.cond_blocks == "all" or i == len(self.blocks) - 1)

    def net(self, i: int) -> CausalTransformer:
        """The causal transformer of block ``i`` (token causal, zero-initialised output ``(b, r_a)``)."""
        return CausalTransformer(
            dim=self.dim, depth=self.blocks[i].depth, heads=self.heads, mlp_ratio=self.mlp_ratio,
            out_dim=2 * self.channels, frame_size=1, num_classes=self.num_classes if self.is_conditional(i) else 0,
        )


def tarflow(channels: int, num_tokens: int, *, num_blocks: int = 4, depth: int = 2, dim: int = 64, heads: int = 4,
            scale: Literal["softplus", "exp"] = "exp", soft_clip: float | None = None, num_classes: int = 0) -> ARFlow:
    """TarFlow (arXiv:2412.06329): ``num_blocks`` global blocks of equal depth, alternating identity / reversed order.

    Paper defaults (ImageNet 64): 8 blocks x 8 layers, width 768, patch 2, ``a = exp(alpha)``; small here.
    ``num_classes > 0``: every block is class conditioned (TarFlow's class-conditional models).
    """
    blocks = tuple(AFBlockSpec("global", flip=bool(k % 2), depth=depth) for k in range(num_blocks))
    return ARFlow(channels, num_tokens, 1, blocks, dim=dim, heads=heads, scale=scale, soft_clip=soft_clip,
                  num_classes=num_classes, cond_blocks="all")


def starflow_v(channels: int, tokens_per_frame: int, num_frames: int, *, shallow_blocks: int = 3, shallow_depth: int = 1,
               deep_depth: int = 4, dim: int = 64, heads: int = 4, local: bool = True, soft_clip: float | None = 4.0,
               num_classes: int = 0) -> ARFlow:
    """STARFlow-V's global-local stack (arXiv:2511.20462; code ``shallow_block_local=1``).

    ``shallow_blocks`` shallow blocks next to the data (frame-scoped when ``local``, alternating
    identity / in-frame flip), then one deep global block in time order next to the prior. The
    paper's model has 5 shallow blocks of 2 layers and a 24-layer deep block (width 3072/4096);
    the spec's CPU toy uses 3 x 1 layer + 4 layers, width 64 (our defaults). ``local=False`` gives
    the spec's section-5 baseline: shallow blocks causal over the whole video (flip = full reversal).
    ``num_classes > 0``: only the deep block is class conditioned (``cond_top_only``; CFG there only).
    """
    scope = "frame" if local else "global"
    blocks = tuple(AFBlockSpec(scope, flip=bool(k % 2), depth=shallow_depth) for k in range(shallow_blocks))
    blocks = blocks + (AFBlockSpec("global", flip=False, depth=deep_depth),)
    return ARFlow(channels, tokens_per_frame, num_frames, blocks, dim=dim, heads=heads, scale="softplus",
                  soft_clip=soft_clip, num_classes=num_classes, cond_blocks="top")


def init_flow(flow: ARFlow, key: Array) -> list[dict]:
    """Parameters: one ``{"sos": (C,), "net": flax variables (unboxed)}`` per block (output layer zero, so ``f = id``)."""
    keys = jax.random.split(key, len(flow.blocks))
    params = []
    for i, k in enumerate(keys):
        k_net, k_sos = jax.random.split(k)
        length = flow.tokens_per_frame if flow.blocks[i].scope == "frame" else flow.num_tokens
        x = jnp.zeros((1, length, flow.channels), jnp.float32)
        params.append({"sos": 0.02 * jax.random.normal(k_sos, (flow.channels,), jnp.float32),
                       "net": nn.meta.unbox(init_variables(flow.net(i), k_net, x))})
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


def _check_labels(flow: ARFlow, c: Any, batch: int) -> None:
    if c is None:
        return
    if flow.num_classes == 0:
        raise ValueError("`c` (class labels) was given but the flow is unconditional (num_classes=0).")
    if not hasattr(c, "shape") or not jnp.issubdtype(jnp.asarray(c).dtype, jnp.integer):
        raise TypeError(f"`c` must be an integer array of class labels, got {type(c).__name__} "
                        f"{getattr(c, 'dtype', '')}.")
    if tuple(c.shape) != (batch,):
        raise ValueError(f"`c` must have shape ({batch},) (one label per sample), got {tuple(c.shape)}.")


def _block_labels(flow: ARFlow, i: int, c: Array | None) -> Array | None:
    """Labels per sequence of block ``i`` (``None``: unconditional block, or null label)."""
    if c is None or not flow.is_conditional(i):
        return None
    c = jnp.asarray(c, jnp.int32)
    return jnp.repeat(c, flow.num_frames) if flow.blocks[i].scope == "frame" else c


def condition_dropout(flow: ARFlow, key: Array, c: Array, *, p: float = 0.1) -> Array:
    """CFG label dropout for training: each label becomes the null label ``K = num_classes`` w.p. ``p``.

    STARFlow/STARFlow-V code ``drop_label = 0.1`` (TarFlow: class-conditional models trained the same
    way). One network then models ``p(x | c)`` and ``p(x | null)`` (needed by guided sampling).
    """
    if flow.num_classes == 0:
        raise ValueError("condition_dropout needs a class-conditional flow (num_classes > 0).")
    if not (isinstance(p, (int, float)) and 0.0 <= p <= 1.0):
        raise ValueError(f"`p` must be a probability in [0, 1], got {p!r}.")
    if not hasattr(c, "shape") or not jnp.issubdtype(jnp.asarray(c).dtype, jnp.integer):
        raise TypeError("`c` must be an integer array of class labels.")
    drop = jax.random.uniform(key, jnp.shape(c)) < p
    return jnp.where(drop, flow.num_classes, c).astype(jnp.asarray(c).dtype)


def guided_affine(
    b_c: Array, log_a_c: Array, b_u: Array, log_a_u: Array, w: float | Array, *,
    rule: Literal["product", "linear"] = "product",
) -> tuple[Array, Array]:
    """Classifier-free guidance of one AF conditional ``N(b, a^2)``: returns ``(b_w, log a_w)``.

    OUR scale ``w`` (``w = 1``: conditional, ``w = 0``: unconditional, ``w > 1``: guided; the STARFlow
    code's ``guidance`` is ``w - 1``). Both endpoints are returned exactly (selected, not recomputed).

    - ``rule="product"`` (STARFlow code ``logits_guided``): ``N(b_c, a_c^2)^w N(b_u, a_u^2)^(1-w)``
      normalised, i.e. with ``s = a_c^2 / a_u^2`` (clipped to ``s <= 1`` when ``w > 1``, as in the code)
      ``a_w = a_c / sqrt(w + (1-w) s)`` and ``b_w = b_u + lambda (b_c - b_u)``, ``lambda = w / (w + (1-w) s)``
      (the code's ``((1+g) b_c - g s b_u)/(1 + g - g s)`` with ``g = w - 1``). If ``a_c = a_u`` it is
      ``b_u + w (b_c - b_u)``. ``log a_c - log a_u`` is clamped to ``<= 30`` before ``exp`` (ours; only
      reachable for ``w < 1`` with a wildly wider conditional, where the result is ``~(b_u, a_u)``).
    - ``rule="linear"`` (TarFlow): ``b_w = b_u + w (b_c - b_u)``, ``log a_w = log a_u + w (log a_c - log a_u)``.

    ``w`` is a float or an array broadcasting against the parameters (e.g. per token); ``w >= 0``.
    """
    _checks.check_choice("rule", rule, ("product", "linear"))
    w = jnp.asarray(w).astype(jnp.result_type(b_c, log_a_c))
    if rule == "linear":
        b = b_u + w * (b_c - b_u)
        log_a = log_a_u + w * (log_a_c - log_a_u)
    else:
        s = jnp.exp(2.0 * jnp.minimum(log_a_c - log_a_u, 30.0))
        s = jnp.where(w > 1.0, jnp.minimum(s, 1.0), s)  # the code's clip s <= 1, needed only for w > 1
        denom = w + (1.0 - w) * s
        b = b_u + (w / denom) * (b_c - b_u)
        log_a = log_a_c - 0.5 * jnp.log(denom)
    b = jnp.where(w == 1.0, b_c, jnp.where(w == 0.0, b_u, b))
    log_a = jnp.where(w == 1.0, log_a_c, jnp.where(w == 0.0, log_a_u, log_a))
    return b, log_a


def _check_guidance(flow: ARFlow, guidance: Any, guidance_rule: str, c: Any) -> None:
    if guidance is None:
        return
    _checks.check_choice("guidance_rule", guidance_rule, ("product", "linear"))
    if flow.num_classes == 0:
        raise ValueError("`guidance` needs a class-conditional flow (num_classes > 0).")
    if c is None:
        raise ValueError("`guidance` needs the class labels `c` (the conditional branch).")
    if isinstance(guidance, (int, float)) and not (math.isfinite(guidance) and guidance >= 0):
        raise ValueError(f"`guidance` must be a finite float >= 0 (1 = conditional, 0 = unconditional), got {guidance!r}.")


def af_block_forward(flow: ARFlow, i: int, p: dict, x: Float[Array, "B N C"], *, c: Array | None = None) -> tuple[Array, Array]:
    """Block ``i`` forward ``z = (x - b) / a`` (teacher forced, one transformer pass); returns ``(z, logdet (B,))``.

    ``c``: class labels ``(B,)`` for a conditional flow (``None``: the null label, i.e. unconditional).
    """
    batch = x.shape[0]
    _check_labels(flow, c, batch)
    xs = _to_block_order(flow, i, x)
    raw = flow.net(i).apply(p["net"], _shifted(p["sos"], xs), c=_block_labels(flow, i, c))
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
    c: Array | None = None,
    guidance: float | Array | None = None,
    guidance_rule: Literal["product", "linear"] = "product",
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

    ``c``: class labels ``(B,)`` (conditional flows; ``None`` = null label). ``guidance=w`` (a float or
    a traced scalar; ``None`` = off) makes a conditioned block invert the guided conditionals of
    :func:`guided_affine` (``w = 1`` conditional, ``w = 0`` unconditional): every transformer call runs
    the conditional and the null-label branch as one doubled batch on the same prefix (KV cache of
    ``2B`` sequences), in the sequential and in the Jacobi inverse alike, so the guided map is still
    strictly triangular and Jacobi converges to the guided sequential inverse. Unconditioned blocks
    ignore ``guidance``.

    Returns ``(x (B, N, C), iterations (num_chunks,) int32)``: transformer calls per chunk
    (``L`` ones for sequential).
    """
    _checks.check_choice("method", method, ("sequential", "jacobi"))
    batch = z.shape[0]
    _check_labels(flow, c, batch)
    _check_guidance(flow, guidance, guidance_rule, c)
    net = flow.net(i)
    zs = _to_block_order(flow, i, z).astype(jnp.float32)
    bsz, length, chans = zs.shape
    sos = jnp.broadcast_to(p["sos"].astype(jnp.float32)[None, None], (bsz, 1, chans))
    labels = _block_labels(flow, i, c)
    guided = guidance is not None and flow.is_conditional(i)
    if guided:
        labels2 = jnp.concatenate([labels, jnp.full_like(labels, flow.num_classes)])  # [cond | null]
    cache = init_kv_cache(net, batch=2 * bsz if guided else bsz, max_len=length)

    def affine(inp, cache):
        """``(b, log a)`` for the tokens after ``inp`` (guided if requested) and the advanced cache."""
        if not guided:
            raw, cache = net.apply(p["net"], inp, c=labels, cache=cache)
            b, log_a = affine_params(flow, raw)
            return b, log_a, cache
        raw, cache = net.apply(p["net"], jnp.concatenate([inp, inp]), c=labels2, cache=cache)
        b2, log_a2 = affine_params(flow, raw)
        b, log_a = guided_affine(b2[:bsz], log_a2[:bsz], b2[bsz:], log_a2[bsz:], guidance, rule=guidance_rule)
        return b, log_a, cache

    if method == "sequential":
        def step(j, carry):
            x, cache, prev = carry
            b, log_a, cache = affine(prev, cache)
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
            b, log_a, new_cache = affine(inp, cache)  # cache length s: prefix only (rollback = not committing)
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


def flow_forward(flow: ARFlow, params: list[dict], x: Float[Array, "B N C"], *, c: Array | None = None,
                 return_intermediates: bool = False):
    """``z = f_T o ... o f_1(x)`` and ``sum_k log|det df_k|`` per sample ``(B,)``.

    ``c``: class labels ``(B,)`` of a conditional flow (``None`` = null label: the unconditional model;
    for training apply :func:`condition_dropout` first). With ``return_intermediates`` also the list
    of block outputs (for STARFlow's latent-norm term).
    """
    _check_tokens(flow, "x", x)
    _check_labels(flow, c, x.shape[0])
    logdet = jnp.zeros((x.shape[0],), jnp.float32)
    h, hs = x, []
    for i, p in enumerate(params):
        h, ld = af_block_forward(flow, i, p, h, c=c)
        logdet = logdet + ld
        hs.append(h)
    return (h, logdet, hs) if return_intermediates else (h, logdet)


def flow_log_prob(flow: ARFlow, params: list[dict], x: Float[Array, "B N C"], *, c: Array | None = None) -> Float[Array, " B"]:
    """Exact ``log p(x | c) = -||z||^2/2 - (D/2) log 2 pi + sum_k log|det df_k|`` (change of variables)."""
    z, logdet = flow_forward(flow, params, x, c=c)
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
    c: Array | None = None,
    guidance: float | Array | None = None,
    guidance_rule: Literal["product", "linear"] = "product",
) -> tuple[Array, dict]:
    """``x = f_1^{-1} o ... o f_T^{-1}(z)``.

    ``method`` inverts the global blocks (the deep block); ``shallow_method`` (default: ``method``)
    the frame-scoped blocks, whose Jacobi uses one chunk per frame (frames in parallel).
    ``chunk_sizes``, ``tol``, ``max_iter``, ``video_init``: see :func:`af_block_inverse` (global blocks).
    ``c``, ``guidance`` (our CFG scale ``w``: 1 conditional, 0 unconditional), ``guidance_rule``: class
    labels and classifier-free guidance in the conditioned blocks (:func:`guided_affine`); the
    unconditioned (shallow) blocks are inverted without guidance, as in STARFlow-V.

    Returns ``(x, info)``, ``info = {"iterations": [per-block (num_chunks,) arrays], "calls": total
    sequential transformer calls (int32), "calls_global": calls of the global blocks}``.
    """
    _check_tokens(flow, "z", z)
    _check_labels(flow, c, z.shape[0])
    _check_guidance(flow, guidance, guidance_rule, c)
    shallow_method = shallow_method or method
    cond = dict(c=c, guidance=guidance, guidance_rule=guidance_rule)
    h, its = z, [None] * len(params)
    for i in reversed(range(len(params))):
        if flow.blocks[i].scope == "frame":
            h, it = af_block_inverse(flow, i, params[i], h, method=shallow_method, tol=tol, max_iter=max_iter, **cond)
        else:
            h, it = af_block_inverse(flow, i, params[i], h, method=method, chunk_sizes=chunk_sizes, tol=tol,
                                     max_iter=max_iter, video_init=video_init, **cond)
        its[i] = it
    calls = sum(jnp.sum(it) for it in its)
    calls_global = sum((jnp.sum(it) for it, b in zip(its, flow.blocks) if b.scope == "global"), jnp.zeros((), jnp.int32))
    return h, {"iterations": its, "calls": calls, "calls_global": calls_global}


def flow_sample(flow: ARFlow, params: list[dict], key: Array, n: int, *, temperature: float = 1.0, **inverse_kwargs) -> tuple[Array, dict]:
    """``x = f^{-1}(z)``, ``z ~ N(0, temperature^2 I)`` (noisy samples ``x~``; denoise with :mod:`flowjax.nf.denoise`).

    ``inverse_kwargs`` go to :func:`flow_inverse` (``method``, ``c``, ``guidance``, ...)."""
    z = temperature * jax.random.normal(key, (n, flow.num_tokens, flow.channels), jnp.float32)
    return flow_inverse(flow, params, z, **inverse_kwargs)


def noise_level_to_time(sigma: float | Array) -> Array:
    """``t_sigma = 1/(1+sigma)`` (derived, spec 3.0): ``x~ = x + sigma eps`` equals ``x_t / t`` on the linear path with
    ``x0 = eps``, ``x1 = x``; so ``E[eps | x~] = E[x0 | x_t]``."""
    return 1.0 / (1.0 + jnp.asarray(sigma))
