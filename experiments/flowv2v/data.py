"""Synthetic non-rigid shape videos with analytic flow and exact "edited" targets (spec flowv2v.md §5; code ours).

Frames ``(N, S, S, 3)`` in [0, 1]: a static low-frequency background and one coloured shape whose
local coordinates ``u`` map to ``p = c_i + A_i u`` at frame ``i``, with ``A_i = R(phi_i) diag(1 + 0.2 sin, 1 - 0.2 sin)``
(rotation up to +-8 deg per frame, periodic squash/stretch) and ``c_i`` travelling 1-2 px per frame on a
gently curving path. The forward flow of a shape pixel is ``c_{i+1} + A_{i+1} A_i^{-1} (p - c_i) - p``,
the background flow is 0. Shapes are anti-aliased by 4x4 supersampling; masks are coverage > 0.5.
An EDIT replaces the ellipse with a rectangle, triangle or star (other colour and aspect ratio) under the
SAME motion, which gives the exact edited video, its masks and its flows.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from flowjax.physical import smooth_texture

SHAPES = ("ellipse", "rect", "triangle", "star")


def _rot(a):
    c, s = jnp.cos(a), jnp.sin(a)
    return jnp.stack([jnp.stack([c, -s], -1), jnp.stack([s, c], -1)], -2)


def motion(key, *, num_frames, size):
    k = jax.random.split(key, 6)
    speed = jax.random.uniform(k[0], (), minval=1.0, maxval=2.0)
    head0 = jax.random.uniform(k[1], (), minval=0.0, maxval=2 * jnp.pi)
    curve = jax.random.uniform(k[2], (), minval=-0.25, maxval=0.25)
    spin = jnp.deg2rad(jax.random.uniform(k[3], (), minval=-8.0, maxval=8.0))
    sq_phase = jax.random.uniform(k[4], (), minval=0.0, maxval=2 * jnp.pi)
    i = jnp.arange(num_frames, dtype=jnp.float32)
    head = head0 + curve * i
    steps = speed * jnp.stack([jnp.cos(head), jnp.sin(head)], -1)
    path = jnp.concatenate([jnp.zeros((1, 2)), jnp.cumsum(steps[:-1], 0)], 0)
    start = 0.5 * (size - 1) - 0.5 * path[-1]  # centre the trajectory
    centres = start[None, :] + path
    sq = 0.2 * jnp.sin(2 * jnp.pi * i / num_frames + sq_phase)
    a = jnp.einsum("nij,njk->nik", _rot(spin * i), jax.vmap(jnp.diag)(jnp.stack([1 + sq, 1 - sq], -1)))
    return centres, a


def shape_inside(kind: str, u, size_xy):
    """Indicator of the shape in local coordinates u (..., 2); size_xy = (a, b) half-extents."""
    x, y = u[..., 0] / size_xy[0], u[..., 1] / size_xy[1]
    if kind == "ellipse":
        return x**2 + y**2 <= 1.0
    if kind == "rect":
        return (jnp.abs(x) <= 1.0) & (jnp.abs(y) <= 1.0)
    if kind == "triangle":  # vertices (0,-1), (+-1, 0.8) in normalised coordinates
        return (y <= 0.8) & (y >= -1.0 + 1.8 * jnp.abs(x))
    if kind == "star":
        r = jnp.sqrt(x**2 + y**2)
        th = jnp.arctan2(y, x)
        return r <= 0.6 + 0.4 * jnp.cos(5 * th)
    raise ValueError(f"unknown shape {kind!r}; choose one of {SHAPES}.")


def render_clip(kind, size_xy, colour, bg, centres, a, *, ss=4):
    """Frames, masks (coverage > 0.5), forward and backward flows of one shape under (centres, a)."""
    n, size = centres.shape[0], bg.shape[0]
    off = (jnp.arange(ss, dtype=jnp.float32) + 0.5) / ss - 0.5
    rows, cols = jnp.meshgrid(jnp.arange(size, dtype=jnp.float32), jnp.arange(size, dtype=jnp.float32), indexing="ij")
    sub = jnp.stack(jnp.meshgrid(off, off, indexing="xy"), -1).reshape(-1, 2)  # (ss^2, 2) as (x, y)
    p = jnp.stack([cols, rows], -1)  # (H, W, 2)
    ps = p[:, :, None, :] + sub[None, None, :, :]
    frames, masks = [], []
    for i in range(n):
        ainv = jnp.linalg.inv(a[i])
        u = jnp.einsum("ij,hwsj->hwsi", ainv, ps - centres[i][None, None, None, :])
        cov = jnp.mean(shape_inside(kind, u, size_xy).astype(jnp.float32), -1)
        frames.append(bg * (1 - cov[..., None]) + cov[..., None] * colour[None, None, :])
        masks.append((cov > 0.5).astype(jnp.float32))
    fw, bw = [], []
    for i in range(n - 1):
        for src, dst, lst in ((i, i + 1, fw), (i + 1, i, bw)):
            rel = a[dst] @ jnp.linalg.inv(a[src])
            q = centres[dst][None, None, :] + jnp.einsum("ij,hwj->hwi", rel, p - centres[src][None, None, :])
            lst.append(masks[src][..., None] * (q - p))
    return jnp.stack(frames), jnp.stack(masks), jnp.stack(fw), jnp.stack(bw)


def background(key, size):
    k1, k2 = jax.random.split(key)
    base = jax.random.uniform(k1, (3,), minval=0.3, maxval=0.7)
    tex = jnp.stack([smooth_texture(jax.random.fold_in(k2, c), size, sigma=3.0, contrast=0.3, mean=0.0) for c in range(3)], -1)
    return jnp.clip(base[None, None, :] + tex.astype(jnp.float32), 0.0, 1.0)


def _colour(key):
    c = jax.random.uniform(key, (3,))
    return jnp.where(c > 0.5, 0.8 + 0.2 * c, 0.2 * c)


def source_clip(key, *, num_frames=8, size=24):
    """An unedited ellipse clip (training data for the generator)."""
    k = jax.random.split(key, 4)
    bg = background(k[0], size)
    centres, a = motion(k[1], num_frames=num_frames, size=size)
    axes = jax.random.uniform(k[2], (2,), minval=3.0, maxval=6.0)
    return render_clip("ellipse", axes, _colour(k[3]), bg, centres, a)


def edit_pair(key, kind, *, num_frames=8, size=24):
    """(source clip, edited clip) sharing background and motion; the edit has another shape, colour and aspect."""
    k = jax.random.split(key, 6)
    bg = background(k[0], size)
    centres, a = motion(k[1], num_frames=num_frames, size=size)
    axes = jax.random.uniform(k[2], (2,), minval=3.0, maxval=6.0)
    eaxes = jax.random.uniform(k[3], (2,), minval=3.0, maxval=6.0)
    col = _colour(k[4])
    ecol = jnp.clip(1.0 - col + 0.1 * jax.random.normal(k[5], (3,)), 0.0, 1.0)
    return render_clip("ellipse", axes, col, bg, centres, a), render_clip(kind, eaxes, ecol, bg, centres, a)


def static_clip(key, *, num_frames=8, size=24):
    """A clip where nothing moves (spec §6 test 6)."""
    k = jax.random.split(key, 4)
    bg = background(k[0], size)
    centres = jnp.full((num_frames, 2), 0.5 * (size - 1))
    a = jnp.broadcast_to(jnp.eye(2), (num_frames, 2, 2))
    return render_clip("ellipse", jnp.array([4.0, 3.0]), _colour(k[3]), bg, centres, a)
