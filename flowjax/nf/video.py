"""Small synthetic videos and patch tokenisation for the autoregressive flows (ours).

``drifting_digits`` is the spec's section-5 data (``shared/papers/starflow-v.md``): sklearn 8x8
digits rolled horizontally by ``floor(f / shift_every)`` pixels in frame ``f`` plus a little noise,
so consecutive frames are highly redundant (the temporal redundancy that STARFlow-V's
video-aware Jacobi initial guess exploits).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from flowjax import _checks

__all__ = ["drifting_digits", "patchify_video", "unpatchify_video"]


def drifting_digits(key: Array, images: Float[Array, "n H W c"], *, num_frames: int = 4, shift_every: int = 2,
                    noise: float = 0.02) -> Float[Array, "n F H W c"]:
    """Videos ``v[:, f] = roll(image, floor(f / shift_every), axis=W) + noise * eps`` (values as ``images``)."""
    _checks.check_float_array("images", images, ndim=4)
    _checks.check_positive_int("num_frames", num_frames)
    _checks.check_positive_int("shift_every", shift_every)
    frames = [jnp.roll(images, f // shift_every, axis=2) for f in range(num_frames)]
    v = jnp.stack(frames, axis=1)
    return v + noise * jax.random.normal(key, v.shape, v.dtype)


def patchify_video(v: Float[Array, "n F H W c"], patch: int) -> Float[Array, "n N C"]:
    """``(n, F, H, W, c) -> (n, F*(H/p)*(W/p), p*p*c)`` tokens ordered (frame, row, col)."""
    _checks.check_float_array("v", v, ndim=5)
    n, f, h, w, c = v.shape
    if h % patch or w % patch:
        raise ValueError(f"`patch` ({patch}) must divide the frame size {h}x{w}.")
    x = v.reshape(n, f, h // patch, patch, w // patch, patch, c).transpose(0, 1, 2, 4, 3, 5, 6)
    return x.reshape(n, f * (h // patch) * (w // patch), patch * patch * c)


def unpatchify_video(x: Float[Array, "n N C"], *, num_frames: int, height: int, width: int, patch: int) -> Float[Array, "n F H W c"]:
    """Inverse of :func:`patchify_video`."""
    n = x.shape[0]
    hp, wp = height // patch, width // patch
    c = x.shape[-1] // (patch * patch)
    v = x.reshape(n, num_frames, hp, wp, patch, patch, c).transpose(0, 1, 2, 4, 3, 5, 6)
    return v.reshape(n, num_frames, height, width, c)
