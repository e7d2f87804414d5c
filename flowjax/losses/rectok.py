"""RecTok: tokenizer losses with flow semantic distillation (FSD) and reconstruction-alignment
distillation (RAD) along the rectified flow.

Shi et al., "RecTok: Reconstruction Distillation along Rectified Flow", arXiv 2512.13421 (spec
``rectok.md``). Conventions: the paper/code write ``x_t = (1 - t) x_0 + t eps`` with ``x_0`` the
*clean latent* and ``t = 1`` noise. In project time ``tau = 1 - t`` (``tau = 1`` clean latent =
the project's ``x1``, ``tau = 0`` noise = the project's ``x0``) the noised latent is

    z_tau = tau z + (1 - tau) gamma eps,          gamma = 1          (spec section 3.2)

What is the paper's (via the official code, as summarised in the spec; the paper text was not read):

* the shift schedule ``t = s t' / (1 + (s - 1) t')`` in code time with ``t' ~ U(0, 1)`` and
  ``s = sqrt(h w d / 4096)`` (here :func:`rectok_shift` and ``flowjax.timesteps.shifted``, which
  is the same map written in project time);
* MAE masking of the tokens: ``r ~ U(-0.1, 0.4)``, ``r <- max(r, 0)``, keep ``ceil((1 - r) N)``
  tokens chosen by a random shuffle, ``ids_restore`` = the inverse permutation;
* both the pixel decoder and the small semantic decoder read the *noisy visible* latent tokens
  (mask tokens inserted at the dropped positions) and the semantic decoder regresses the frozen
  VFM's patch features of the full image with ``L_sem = mean_tokens (1 - cos)`` over all tokens
  ("rec+align", the paper's best);
* ``L_tok = lambda_rec L_rec + lambda_KL KL + lambda_sem L_sem`` with ``lambda_rec = lambda_sem = 1``,
  ``lambda_KL = 1e-6``.

Ours / derived: LPIPS and the GAN term are omitted (no perceptual network or discriminator in a pure
loss; pass extra terms yourself); ``L_rec`` is pixel MSE (the code uses L1/L2); masking is expressed
by a boolean keep-mask of fixed shape (so it jits) rather than by gathering the kept tokens, and the
masked latent tokens are zeroed before the decoders see them (decoders put their learned mask token
there); ``normalize_latent`` (noise applied to the per-channel batch-normalised latent, statistics
under stop-gradient) is the spec's *derived* guard against the encoder scaling z up to outrun the
FSD noise (spec section 5); the ``"masked"`` / ``"visible"`` token subsets reproduce the paper's
RAD ablation rows ("reconstruction only" / "align only").

Stop-gradients: the teacher (VFM) features are wrapped in ``jax.lax.stop_gradient`` (frozen VFM,
``f = DINOv3(I)  (no grad)`` in the spec's pseudocode), so the distillation gradient reaches only the
tokenizer (encoder and decoders). The noise ``eps``, the time and the mask carry no gradient.
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from flowjax._checks import check_choice, check_float_array, check_positive_int
from flowjax.timesteps import TimeSampler, shifted, uniform

__all__ = [
    "rectok_shift",
    "shift_code_time",
    "sample_mask_ratio",
    "random_masking",
    "noise_latent",
    "semantic_distillation",
    "diagonal_gaussian_kl",
    "rectok_loss",
]

SEMANTIC_TOKENS = ("all", "masked", "visible")


def rectok_shift(num_tokens: int, channels: int, *, base: float = 4096.0) -> float:
    """Resolution shift ``s = sqrt(h w d / base)`` (paper's ``base = 4096``; 16x16x128 gives ``sqrt(8)``)."""
    check_positive_int("num_tokens", num_tokens)
    check_positive_int("channels", channels)
    if base <= 0:
        raise ValueError(f"`base` must be positive, got {base}.")
    return math.sqrt(num_tokens * channels / base)


def shift_code_time(t: Array, shift: float) -> Array:
    """The paper's shift in *code* time (t = 1 noise): ``t -> s t / (1 + (s - 1) t)``.

    Fixes 0 and 1, monotone for ``s > 0``; ``s > 1`` pushes t towards noise. In project time use
    ``flowjax.timesteps.shifted(base, s)``, the same map applied to ``1 - t``.
    """
    if shift <= 0:
        raise ValueError(f"`shift` must be positive, got {shift}.")
    t = jnp.asarray(t)
    return shift * t / (1.0 + (shift - 1.0) * t)


def sample_mask_ratio(key: Array, shape: tuple[int, ...] = (), *, low: float = -0.1, high: float = 0.4) -> Array:
    """``r ~ U(low, high)`` clamped at 0 (paper: U(-0.1, 0.4), so ``P(r = 0) = 0.2``)."""
    if not high >= low:
        raise ValueError(f"`high` must be >= `low`, got low={low}, high={high}.")
    r = jax.random.uniform(key, shape, minval=low, maxval=high)
    return jnp.maximum(r, 0.0)


def random_masking(key: Array, batch: int, num_tokens: int, ratio: Array | float) -> tuple[Array, Array, Array]:
    """MAE random masking as a fixed-shape keep-mask.

    A uniform shuffle per sample (``ids_shuffle = argsort(noise)``, ``ids_restore =
    argsort(ids_shuffle)``, MAE/RecTok code); the first ``ceil((1 - r) N)`` shuffled tokens are kept.

    Args:
      key: PRNG key.
      batch, num_tokens: ``B`` and ``N``.
      ratio: mask ratio ``r`` in ``[0, 1)``, a scalar (one per batch, as in the code) or ``(B,)``.

    Returns:
      ``(keep, ids_shuffle, ids_restore)``: ``keep (B, N)`` boolean (True = visible), the shuffle
      and its inverse, ``(B, N)`` int32. ``keep[b, n] = ids_restore[b, n] < n_keep[b]``.
    """
    check_positive_int("batch", batch)
    check_positive_int("num_tokens", num_tokens)
    ratio = jnp.broadcast_to(jnp.asarray(ratio, jnp.float32), (batch,))
    noise = jax.random.uniform(key, (batch, num_tokens))
    ids_shuffle = jnp.argsort(noise, axis=1).astype(jnp.int32)
    ids_restore = jnp.argsort(ids_shuffle, axis=1).astype(jnp.int32)
    # ceil((1 - r) N) with a small guard so that r = 0.25, N = 4 keeps exactly 3 (float rounding)
    n_keep = jnp.ceil((1.0 - ratio) * num_tokens - 1e-6).astype(jnp.int32)
    keep = ids_restore < n_keep[:, None]
    return keep, ids_shuffle, ids_restore


def noise_latent(key: Array, z: Array, tau: Array, *, gamma: float = 1.0) -> tuple[Array, Array]:
    """Forward rectified-flow noising in project time: ``z_tau = tau z + (1 - tau) gamma eps``.

    Equals the code's ``z_t = (1 - t) z + t gamma eps`` with ``t = 1 - tau``. ``tau`` is ``(B,)``.
    Returns ``(z_tau, eps)``.
    """
    check_float_array("z", z, min_ndim=2)
    tau = jnp.asarray(tau, z.dtype)
    if tau.shape != (z.shape[0],):
        raise ValueError(f"`tau` must have shape ({z.shape[0]},), got {tau.shape}.")
    eps = jax.random.normal(key, z.shape, z.dtype)
    tb = tau.reshape((-1,) + (1,) * (z.ndim - 1))
    return tb * z + (1.0 - tb) * gamma * eps, eps


def semantic_distillation(
    pred: Float[Array, "b n d"],
    teacher: Float[Array, "b n d"],
    *,
    keep: Array | None = None,
    tokens: str = "all",
    eps: float = 1e-8,
) -> Array:
    """``L_sem = mean over selected tokens of (1 - cos(pred_bn, teacher_bn))`` (RecTok L_sem).

    ``tokens``: ``"all"`` (the paper's "rec+align": masked and visible tokens), ``"masked"``
    (reconstruction only; needs ``keep``), ``"visible"`` (align only). If no token is selected
    (e.g. ``"masked"`` with ``r = 0``) the loss is 0 with zero gradient. The teacher is
    stop-gradient (frozen VFM). Bounded in ``[0, 2]``, invariant to positive scaling of ``pred``.
    """
    check_choice("tokens", tokens, SEMANTIC_TOKENS)
    check_float_array("pred", pred, ndim=3)
    check_float_array("teacher", teacher, ndim=3)
    if pred.shape != teacher.shape:
        raise ValueError(f"`pred` and `teacher` must have the same shape, got {pred.shape} and {teacher.shape}.")
    teacher = jax.lax.stop_gradient(teacher)  # frozen VFM target: f = E_VFM(I), no grad (spec 3.3)
    pn = pred / jnp.maximum(jnp.linalg.norm(pred, axis=-1, keepdims=True), eps)
    tn = teacher / jnp.maximum(jnp.linalg.norm(teacher, axis=-1, keepdims=True), eps)
    per_token = 1.0 - jnp.sum(pn * tn, axis=-1)  # (b, n)
    if tokens == "all":
        return jnp.mean(per_token)
    if keep is None:
        raise ValueError(f"`keep` (the visible-token mask) is required for tokens={tokens!r}.")
    if keep.shape != per_token.shape:
        raise ValueError(f"`keep` must have shape {per_token.shape}, got {keep.shape}.")
    w = jnp.where(keep, 0.0, 1.0) if tokens == "masked" else jnp.where(keep, 1.0, 0.0)
    w = w.astype(per_token.dtype)
    return jnp.sum(w * per_token) / jnp.maximum(jnp.sum(w), 1.0)


def diagonal_gaussian_kl(mean: Array, logvar: Array) -> Array:
    """``KL(N(mean, exp(logvar)) || N(0, I))`` summed over non-batch axes, averaged over the batch."""
    kl = 0.5 * (mean**2 + jnp.exp(logvar) - 1.0 - logvar)
    return jnp.mean(jnp.sum(kl.reshape(kl.shape[0], -1), axis=-1))


def rectok_loss(
    encode_fn: Callable[[Array, Array], tuple[Array, Array | None]],
    decode_fn: Callable[[Array, Array], Array],
    semantic_fn: Callable[[Array, Array], Array],
    key: Array,
    x1: Array,
    *,
    teacher_features: Float[Array, "b n dt"],
    time_sampler: TimeSampler | None = None,
    shift: float | None = None,
    gamma: float = 1.0,
    flow_noise: bool = True,
    masking: bool = True,
    mask_low: float = -0.1,
    mask_high: float = 0.4,
    semantic_tokens: str = "all",
    rec_weight: float = 1.0,
    kl_weight: float = 1e-6,
    sem_weight: float = 1.0,
    normalize_latent: bool = False,
    sample_posterior: bool = True,
) -> tuple[Array, dict]:
    """RecTok tokenizer loss (stage 1): FSD + RAD + reconstruction + KL (LPIPS/GAN omitted, ours).

    Per batch (spec section 3 pseudocode, project time):

        keep          = MAE mask with r = max(U(mask_low, mask_high), 0)        (RAD)
        mean, logvar  = encode_fn(x1, keep);  z = mean + exp(logvar / 2) eps'   (posterior sample)
        tau           ~ time_sampler  (default: shifted(U, s), s = rectok_shift(N, d))
        z_tau         = tau z + (1 - tau) gamma eps;   masked tokens zeroed     (FSD)
        rec = decode_fn(z_tau, keep);  f_hat = semantic_fn(z_tau, keep)
        L = rec_weight mse(rec, x1) + kl_weight KL + sem_weight mean(1 - cos(f_hat, sg(f)))

    Args:
      encode_fn: ``(x1, keep) -> (mean, logvar)`` latent tokens ``(B, N, d)`` each; ``logvar``
        may be None for a deterministic encoder (then no KL and no posterior sampling).
      decode_fn: pixel decoder ``(z_tau, keep) -> image like x1``; must use its mask token where
        ``~keep`` (the masked positions arrive as zeros).
      semantic_fn: semantic decoder ``(z_tau, keep) -> (B, N, D)`` (keep it weak; paper ~1.5M params).
      key: PRNG key.
      x1: image batch.
      teacher_features: frozen VFM features ``(B, N, D)`` of the full image (stop-gradient).
      time_sampler: project-time sampler ``fn(key, n) -> tau``; default the paper's shift schedule.
      shift: ``s`` for the default sampler (default ``rectok_shift(N, d)``).
      gamma: noise scale (paper 1).
      flow_noise: False = distil at the clean latent only (the paper's "alignment at x0" ablation).
      masking: False = no RAD masking (all tokens visible).
      mask_low, mask_high: mask-ratio range (paper -0.1, 0.4).
      semantic_tokens: ``"all"`` (paper), ``"masked"`` or ``"visible"`` (ablations).
      rec_weight, kl_weight, sem_weight: lambda_rec = 1, lambda_KL = 1e-6, lambda_sem = 1 (paper).
      normalize_latent: apply the noise to ``(z - m) / s`` with per-channel batch stats under
        stop-gradient (derived guard, spec section 5); the decoders then see the normalised latent.
      sample_posterior: sample z from the posterior (paper) or use its mean.

    Returns:
      ``(loss, aux)`` with ``rec, kl, sem, tau_mean, keep_fraction, latent_rms``.
    """
    check_float_array("x1", x1, min_ndim=2)
    check_float_array("teacher_features", teacher_features, ndim=3)
    check_choice("semantic_tokens", semantic_tokens, SEMANTIC_TOKENS)
    b = x1.shape[0]
    if teacher_features.shape[0] != b:
        raise ValueError(f"`teacher_features` must have batch size {b}, got shape {teacher_features.shape}.")
    n_tok = teacher_features.shape[1]
    k_r, k_mask, k_post, k_t, k_eps = jax.random.split(key, 5)

    if masking:
        ratio = sample_mask_ratio(k_r, low=mask_low, high=mask_high)
        keep, _, _ = random_masking(k_mask, b, n_tok, ratio)
    else:
        keep = jnp.ones((b, n_tok), bool)

    mean, logvar = encode_fn(x1, keep)
    check_float_array("encode_fn(x1)[0]", mean, ndim=3)
    if mean.shape[:2] != (b, n_tok):
        raise ValueError(f"encoder tokens {mean.shape[:2]} must match `teacher_features` tokens {(b, n_tok)}.")
    d = mean.shape[-1]
    if logvar is not None and sample_posterior:
        z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(k_post, mean.shape, mean.dtype)
    else:
        z = mean
    kl = diagonal_gaussian_kl(mean, logvar) if logvar is not None else jnp.zeros((), mean.dtype)

    if normalize_latent:  # derived guard (spec section 5): stats are constants (stop-gradient)
        m = jax.lax.stop_gradient(jnp.mean(z, axis=(0, 1), keepdims=True))
        s = jax.lax.stop_gradient(jnp.std(z, axis=(0, 1), keepdims=True)) + 1e-6
        z = (z - m) / s

    if flow_noise:
        sampler = time_sampler if time_sampler is not None else shifted(uniform(), shift if shift is not None else rectok_shift(n_tok, d))
        tau = sampler(k_t, b).astype(z.dtype)
        z_t, _ = noise_latent(k_eps, z, tau, gamma=gamma)  # FSD: distil along the forward flow
    else:
        tau = jnp.ones((b,), z.dtype)
        z_t = z
    z_t = jnp.where(keep[:, :, None], z_t, 0.0)  # decoders see only the visible tokens (RAD)

    rec = decode_fn(z_t, keep)
    if rec.shape != x1.shape:
        raise ValueError(f"decode_fn output shape {rec.shape} must equal `x1` shape {x1.shape}.")
    rec_loss = jnp.mean((rec - x1) ** 2)
    f_hat = semantic_fn(z_t, keep)
    sem = semantic_distillation(f_hat, teacher_features, keep=keep, tokens=semantic_tokens)
    loss = rec_weight * rec_loss + kl_weight * kl + sem_weight * sem
    aux = {
        "rec": rec_loss,
        "kl": kl,
        "sem": sem,
        "tau_mean": jnp.mean(tau),
        "keep_fraction": jnp.mean(keep.astype(z.dtype)),
        "latent_rms": jnp.sqrt(jnp.mean(jax.lax.stop_gradient(mean) ** 2)),
    }
    return loss, aux
