"""Forward operators for inverse problems, as plain functions.

Each factory returns an :class:`Operator` — a frozen record of two pure functions, ``forward(x)``
(the degradation ``A``) and ``pinv(y)`` (a pseudo-inverse ``A^+`` used for initialisation and
projection baselines). All operators are linear, act on a leading batch axis and are
differentiable, so data-fidelity gradients ``grad_x |A x - y|^2`` come from ``jax.grad``; the
adjoint is ``jax.linear_transpose(forward, x)`` when needed.

- :func:`identity`: ``A = I``.
- :func:`masking` (inpainting): ``A x = m * x`` with a 0/1 mask (kept in the image shape; masked
  entries are zero). ``A^+ = A``.
- :func:`blur`: circular 2-D convolution of images ``(n, H, W, C)`` with a kernel, via FFT;
  ``pinv`` is the Tikhonov-regularised inverse filter ``conj(K) / (|K|^2 + eps)``.
- :func:`random_projection`: ``A x = x_flat @ M^T`` with ``M`` of shape ``(m, d)``; ``pinv`` is the
  Moore-Penrose inverse.
- :func:`super_resolution`: ``f x f`` average pooling of images; its exact pseudo-inverse is
  nearest-neighbour upsampling (``A A^T = I / f^2``).
- :func:`apply_matrix`: a plain matrix as an operator (``A x = x @ M^T``).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike

from flowjax import _checks


@dataclasses.dataclass(frozen=True)
class Operator:
    """A forward operator ``forward(x) -> y`` with a pseudo-inverse ``pinv(y) -> x``."""

    forward: Callable[[Array], Array]
    pinv: Callable[[Array], Array]
    name: str = "operator"

    def __call__(self, x: Array) -> Array:
        return self.forward(x)


def identity() -> Operator:
    return Operator(lambda x: x, lambda y: y, "identity")


def masking(mask: ArrayLike) -> Operator:
    """Inpainting: ``A x = mask * x`` (mask broadcast over the batch axis, shape ``x.shape[1:]``)."""
    m = jnp.asarray(mask)

    def forward(x):
        if tuple(x.shape[1:]) != tuple(m.shape):
            raise ValueError(f"`x` must have per-sample shape {tuple(m.shape)} for this mask, got {tuple(x.shape[1:])}.")
        return x * m[None].astype(x.dtype)

    return Operator(forward, forward, "masking")


def blur(kernel: ArrayLike, image_shape: tuple[int, int], *, eps: float = 1e-3) -> Operator:
    """Circular blur of ``(n, H, W, C)`` images by a ``(kh, kw)`` kernel centred at its middle."""
    k = np.asarray(kernel, np.float64)
    if k.ndim != 2:
        raise ValueError(f"`kernel` must have shape (kh, kw), got {k.shape}.")
    h, w = image_shape
    pad = np.zeros((h, w))
    kh, kw = k.shape
    pad[:kh, :kw] = k
    pad = np.roll(pad, (-(kh // 2), -(kw // 2)), axis=(0, 1))
    kf = np.fft.fft2(pad)
    inv = np.conj(kf) / (np.abs(kf) ** 2 + eps)

    def filt(x, f):
        xf = jnp.fft.fft2(x, axes=(1, 2))
        return jnp.real(jnp.fft.ifft2(xf * jnp.asarray(f)[None, :, :, None], axes=(1, 2))).astype(x.dtype)

    return Operator(lambda x: filt(x, kf), lambda y: filt(y, inv), "blur")


def apply_matrix(matrix: ArrayLike) -> Operator:
    """``A x = flatten(x) @ M^T`` for ``M`` of shape ``(m, d)``; ``pinv`` returns flat ``(n, d)``."""
    m = jnp.asarray(matrix)
    if m.ndim != 2:
        raise ValueError(f"`matrix` must have shape (m, d), got {m.shape}.")
    mp = jnp.asarray(np.linalg.pinv(np.asarray(m)))
    return Operator(
        lambda x: x.reshape(x.shape[0], -1) @ m.T.astype(x.dtype),
        lambda y: y @ mp.T.astype(y.dtype),
        "matrix",
    )


def random_projection(key: Array, num_measurements: int, dim: int, *, scale: float | None = None) -> tuple[Operator, Array]:
    """Gaussian measurement matrix ``M_ij ~ N(0, scale^2)`` (default ``scale = 1/sqrt(dim)``).

    Returns the operator and the matrix.
    """
    _checks.check_positive_int("num_measurements", num_measurements)
    _checks.check_positive_int("dim", dim)
    scale = 1.0 / np.sqrt(dim) if scale is None else scale
    m = scale * jax.random.normal(key, (num_measurements, dim))
    return apply_matrix(m), m


def super_resolution(factor: int) -> Operator:
    """``factor x factor`` average pooling of ``(n, H, W, C)`` images; ``pinv`` = nearest upsampling."""
    _checks.check_positive_int("factor", factor)
    f = factor

    def forward(x):
        n, h, w, c = x.shape
        if h % f or w % f:
            raise ValueError(f"image size {(h, w)} must be divisible by the factor {f}.")
        return x.reshape(n, h // f, f, w // f, f, c).mean(axis=(2, 4))

    def pinv(y):
        return jnp.repeat(jnp.repeat(y, f, axis=1), f, axis=2)

    return Operator(forward, pinv, "super_resolution")


def operator_norm(op: Operator, x_example: Array, *, iterations: int = 100, key: Array | None = None) -> Array:
    """Spectral norm ``|A|_2`` by power iteration on ``A^T A`` (per problem, batch of one)."""
    x = jax.random.normal(key if key is not None else jax.random.key(0), x_example[:1].shape, x_example.dtype)
    adjoint = jax.linear_transpose(op.forward, x)

    def body(_, v):
        w = adjoint(op.forward(v))[0]
        return w / jnp.linalg.norm(w)

    v = jax.lax.fori_loop(0, iterations, body, x / jnp.linalg.norm(x))
    return jnp.linalg.norm(op.forward(v))
