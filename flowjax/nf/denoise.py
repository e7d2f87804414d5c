"""Noise augmentation, the NF loss, and the two denoising steps of TarFlow/STARFlow(-V).

Papers: TarFlow (arXiv:2412.06329: Gaussian noise augmentation + score-based denoising),
STARFlow-V (arXiv:2511.20462: flow-score matching, a learned causal denoiser). Spec
``shared/papers/starflow-v.md`` sections 3.2, 3.5, 3.6.

The flow models ``p_sigma``, the density of the augmented data ``x~ = x + sigma eps``. Tweedie:
``E[x | x~] = x~ + sigma^2 grad log p_sigma(x~)`` and ``E[eps | x~] = -sigma grad log p_sigma(x~)``.
In project terms (derived, spec 3.0): ``x~ = x_t / t`` on the linear path with ``t = 1/(1+sigma)``,
``x0 = eps``, ``x1 = x``, so ``E[eps | x~] = E[x0 | x_t]``.

- Self-denoise (TarFlow/STARFlow code): ``x^ = x~ + sigma^2 grad_x~ log p_theta(x~)``: one backward
  pass through the whole flow. For a causal flow this gradient on frame ``f`` contains the
  conditionals of every later frame, so it is *not* causal (spec 3.6, derived).
- Flow-score matching (STARFlow-V): a light denoiser ``d_phi`` regresses the flow's scaled score
  ``s* = sg(-sigma grad log p_theta(x~))`` (an eps-prediction) with
  ``L_FSM = mean ||d_phi(x~) - s*||^2``; at inference ``x^ = x~ - sigma d_phi(x~)``. The target is
  stop-gradient to the flow (the denoiser never trains theta). The code gets ``s*`` for free from
  the NLL backward: ``s* = sigma * numel * dL_NF/dx~`` (:func:`fsm_target_from_loss_grad`).
  The code uses a fixed 0.3 in place of sigma in the inference step; we use sigma (spec).
- :class:`CausalDenoiser`: our small transformer for ``d_phi``: block-causal over frames with a
  ``lookahead`` of frames (the code's ``temporal_causal = 2`` is a one-frame lookahead per layer;
  ``lookahead=0`` is strictly causal). The code's attention window (10 frames) is not modelled
  (our videos are shorter than it).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from flowjax import _checks
from flowjax.nets.embeddings import sincos_embedding_1d
from flowjax.nets.transformer_layers import AdaLNBlock, FinalLayer, dense

__all__ = [
    "nf_loss",
    "nf_loss_value",
    "flow_score",
    "self_denoise",
    "fsm_target",
    "fsm_target_from_loss_grad",
    "fsm_loss",
    "fsm_denoise",
    "CausalDenoiser",
]

ForwardFn = Callable[[Array], tuple[Array, Array]]  # x~ (B, N, C) -> (z, logdet (B,))
LogProbFn = Callable[[Array], Array]  # x~ -> log p (B,)


def _check_sigma(sigma: float) -> None:
    if not (isinstance(sigma, (int, float)) and sigma > 0):
        raise ValueError(f"`sigma` must be a positive float, got {sigma!r}.")


def nf_loss_value(forward_fn: ForwardFn, x_tilde: Array) -> tuple[Array, dict]:
    """``L_NF = mean_batch (1/D)[ ||z||^2/2 - sum_k log|det df_k| ]`` on given (augmented) data."""
    z, logdet = forward_fn(x_tilde)
    b = x_tilde.shape[0]
    d = math.prod(x_tilde.shape[1:])
    sq = 0.5 * jnp.sum(z.reshape(b, -1).astype(jnp.float32) ** 2, axis=-1)
    loss = jnp.mean((sq - logdet) / d)
    nll = loss + 0.5 * math.log(2 * math.pi)  # per-dim NLL in nats of x~
    return loss, {"nll_per_dim": nll, "logdet_per_dim": jnp.mean(logdet) / d, "z_sq_per_dim": jnp.mean(sq) / d}


def nf_loss(forward_fn: ForwardFn, key: Array, x1: Float[Array, "B N C"], *, sigma: float = 0.3) -> tuple[Array, dict]:
    """Noise-augmented NF maximum likelihood (TarFlow sec. noise augmentation; STARFlow ``sigma = 0.3``).

    ``x~ = x1 + sigma eps``; ``L_NF = mean_batch (1/D)[||f(x~)||^2/2 - sum_k log|det df_k(x~)|]``
    (the spec's per-dimension loss; ``+ log(2 pi)/2`` gives the NLL per dimension in nats, reported
    as ``aux["nll_per_dim"]``). ``sigma = 0`` trains on ``x1`` itself (pass dequantised data).

    Args:
      forward_fn: ``x -> (z, logdet (B,))`` closing over the flow's parameters.
      key: PRNG key for the augmentation noise.
      x1: clean data ``(B, ...)``.
      sigma: augmentation std (TarFlow 0.05 pixels, STARFlow 0.3, STARFlow-V 0.5 latents).
    """
    _checks.check_float_array("x1", x1, min_ndim=2)
    if not (isinstance(sigma, (int, float)) and sigma >= 0):
        raise ValueError(f"`sigma` must be a float >= 0, got {sigma!r}.")
    x_tilde = x1 + sigma * jax.random.normal(key, x1.shape, x1.dtype)
    return nf_loss_value(forward_fn, x_tilde)


def flow_score(log_prob_fn: LogProbFn, x_tilde: Array) -> Array:
    """Per-sample ``grad_x~ log p_theta(x~)`` (gradient of the batch sum; samples are independent)."""
    return jax.grad(lambda x: jnp.sum(log_prob_fn(x)))(x_tilde)


def self_denoise(log_prob_fn: LogProbFn, x_tilde: Array, *, sigma: float, lr: float = 1.0) -> Array:
    """TarFlow's score-based denoising step ``x^ = x~ + lr sigma^2 grad log p_theta(x~)`` (``lr = 1``: Tweedie)."""
    _check_sigma(sigma)
    return x_tilde + lr * sigma**2 * flow_score(log_prob_fn, x_tilde).astype(x_tilde.dtype)


