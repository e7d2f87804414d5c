"""Input validation at public boundaries.

Every public loss and sampler checks its arguments here *before* any work is done, so that a
wrong shape, dtype or range fails at once with a message naming the argument, what was expected
and what was received. The checks run on static information (shapes, dtypes) and therefore work
under `jit`; value checks (ranges, finiteness) are only done on concrete arrays.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def _is_concrete(x: Any) -> bool:
    return not isinstance(x, jax.core.Tracer)


def check_float_array(name: str, x: Any, *, min_ndim: int = 0, ndim: int | None = None) -> None:
    """Raise if `x` is not a floating array of the right rank."""
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise TypeError(f"`{name}` must be an array, got {type(x).__name__}.")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"`{name}` must have a floating dtype, got {x.dtype}.")
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"`{name}` must have rank {ndim}, got shape {tuple(x.shape)}.")
    if x.ndim < min_ndim:
        raise ValueError(
            f"`{name}` must have rank >= {min_ndim} (a batch axis first), got shape {tuple(x.shape)}."
        )


def check_same_shape(name_a: str, a: Any, name_b: str, b: Any) -> None:
    if tuple(a.shape) != tuple(b.shape):
        raise ValueError(
            f"`{name_a}` and `{name_b}` must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}."
        )


def check_batch_size(name: str, x: Any, batch: int) -> None:
    if x.shape[0] != batch:
        raise ValueError(f"`{name}` must have batch size {batch} (leading axis), got shape {tuple(x.shape)}.")


def check_time(name: str, t: Any, batch: int | None = None, *, low: float = 0.0, high: float = 1.0) -> None:
    """Check a time argument: a scalar or a vector of one time per sample, inside [low, high]."""
    t_arr = jnp.asarray(t)
    if t_arr.ndim > 1:
        raise ValueError(f"`{name}` must be a scalar or a vector of shape (batch,), got shape {tuple(t_arr.shape)}.")
    if batch is not None and t_arr.ndim == 1 and t_arr.shape[0] != batch:
        raise ValueError(f"`{name}` must have shape ({batch},), got {tuple(t_arr.shape)}.")
    if _is_concrete(t_arr):
        values = np.asarray(t_arr, dtype=np.float64)
        if not np.all(np.isfinite(values)):
            raise ValueError(f"`{name}` must be finite.")
        if values.size and (values.min() < low - 1e-6 or values.max() > high + 1e-6):
            raise ValueError(
                f"`{name}` must lie in [{low}, {high}], got values in [{values.min():.4g}, {values.max():.4g}]."
            )


def check_finite(name: str, x: Any) -> None:
    """Raise if a concrete array holds NaN or Inf (no-op under tracing)."""
    if _is_concrete(x) and not bool(jnp.all(jnp.isfinite(x))):
        raise ValueError(f"`{name}` contains NaN or Inf values.")


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {choices}, got {value!r}.")


def check_positive_int(name: str, value: Any) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
