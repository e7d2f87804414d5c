"""Conditioning for latent flow matching: inpainting (masked image as condition) and semantic maps.

Dao et al., "Flow Matching in Latent Space" (LFM), arXiv 2307.08698 (spec ``latent-fm.md`` sections 3.2-3.3,
from the official code). The paper's: the velocity net sees ``concat(z_t, c)`` with

* inpainting: ``c = concat(E(I * (1 - m)), resize(m))``, ``m = 1`` on the HOLE (missing pixels); the
  masked image is encoded *with the hole*; at sampling ``c`` is fixed and the ODE runs on ``z`` only;
* semantic-to-image: ``c = R_psi(onehot(S))`` (:class:`flowjax.nets.latent_conditioning.SpatialRescaler`,
  trained jointly).

Ours: for a flat latent (our MLP latent FM) the mask stays at pixel resolution and is flattened (spec
section 5, "the flat analogue of channel concatenation"); :func:`paste_known` puts the known pixels back
after decoding, so that the inpainted image equals the input on every known pixel exactly (the decoder
alone does not guarantee it); the null condition for classifier-free guidance is "everything missing"
(a zero image and an all-ones hole mask). Pure functions: ``encode_fn``/``decode_fn``/``v_fn`` are plain callables.

Baselines (ours, for the inpainting experiment): :func:`masked_pixel_condition` is the pixel-space
analogue of the condition (``concat(x * (1 - m), m)``, no encoder), and
:func:`latent_replacement_inpaint` is a training-free inpainting with an *unconditional* latent field:
the latent analogue of the projected-Euler replacement (the known pixels are imposed on the decoded
predicted endpoint at every step and re-encoded).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array

from flowjax._checks import check_float_array, check_positive_int

__all__ = [
    "half_masks",
    "inpainting_condition",
    "null_inpainting_condition",
    "concat_conditioned",
    "paste_known",
    "latent_conditional_sample",
    "latent_inpaint",
    "latent_replacement_inpaint",
    "masked_pixel_condition",
]


def half_masks(key: Array, n: int, height: int, width: int) -> Array:
    """Hole masks ``(n, H, W, 1)``: a random half (left / right / top / bottom) is missing (m = 1)."""
    check_positive_int("n", n)
    side = jax.random.randint(key, (n,), 0, 4)
    rows = jnp.arange(height)[None, :, None]
    cols = jnp.arange(width)[None, None, :]
    s = side[:, None, None]
    m = jnp.where(s == 0, cols < width // 2, jnp.where(s == 1, cols >= width // 2, jnp.where(s == 2, rows < height // 2, rows >= height // 2)))
    return m[..., None].astype(jnp.float32)


def _check_mask(x: Array, mask: Array) -> None:
    check_float_array("x", x, min_ndim=2)
    if mask.shape != x.shape:
        raise ValueError(f"`mask` must have the image's shape {x.shape} (1 = missing pixel), got {mask.shape}.")


def inpainting_condition(encode_fn: Callable[[Array], Array], x: Array, mask: Array) -> Array:
    """``c = concat(E(x * (1 - m)), m)`` flattened per sample: ``(n, latent + pixels)`` (LFM, flat analogue)."""
    _check_mask(x, mask)
    n = x.shape[0]
    z_masked = encode_fn(x * (1.0 - mask))  # the masked image is encoded with the hole (LFM code)
    return jnp.concatenate([z_masked.reshape(n, -1), mask.reshape(n, -1).astype(z_masked.dtype)], axis=-1)


def masked_pixel_condition(x: Array, mask: Array) -> Array:
    """Pixel-space condition ``concat(x * (1 - m), m)`` flattened per sample: ``(n, 2 * pixels)`` (ours).

    The hidden pixels enter only multiplied by ``1 - m = 0``, so the condition (and any net fed with it)
    does not depend on them: their gradient is exactly zero.
    """
    _check_mask(x, mask)
    n = x.shape[0]
    mask = mask.astype(x.dtype)
    return jnp.concatenate([(x * (1.0 - mask)).reshape(n, -1), mask.reshape(n, -1)], axis=-1)


def null_inpainting_condition(encode_fn: Callable[[Array], Array], x: Array) -> Array:
    """The condition of a fully missing image (for CFG label dropout): zero image, all-ones mask."""
    return inpainting_condition(encode_fn, jnp.zeros_like(x), jnp.ones_like(x))


def concat_conditioned(fn: Callable[..., Array]) -> Callable[..., Array]:
    """Turn an unconditional net ``fn(h, t)`` on ``h = concat(z, c)`` into ``v(z, t, c=c)`` (LFM's channel concat).

    ``fn`` must return an array shaped like ``z`` (e.g. ``MLP(out_dim=latent_dim)``).
    """

    def v(z, t, c=None):
        if c is None:
            raise ValueError("`c` (the condition) is required by a concat-conditioned velocity.")
        n = z.shape[0]
        out = fn(jnp.concatenate([z.reshape(n, -1), c.reshape(n, -1).astype(z.dtype)], axis=-1), t)
        return out.reshape(z.shape)

    return v


def paste_known(x_gen: Array, x_known: Array, mask: Array) -> Array:
    """``(1 - m) x_known + m x_gen``: keep every known pixel exactly (m = 1 on the hole)."""
    _check_mask(x_known, mask)
    if x_gen.shape != x_known.shape:
        raise ValueError(f"`x_gen` must have shape {x_known.shape}, got {x_gen.shape}.")
    return jnp.where(mask > 0.5, x_gen, x_known)


def latent_conditional_sample(
    v_fn: Callable[..., Array],
    key: Array,
    c: Array,
    *,
    latent_shape: tuple[int, ...],
    decode_fn: Callable[[Array], Array] | None = None,
    steps: int = 50,
    solver: str = "euler",
    guidance: float = 1.0,
    null_c: Array | None = None,
) -> Array:
    """Sample ``z1 = ODE(v(., t, c=c))`` from ``z0 ~ N(0, I)`` (t: 0 -> 1); optional CFG and decoding.

    With ``guidance != 1`` and ``null_c``, the field is ``v(z, t, null) + w (v(z, t, c) - v(z, t, null))``.
    The condition is constant along the ODE (computed once).
    """
    from flowjax import samplers

    n = c.shape[0]
    dtype = c.dtype if jnp.issubdtype(c.dtype, jnp.floating) else jnp.float32
    z0 = jax.random.normal(key, (n,) + tuple(latent_shape), dtype)
    if guidance != 1.0:
        if null_c is None:
            raise ValueError("`null_c` is required for guidance != 1.")

        def field(z, t, c):
            vc, vu = v_fn(z, t, c=c), v_fn(z, t, c=null_c)
            return vu + guidance * (vc - vu)
    else:
        field = v_fn
    z1 = samplers.ode(field, z0, solver=solver, steps=steps, c=c)
    return z1 if decode_fn is None else decode_fn(z1)


def latent_inpaint(
    v_fn: Callable[..., Array],
    key: Array,
    x_known: Array,
    mask: Array,
    *,
    encode_fn: Callable[[Array], Array],
    decode_fn: Callable[[Array], Array],
    latent_shape: tuple[int, ...],
    steps: int = 50,
    solver: str = "euler",
    guidance: float = 1.0,
) -> Array:
    """Inpaint ``x_known`` on the hole ``mask`` (1 = missing) with a concat-conditioned latent FM.

    ``c = inpainting_condition(E, x_known, m)``; ``z1`` from the ODE; ``x = paste_known(D(z1), x_known, m)``,
    so every known pixel is returned unchanged. ``v_fn(z, t, c=c)``.
    """
    _check_mask(x_known, mask)
    c = inpainting_condition(encode_fn, x_known, mask)
    null_c = null_inpainting_condition(encode_fn, x_known) if guidance != 1.0 else None
    x_gen = latent_conditional_sample(v_fn, key, c, latent_shape=latent_shape, decode_fn=decode_fn, steps=steps,
                                      solver=solver, guidance=guidance, null_c=null_c)
    return paste_known(x_gen, x_known, mask)


def latent_replacement_inpaint(
    v_fn: Callable[..., Array],
    key: Array,
    x_known: Array,
    mask: Array,
    *,
    encode_fn: Callable[[Array], Array],
    decode_fn: Callable[[Array], Array],
    latent_shape: tuple[int, ...],
    steps: int = 50,
    return_unpasted: bool = False,
) -> Array | tuple[Array, Array]:
    """Training-free latent inpainting with an unconditional latent field ``v_fn(z, t)`` (ours, a baseline).

    Euler from ``z_0 ~ N(0, I)`` (t: 0 -> 1, ``steps`` steps of ``dt = 1/steps``). At each step the predicted
    endpoint ``z1_hat = z + (1 - t) v(z, t)`` is decoded, the known pixels are pasted in, and it is
    re-encoded: ``z1_hat <- E(paste_known(D(z1_hat), x_known, m))``; then ``z <- z + dt (z1_hat - z)/(1 - t)``.
    With ``E = D = identity`` this is exactly :func:`flowjax.samplers.projected_euler` with the
    known-pixel projector ``A x = (1 - m) x`` (``A^+ = A``), the pixel-space replacement baseline.

    Returns ``paste_known(D(z_1), x_known, m)`` (known pixels exact), and also the decoded ``D(z_1)``
    before pasting when ``return_unpasted``.
    """
    _check_mask(x_known, mask)
    check_positive_int("steps", steps)
    n = x_known.shape[0]
    z0 = jax.random.normal(key, (n,) + tuple(latent_shape), x_known.dtype)
    dt = 1.0 / steps

    def step(z, i):
        t = i * dt
        v = v_fn(z, jnp.full((n,), t, z.dtype))
        z1_hat = z + (1.0 - t) * v
        z1_hat = encode_fn(paste_known(decode_fn(z1_hat), x_known, mask)).reshape(z.shape)
        return z + dt * (z1_hat - z) / (1.0 - t), None

    z1, _ = jax.lax.scan(step, z0, jnp.arange(steps, dtype=z0.dtype))
    x_gen = decode_fn(z1)
    out = paste_known(x_gen, x_known, mask)
    return (out, x_gen) if return_unpasted else out