def fsm_target(log_prob_fn: LogProbFn, x_tilde: Array, *, sigma: float) -> Array:
    """Flow-score-matching target ``s* = sg(-sigma grad log p_theta(x~))`` (STARFlow-V; approx. ``E[eps | x~]``)."""
    _check_sigma(sigma)
    # stop-gradient: the FSM target must not train the flow, nor be differentiated (spec 3.6).
    return jax.lax.stop_gradient(-sigma * flow_score(log_prob_fn, jax.lax.stop_gradient(x_tilde)))


def fsm_target_from_loss_grad(grad_loss_x: Array, *, sigma: float) -> Array:
    """The code's free target ``s* = sg(sigma * numel * dL_NF/dx~)`` from the gradient of the *batch-mean,
    per-dimension* NF loss (:func:`nf_loss_value`) with respect to ``x~`` (equals :func:`fsm_target`)."""
    _check_sigma(sigma)
    return jax.lax.stop_gradient(sigma * grad_loss_x.size * grad_loss_x)


def fsm_loss(denoiser_fn: Callable[[Array], Array], key: Array | None, x_tilde: Array, *, target: Array) -> tuple[Array, dict]:
    """``L_FSM = mean ||d_phi(x~) - sg[s*]||^2`` (STARFlow-V flow-score matching).

    ``x_tilde`` is the augmented batch the flow was trained on this step (the FSM regresses the
    flow's score there); ``target`` is :func:`fsm_target` or :func:`fsm_target_from_loss_grad`.
    ``key`` is unused (deterministic), kept for the project's loss signature.
    """
    del key
    _checks.check_same_shape("x_tilde", x_tilde, "target", target)
    pred = denoiser_fn(x_tilde)
    err = (pred.astype(jnp.float32) - jax.lax.stop_gradient(target).astype(jnp.float32)) ** 2
    loss = jnp.mean(err)
    return loss, {"fsm_mse": loss, "target_rms": jnp.sqrt(jnp.mean(target.astype(jnp.float32) ** 2))}


def fsm_denoise(denoiser_fn: Callable[[Array], Array], x_tilde: Array, *, sigma: float) -> Array:
    """FSM denoising ``x^ = x~ - sigma d_phi(x~)`` (Tweedie with the learned eps-prediction)."""
    _check_sigma(sigma)
    return x_tilde - sigma * denoiser_fn(x_tilde).astype(x_tilde.dtype)


class CausalDenoiser(nn.Module):
    """``d_phi``: block-causal transformer over frames, ``(B, F*S, C) -> (B, F*S, C)`` (zero-initialised output).

    A query in frame ``q`` attends to all tokens of frames ``<= q + lookahead`` (per layer, so an
    ``L``-layer net's output on frame ``q`` depends on frames up to ``q + L*lookahead``). The code's
    denoiser uses ``lookahead=1`` (``temporal_causal=2``); ``lookahead=0`` is strictly causal.
    """

    channels: int
    tokens_per_frame: int
    dim: int = 64
    depth: int = 2
    heads: int = 4
    mlp_ratio: float = 4.0
    lookahead: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        if x.ndim != 3 or x.shape[-1] != self.channels or x.shape[1] % self.tokens_per_frame:
            raise ValueError(f"CausalDenoiser expects x of shape (B, F*{self.tokens_per_frame}, {self.channels}), got {x.shape}.")
        b, n, _ = x.shape
        pos = jnp.arange(n, dtype=jnp.int32)
        qpos = jnp.minimum((pos // self.tokens_per_frame + 1 + self.lookahead) * self.tokens_per_frame - 1, n - 1)
        h = dense(self.dim, "in_proj", ("patch", "embed"))(x.astype(jnp.float32))
        h = h + sincos_embedding_1d(pos, self.dim)[None].astype(h.dtype)
        cond = jnp.broadcast_to(self.param("null_cond", nn.initializers.normal(0.02), (self.dim,))[None], (b, self.dim))
        for i in range(self.depth):
            h, _ = AdaLNBlock(self.dim, self.heads, None, self.mlp_ratio, False, None, None, self.dtype, name=f"block_{i}")(
                h, cond, causal=True, q_positions=qpos
            )
        return FinalLayer(self.channels, name="final")(h.astype(jnp.float32), cond).astype(x.dtype)
