"""Synthetic image sequences for the physical-flow methods: translating textures and a tiny-UAV video.

Ours (spec ``reynoldsflow.md`` §5 describes the data; the generator code and its details are
ours): smooth "cloud" textures are periodic Gaussian-filtered white noise; translation is either
exact (Fourier shift, ``f^{n}(x) = f^0(x - n d)`` on the torus) or bilinear with wrap-around;
targets are tiny Gaussian blobs bouncing off the borders.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.ndimage import map_coordinates
from jaxtyping import Array, Float

__all__ = ["smooth_texture", "fourier_shift", "bilinear_shift", "translating_texture_sequence", "tiny_uav_video"]


def smooth_texture(key: jax.Array, size: int, *, sigma: float = 4.0, contrast: float = 0.3,
                   mean: float = 0.5) -> Float[Array, "size size"]:
    """Periodic white noise blurred by a Gaussian of std ``sigma`` px, scaled to range ``contrast``
    around ``mean``."""
    noise = jax.random.normal(key, (size, size))
    k = jnp.fft.fftfreq(size)
    k2 = k[:, None] ** 2 + k[None, :] ** 2
    blurred = jnp.real(jnp.fft.ifft2(jnp.fft.fft2(noise) * jnp.exp(-2.0 * (jnp.pi * sigma) ** 2 * k2)))
    blurred = blurred - jnp.mean(blurred)
    return mean + contrast * blurred / (jnp.max(blurred) - jnp.min(blurred))


def fourier_shift(f: Float[Array, "H W"], d: Float[Array, "2"]) -> Float[Array, "H W"]:
    """Exact periodic translation ``g(x) = f(x - d)`` with ``d = (d_x, d_y)`` (column, row) in pixels."""
    h, w = f.shape
    ky = jnp.fft.fftfreq(h)[:, None]
    kx = jnp.fft.fftfreq(w)[None, :]
    phase = jnp.exp(-2j * jnp.pi * (kx * d[0] + ky * d[1]))
    return jnp.real(jnp.fft.ifft2(jnp.fft.fft2(f) * phase))


def bilinear_shift(f: Float[Array, "H W"], d: Float[Array, "2"]) -> Float[Array, "H W"]:
    """Bilinear translation ``g(x) = f(x - d)`` with wrap-around (a camera pan)."""
    h, w = f.shape
    rows, cols = jnp.meshgrid(jnp.arange(h, dtype=f.dtype), jnp.arange(w, dtype=f.dtype), indexing="ij")
    return map_coordinates(f, [rows - d[1], cols - d[0]], order=1, mode="wrap")


def translating_texture_sequence(key: jax.Array, *, num_frames: int, size: int, velocity,
                                 sigma: float = 4.0, contrast: float = 0.3) -> Float[Array, "T size size"]:
    """Frames ``f^n(x) = f^0(x - n * velocity)`` of a smooth periodic texture (exact Fourier shift)."""
    f0 = smooth_texture(key, size, sigma=sigma, contrast=contrast)
    vel = jnp.asarray(velocity, f0.dtype)
    return jnp.stack([fourier_shift(f0, n * vel) for n in range(num_frames)])


def _reflect(p, lo, hi):
    span = hi - lo
    y = jnp.mod(p - lo, 2.0 * span)
    return lo + jnp.where(y > span, 2.0 * span - y, y)


def tiny_uav_video(key: jax.Array, *, num_frames: int = 20, size: int = 64, max_targets: int = 3,
                   blob_sigma: float = 0.8, contrast_range=(0.08, 0.15), speed_range=(1.0, 3.0),
                   pan_range=(0.3, 0.7), cloud_sigma: float = 4.0, cloud_contrast: float = 0.3,
                   flicker: float = 0.05, flicker_period: float = 7.0, noise: float = 0.01):
    """Synthetic "tiny UAV" grayscale video (spec §5).

    Returns ``(frames (T, size, size) in [0, 1], centres (T, max_targets, 2) as (x, y), valid (max_targets,) bool)``.
    Clouds pan at 0.3-0.7 px/frame (bilinear), global flicker ``(1 + 0.05 sin(2 pi n / 7))``, sensor
    noise 0.01, 1..max_targets Gaussian blobs (std 0.8 px, contrast +-0.08..0.15) moving 1-3 px/frame,
    bouncing off a 3-px margin.
    """
    ks = jax.random.split(key, 9)
    bg = smooth_texture(ks[0], size, sigma=cloud_sigma, contrast=cloud_contrast)
    pan_ang = jax.random.uniform(ks[1], (), minval=0.0, maxval=2 * jnp.pi)
    pan_speed = jax.random.uniform(ks[2], (), minval=pan_range[0], maxval=pan_range[1])
    pan = pan_speed * jnp.stack([jnp.cos(pan_ang), jnp.sin(pan_ang)])
    n_targets = jax.random.randint(ks[3], (), 1, max_targets + 1)
    valid = jnp.arange(max_targets) < n_targets
    margin = 3.0
    p0 = jax.random.uniform(ks[4], (max_targets, 2), minval=margin, maxval=size - 1 - margin)
    ang = jax.random.uniform(ks[5], (max_targets,), minval=0.0, maxval=2 * jnp.pi)
    speed = jax.random.uniform(ks[6], (max_targets,), minval=speed_range[0], maxval=speed_range[1])
    vel = speed[:, None] * jnp.stack([jnp.cos(ang), jnp.sin(ang)], axis=-1)
    amp = jax.random.uniform(ks[7], (max_targets,), minval=contrast_range[0], maxval=contrast_range[1])
    amp = amp * jnp.where(jax.random.bernoulli(ks[8], 0.5, (max_targets,)), 1.0, -1.0) * valid
    n = jnp.arange(num_frames, dtype=bg.dtype)
    centres = _reflect(p0[None] + n[:, None, None] * vel[None], margin, size - 1 - margin)  # (T, K, 2)
    rows, cols = jnp.meshgrid(jnp.arange(size, dtype=bg.dtype), jnp.arange(size, dtype=bg.dtype), indexing="ij")

    def frame(i, c):
        f = bilinear_shift(bg, i * pan)
        d2 = (cols[None] - c[:, 0, None, None]) ** 2 + (rows[None] - c[:, 1, None, None]) ** 2
        f = f + jnp.sum(amp[:, None, None] * jnp.exp(-0.5 * d2 / blob_sigma**2), axis=0)
        return (1.0 + flicker * jnp.sin(2.0 * jnp.pi * i / flicker_period)) * f

    frames = jax.vmap(frame)(n, centres)
    frames = frames + noise * jax.random.normal(jax.random.fold_in(key, 99), frames.shape)
    return jnp.clip(frames, 0.0, 1.0), centres, valid
