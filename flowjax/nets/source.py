"""Learned condition-dependent source networks ``S_phi(c) -> (mu, log sigma^2)`` (CSFM, arXiv 2602.05951).

The paper's ``S_phi`` is a Perceiver over CLIP text tokens (256 learned queries, 8 layers, a mean head
reshaped to the 768x16x16 latent) with an optional log-variance head (bias initialised to 1.0,
clamped to [-10, 10]); the spec's minimal toy version is a per-class embedding table. Both are here:

- :class:`ClassConditionalSource`: ``labels (...,) -> (mu, logvar)`` of shape ``labels.shape + shape``;
- :class:`PerceiverSource`: ``tokens (B, L, Dc)`` (+ padding mask) ``-> (mu, logvar)`` of shape
  ``(B,) + shape``.

Both return ``(mu, logvar)`` with ``logvar = 0`` unless ``learn_logvar``, which is what
:func:`flowjax.losses.csfm` (``mu=``, ``logvar=``) and :func:`flowjax.sources.conditional_gaussian_source`
take, so either network can be used with the loss and the sampler.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp
from jaxtyping import Array

from flowjax import _checks
from flowjax.nets.transformer_layers import Attention, CrossAttention, SwiGLU, dense
from pallas_kernels.attention import BlockSizes


class ClassConditionalSource(nn.Module):
    """``c -> (mu_c, logvar_c)``: a learned mean per class (an embedding table), and optionally a
    learned per-class log-variance (bias init ``logvar_init``, code 1.0).

    Attributes:
      num_classes: number of classes (labels in ``[0, num_classes)``).
      shape: the per-sample data shape (e.g. ``(2,)`` or ``(8, 8, 1)``).
      learn_logvar: if False, ``logvar`` is returned as zeros (the paper's default fixed std 1).
      logvar_init: initial value of the learned log-variance (code 1.0).
      mean_init_std: std of the normal initialisation of the mean table (0 gives zeros, i.e. the
        standard N(0, I) source at initialisation).
    """

    num_classes: int
    shape: Sequence[int]
    learn_logvar: bool = False
    logvar_init: float = 1.0
    mean_init_std: float = 0.0

    @nn.compact
    def __call__(self, c: Array) -> tuple[Array, Array]:
        d = 1
        for s in self.shape:
            d *= int(s)
        init = nn.initializers.zeros if self.mean_init_std == 0 else nn.initializers.normal(self.mean_init_std)
        mu = nn.Embed(self.num_classes, d, embedding_init=init, name="mean")(c)
        if self.learn_logvar:
            lv = nn.Embed(self.num_classes, d, embedding_init=nn.initializers.constant(self.logvar_init),
                          name="logvar")(c)
        else:
            lv = jnp.zeros_like(mu)
        out_shape = tuple(c.shape) + tuple(int(s) for s in self.shape)
        return mu.reshape(out_shape), lv.reshape(out_shape)


PERCEIVER_READOUTS = ("tokens", "pool")


def _flat_size(shape: Sequence[int]) -> int:
    if len(tuple(shape)) == 0 or any(int(d) < 1 for d in shape):
        raise ValueError(f"`shape` must be a non-empty tuple of positive ints, got {tuple(shape)!r}.")
    return math.prod(int(d) for d in shape)


class PerceiverSource(nn.Module):
    """Perceiver source net ``S_phi``: condition tokens ``(B, L, Dc)`` -> ``(mu, logvar)`` over the data shape.

    CSFM (Kim, Park, Jeon & Kim, arXiv 2602.05951, §3.1 of spec ``conditional-source.md``): the source is
    ``q_phi(x0 | c) = N(mu_phi(c), sigma_phi(c)^2 I)`` with ``[mu, log sigma^2] = S_phi(c)``, sampled as
    ``x0 = mu + sigma * eps`` and trained jointly with the velocity net through the CSFM loss
    (:func:`flowjax.losses.csfm`). The paper's ``S_phi`` ("PerceiverVE", read in the released code
    ``src/stage2/text_encoders/perceiver_v2.py`` and ``configs/csfm.yaml``; the paper text was not read):

        h_ctx = W_in c + p_tok                               (input projection + learned 1-D positions)
        z^0   = learned queries (+ learned 2-D query positions)
        for each of `depth` layers (pre-norm, RMSNorm):
            z += CrossAttn(norm(z), norm(h_ctx), key-padding mask)
            z += SelfAttn(norm(z))
            z += SwiGLU(norm(z))
        mu     = W_mu norm(z)          (one output token per query, reshaped to the latent)
        logvar = W_lv norm(z)          (only when the std is learned; W_lv ~ N(0, 1e-4^2), bias 1.0)

    with 256 queries (16x16), 8 layers, width 768, 12 heads, MLP ratio 4, no dropout; the mean head's
    ``(B, 256, 768)`` output is the ``768 x 16 x 16`` RAE latent, query ``i`` being latent position ``i``.

    What is the paper's: the structure above, the ``tokens`` readout (query ``i`` emits the values of output
    token ``i``), the learned token positions (``max_tokens``), the log-variance head initialisation
    (``logvar_init``, code 1.0) and ``logvar = 0`` when the std is fixed (paper default ``fixed_std = 1``).

    What is ours:
    - Sizes are free (``num_latents``, ``dim``, ``depth``, ``heads``); defaults are toy-sized.
    - ``max_tokens=None`` (default) uses *no* token positions, so the output is invariant to permutations
      of the condition tokens (a set encoder, e.g. per-class token sets); set it for ordered sequences
      such as text (the paper's 77).
    - The learned queries and the paper's learned 2-D query position embedding are one table here (their
      sum is a single free parameter).
    - ``readout="pool"``: mean over the latents, RMSNorm, one linear map to ``prod(shape)``; lets a few latents
      serve a small data vector (e.g. 2-D toys) where one token per query does not fit.
    - ``mask`` is True for *valid* tokens (the code's ``key_padding_mask`` is True for *padding*). A sample
      whose tokens are all masked gets no cross-attention input (the kernel returns 0 for such rows), so its
      output is the same for any tokens: a built-in null condition ``mu_phi(empty)`` (e.g. for CFG).
    - Internal linear layers use the project's xavier-uniform init (code: truncated normal, std 0.02);
      queries and token positions are ``N(0, 0.02^2)`` as in the code.
    - Mean-head initialisation (``mean_init_std``): kernel ``N(0, mean_init_std^2 / dim)``, bias 0. The head
      input is RMS-normalised (unit RMS), so at initialisation each element of ``mu`` has standard deviation
      ``mean_init_std`` for any width. The code's ``trunc_normal(0.02)`` gives ``0.02 sqrt(768) = 0.55`` at
      its width, hence the default 0.5 here (the code's value would shrink to 0.11 at width 32). Reason: with a
      zero-initialised mean table, the scale-invariant alignment loss (gradient ~ 1/||mu||, orthogonal to mu)
      under Adam kept ``mu`` pinned near 0 and CSFM collapsed to the Gaussian-source baseline (measured in the
      conditional-source experiment, 2026-11-28). ``mean_init_std=0`` is allowed (the N(0, I) source at
      initialisation) but then the trunk gets no gradient through the mean head at the first step.
      Measured at smoke scale only (``python -m experiments.run conditional-source --preset smoke --set
      source_net=perceiver``; 1 seed, 200 steps, 8-class ring of radius 4), run (b) (fixed std, alignment):
      mean ``||mu_c||`` 4.18 with ``mean_init_std=0.5`` against 0.19 with 0 (0.0085 for the zero-initialised
      table), direction cosine to the class mean 0.999 in both Perceiver runs. A likely mechanism (not
      verified): at small ``||mu||`` the large alignment gradient fills Adam's second moment and so damps the
      radial, FM-driven updates.

    Attention runs through :func:`pallas_kernels.attention` (:class:`~flowjax.nets.transformer_layers.Attention`
    and :class:`~flowjax.nets.transformer_layers.CrossAttention`): fused Pallas on GPU/TPU, XLA on CPU;
    ``implementation`` overrides the choice.

    Attributes:
      shape: per-sample data shape (e.g. ``(2,)``, or ``(H, W, C)`` channels-last).
      num_latents: number of learned queries (paper 256).
      dim: latent width (paper 768).
      depth: number of (cross-attn, self-attn, SwiGLU) layers (paper 8).
      heads: attention heads (paper 12).
      mlp_ratio: SwiGLU width ratio (paper 4).
      max_tokens: learned 1-D token positions for up to this many tokens (paper 77); None = none.
      readout: ``"tokens"`` (paper: latent ``i`` emits ``prod(shape) / num_latents`` consecutive values of the
        flattened output, i.e. token ``i`` of a channels-last ``(H, W, C)`` latent when ``num_latents = H W``)
        or ``"pool"`` (ours, see above).
      learn_logvar: if False (paper default, fixed std 1), ``logvar`` is returned as zeros.
      logvar_init: bias of the log-variance head (code 1.0).
      mean_init_std: std of each element of ``mu`` at initialisation (ours, see above).
      implementation, block_sizes: passed to :func:`pallas_kernels.attention`.
      dtype: compute dtype of the attention/FFN layers (outputs are float32).

    Call: ``(c (B, L, Dc) float, mask (B, L) bool | None) -> (mu, logvar)``, each ``(B,) + shape``.

    Example::

        src = PerceiverSource(shape=(2,), num_latents=4, dim=32, depth=1, heads=2, readout="pool")
        params = src.init(key, tokens, mask)
        mu, logvar = src.apply(params, tokens, mask)
        loss, aux = flowjax.losses.csfm(v_fn, key, x1, mu=mu, logvar=logvar)
    """

    shape: Sequence[int]
    num_latents: int = 8
    dim: int = 64
    depth: int = 2
    heads: int = 4
    mlp_ratio: float = 4.0
    max_tokens: int | None = None
    readout: str = "tokens"
    learn_logvar: bool = False
    logvar_init: float = 1.0
    mean_init_std: float = 0.5
    implementation: str | None = None
    block_sizes: BlockSizes | None = None
    dtype: Any = jnp.float32

    def _validate(self, c, mask):
        for name in ("num_latents", "dim", "depth", "heads"):
            _checks.check_positive_int(name, getattr(self, name))
        if self.dim % self.heads:
            raise ValueError(f"`dim` ({self.dim}) must be divisible by `heads` ({self.heads}).")
        _checks.check_choice("readout", self.readout, PERCEIVER_READOUTS)
        d = _flat_size(self.shape)
        if self.readout == "tokens" and d % self.num_latents:
            raise ValueError(
                f'readout="tokens" needs prod(shape) ({d}) divisible by `num_latents` ({self.num_latents}); '
                'change num_latents or use readout="pool".')
        if not (self.mean_init_std >= 0 and math.isfinite(self.mean_init_std)):
            raise ValueError(f"`mean_init_std` must be finite and >= 0, got {self.mean_init_std}.")
        _checks.check_float_array("c", c, ndim=3)
        b, length, _ = c.shape
        if length < 1:
            raise ValueError(f"`c` must hold at least one token (shape (B, L, Dc)), got {tuple(c.shape)}.")
        if self.max_tokens is not None:
            _checks.check_positive_int("max_tokens", self.max_tokens)
            if length > self.max_tokens:
                raise ValueError(f"`c` has {length} tokens but `max_tokens` is {self.max_tokens}.")
        if mask is not None:
            if not hasattr(mask, "shape") or tuple(mask.shape) != (b, length):
                raise ValueError(f"`mask` must have shape (B, L) = {(b, length)}, got "
                                 f"{tuple(getattr(mask, 'shape', ()))!r}.")
            if mask.dtype != jnp.bool_:
                raise TypeError(f"`mask` must be boolean (True = valid token), got {mask.dtype}.")
        return d

    @nn.compact
    def __call__(self, c: Array, mask: Array | None = None) -> tuple[Array, Array]:
        d = self._validate(c, mask)
        b, length, _ = c.shape
        ctx = dense(self.dim, "input_proj", (None, "embed"), dtype=self.dtype)(c)
        if self.max_tokens is not None:
            pos = self.param("token_pos", nn.initializers.normal(0.02), (self.max_tokens, self.dim))
            ctx = ctx + pos[None, :length].astype(ctx.dtype)
        lat = self.param("latents", nn.initializers.normal(0.02), (self.num_latents, self.dim))
        z = jnp.broadcast_to(lat[None], (b, self.num_latents, self.dim)).astype(jnp.float32)
        norm = lambda name: nn.RMSNorm(epsilon=1e-6, name=name)  # noqa: E731
        for i in range(self.depth):
            xa = CrossAttention(self.dim, self.heads, implementation=self.implementation,
                                block_sizes=self.block_sizes, dtype=self.dtype, name=f"cross_{i}")
            z = z + xa(norm(f"norm_q_{i}")(z).astype(self.dtype), norm(f"norm_ctx_{i}")(ctx).astype(self.dtype),
                       mask=mask).astype(z.dtype)
            sa = Attention(self.dim, self.heads, implementation=self.implementation, block_sizes=self.block_sizes,
                           dtype=self.dtype, name=f"self_{i}")
            z = z + sa(norm(f"norm_sa_{i}")(z).astype(self.dtype))[0].astype(z.dtype)
            z = z + SwiGLU(self.dim, self.mlp_ratio, dtype=self.dtype, name=f"ffn_{i}")(
                norm(f"norm_ffn_{i}")(z).astype(self.dtype)).astype(z.dtype)
        if self.readout == "pool":
            h = norm("norm_out")(jnp.mean(z, axis=1))          # (B, dim)
            per = d
        else:
            h = norm("norm_out")(z)                              # (B, num_latents, dim)
            per = d // self.num_latents
        mean_kinit = (nn.initializers.zeros if self.mean_init_std == 0
                      else nn.initializers.normal(self.mean_init_std / math.sqrt(self.dim)))
        mu = nn.Dense(per, kernel_init=mean_kinit, bias_init=nn.initializers.zeros, name="mean_head")(h)
        out_shape = (b,) + tuple(int(s) for s in self.shape)
        mu = mu.reshape(out_shape).astype(jnp.float32)
        if self.learn_logvar:
            lv = nn.Dense(per, kernel_init=nn.initializers.normal(1e-4),
                          bias_init=nn.initializers.constant(self.logvar_init), name="logvar_head")(h)
            lv = lv.reshape(out_shape).astype(jnp.float32)
        else:
            lv = jnp.zeros_like(mu)
        return mu, lv


__all__ = ["ClassConditionalSource", "PerceiverSource", "PERCEIVER_READOUTS"]
