"""Toy two-dimensional distributions for flow-matching experiments.

The six sets follow the shapes popularised by FFJORD (Grathwohl et al., arXiv:1810.01367) and used
by most flow-matching papers (e.g. Lipman et al., arXiv:2210.02747; Tong et al., arXiv:2302.00482).
The generators below are written from the shape descriptions, not copied, and differ in details
(Gaussian instead of uniform jitter, equal ring weights): they are *ours*.

Scale (ours, exact): every set is centred and divided by one scalar so that its mean is zero and
its average per-coordinate variance is one,

    E[x] = 0,    E[|x|^2] / 2 = 1.

One scalar per set (not one per coordinate) keeps each shape's aspect ratio, so an individual
coordinate's standard deviation can differ from one (``moons``: about 1.22 along x and 0.71 along
y). The constants are closed-form second moments of the raw generators, listed in
``_RAW_SCALE``; the tests check them by Monte Carlo.

Raw shapes before scaling:

- ``8gaussians``: 8 isotropic Gaussians (std 0.5) at radius 4 on the angles k*pi/4, equal weights.
- ``moons``: two interleaved half circles of radius 1 (sklearn's ``make_moons`` geometry), Gaussian
  noise std 0.1, equal weights.
- ``checkerboard``: uniform on the 8 black cells of a 4x4 board on ``[-2, 2]^2``.
- ``spirals``: two arms ``+-(-n cos n, n sin n) / 3`` with ``n = 3 pi sqrt(u)``, ``u ~ U(0, 1)``,
  Gaussian noise std 0.1.
- ``pinwheel``: 5 blades; radial std 0.3 around 1, tangential std 0.1, rotated by
  ``2 pi k / 5 + 0.25 exp(radial)``, times 2.
- ``rings``: 4 concentric circles of radii 3, 2.25, 1.5, 0.75 with equal weights, Gaussian noise
  std 0.08.

Example:
    >>> import jax
    >>> x = sample_toy2d("moons", jax.random.key(0), 512)
    >>> x.shape, str(x.dtype)
    ((512, 2), 'float32')
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jaxtyping import Array, PRNGKeyArray

from flowjax import _checks

TOY2D_NAMES: tuple[str, ...] = ("8gaussians", "moons", "checkerboard", "spirals", "pinwheel", "rings")

_F32 = jnp.float32

# Noise levels of the raw generators (documented in the module docstring).
_GAUSS8_RADIUS, _GAUSS8_STD = 4.0, 0.5
_MOONS_NOISE = 0.1
_SPIRALS_NOISE = 0.1
_PINWHEEL_RADIAL, _PINWHEEL_TANGENTIAL, _PINWHEEL_RATE, _PINWHEEL_BLADES = 0.3, 0.1, 0.25, 5
_RINGS_RADII = (3.0, 2.25, 1.5, 0.75)
_RINGS_NOISE = 0.08

# Raw means (exact; only moons is off-centre) and sqrt(E|x - mean|^2 / 2) of each raw generator.
_RAW_MEAN: dict[str, tuple[float, float]] = {
    "8gaussians": (0.0, 0.0),
    "moons": (0.5, 0.25),
    "checkerboard": (0.0, 0.0),
    "spirals": (0.0, 0.0),
    "pinwheel": (0.0, 0.0),
    "rings": (0.0, 0.0),
}
_RAW_SCALE: dict[str, float] = {
    # per-coordinate variance r^2/2 + s^2
    "8gaussians": math.sqrt(_GAUSS8_RADIUS**2 / 2 + _GAUSS8_STD**2),
    # var x = 3/4 + s^2, var y = 9/16 - 1/pi + s^2
    "moons": math.sqrt((0.75 + (0.5625 - 1.0 / math.pi)) / 2 + _MOONS_NOISE**2),
    # each coordinate uniform on [-2, 2]: variance 16/12
    "checkerboard": math.sqrt(4.0 / 3.0),
    # E|x|^2 = E[n^2] / 9 = pi^2 / 2
    "spirals": math.sqrt(math.pi**2 / 4 + _SPIRALS_NOISE**2),
    # rotation keeps the norm: E|x|^2 = 4 (1 + s_r^2 + s_t^2)
    "pinwheel": math.sqrt(2.0 * (1.0 + _PINWHEEL_RADIAL**2 + _PINWHEEL_TANGENTIAL**2)),
    # mean of r^2 over rings, halved, plus noise variance
    "rings": math.sqrt(sum(r * r for r in _RINGS_RADII) / len(_RINGS_RADII) / 2 + _RINGS_NOISE**2),
}


def _raw_8gaussians(key: PRNGKeyArray, n: int) -> Array:
    k_c, k_e = jax.random.split(key)
    comp = jax.random.randint(k_c, (n,), 0, 8)
    angle = comp.astype(_F32) * (jnp.pi / 4)
    centres = _GAUSS8_RADIUS * jnp.stack([jnp.cos(angle), jnp.sin(angle)], axis=-1)
    return centres + _GAUSS8_STD * jax.random.normal(k_e, (n, 2), dtype=_F32)


def _raw_moons(key: PRNGKeyArray, n: int) -> Array:
    k_c, k_t, k_e = jax.random.split(key, 3)
    upper = jax.random.bernoulli(k_c, 0.5, (n,))
    theta = jax.random.uniform(k_t, (n,), dtype=_F32, minval=0.0, maxval=jnp.pi)
    c, s = jnp.cos(theta), jnp.sin(theta)
    x = jnp.where(upper, c, 1.0 - c)
    y = jnp.where(upper, s, 0.5 - s)
    return jnp.stack([x, y], axis=-1) + _MOONS_NOISE * jax.random.normal(k_e, (n, 2), dtype=_F32)


def _raw_checkerboard(key: PRNGKeyArray, n: int) -> Array:
    k_x, k_r, k_y = jax.random.split(key, 3)
    x = jax.random.uniform(k_x, (n,), dtype=_F32, minval=-2.0, maxval=2.0)
    col = jnp.clip(jnp.floor(x + 2.0), 0.0, 3.0)  # 0..3
    # Black cells: (row + col) even. Pick one of the two black rows in this column.
    half = jax.random.randint(k_r, (n,), 0, 2).astype(_F32)
    row = 2.0 * half + jnp.mod(col, 2.0)  # 0..3 with row + col even
    y = row - 2.0 + jax.random.uniform(k_y, (n,), dtype=_F32)
    return jnp.stack([x, y], axis=-1)


def _raw_spirals(key: PRNGKeyArray, n: int) -> Array:
    k_u, k_s, k_e = jax.random.split(key, 3)
    t = 3.0 * jnp.pi * jnp.sqrt(jax.random.uniform(k_u, (n,), dtype=_F32))
    arm = jnp.stack([-jnp.cos(t) * t, jnp.sin(t) * t], axis=-1) / 3.0
    sign = jnp.where(jax.random.bernoulli(k_s, 0.5, (n,)), 1.0, -1.0).astype(_F32)
    return sign[:, None] * arm + _SPIRALS_NOISE * jax.random.normal(k_e, (n, 2), dtype=_F32)


def _raw_pinwheel(key: PRNGKeyArray, n: int) -> Array:
    k_c, k_e = jax.random.split(key)
    blade = jax.random.randint(k_c, (n,), 0, _PINWHEEL_BLADES).astype(_F32)
    feats = jax.random.normal(k_e, (n, 2), dtype=_F32)
    radial = _PINWHEEL_RADIAL * feats[:, 0] + 1.0
    tangential = _PINWHEEL_TANGENTIAL * feats[:, 1]
    angle = blade * (2.0 * jnp.pi / _PINWHEEL_BLADES) + _PINWHEEL_RATE * jnp.exp(radial)
    c, s = jnp.cos(angle), jnp.sin(angle)
    x = c * radial - s * tangential
    y = s * radial + c * tangential
    return 2.0 * jnp.stack([x, y], axis=-1)


def _raw_rings(key: PRNGKeyArray, n: int) -> Array:
    k_c, k_t, k_e = jax.random.split(key, 3)
    ring = jax.random.randint(k_c, (n,), 0, len(_RINGS_RADII))
    radius = jnp.asarray(_RINGS_RADII, dtype=_F32)[ring]
    theta = jax.random.uniform(k_t, (n,), dtype=_F32, minval=0.0, maxval=2.0 * jnp.pi)
    pts = radius[:, None] * jnp.stack([jnp.cos(theta), jnp.sin(theta)], axis=-1)
    return pts + _RINGS_NOISE * jax.random.normal(k_e, (n, 2), dtype=_F32)


_RAW = {
    "8gaussians": _raw_8gaussians,
    "moons": _raw_moons,
    "checkerboard": _raw_checkerboard,
    "spirals": _raw_spirals,
    "pinwheel": _raw_pinwheel,
    "rings": _raw_rings,
}


@functools.partial(jax.jit, static_argnums=(0, 2))
def _sample(name: str, key: PRNGKeyArray, n: int) -> Array:
    raw = _RAW[name](key, n)
    mean = jnp.asarray(_RAW_MEAN[name], dtype=_F32)
    return ((raw - mean[None, :]) / _RAW_SCALE[name]).astype(_F32)


def sample_toy2d(name: str, key: PRNGKeyArray, n: int) -> Array:
    """Draw ``n`` points from a standardised toy 2D distribution.

    Args:
      name: one of :data:`TOY2D_NAMES` (static under ``jit``).
      key: a PRNG key.
      n: number of points (static under ``jit``).

    Returns:
      ``float32`` array of shape ``(n, 2)`` with ``E[x] = 0`` and ``E|x|^2 / 2 = 1`` (exact for the
      distribution; see the module docstring for the shapes and the scaling).

    Raises:
      ValueError: unknown ``name`` or non-positive ``n``.

    The function is jitted with ``name`` and ``n`` static; it can also be called inside a
    user's ``jit`` as long as ``name`` and ``n`` are Python values there.
    """
    _checks.check_choice("name", name, TOY2D_NAMES)
    _checks.check_positive_int("n", n)
    return _sample(name, key, int(n))


def toy2d_raw_scale(name: str) -> float:
    """The scalar each raw generator is divided by (its root mean per-coordinate variance)."""
    _checks.check_choice("name", name, TOY2D_NAMES)
    return _RAW_SCALE[name]


__all__ = ["TOY2D_NAMES", "sample_toy2d", "toy2d_raw_scale"]
