"""First-order (DDIM / exponential-integrator) sampling on any affine path, and to-data samplers.

Rectified Diffusion (Wang et al. 2410.07303, spec ``rectified-diffusion.md`` §3.2) samples its
student with the first-order update: from ``(x_t, t)`` the model's prediction gives
``(x1_hat, x0_hat)`` (any parameterisation, converted by the path), and

    x_{t'} = alpha_{t'} x1_hat(x_t, t) + sigma_{t'} x0_hat(x_t, t).                      (DDIM)

For the linear path this is exactly the Euler step ``x + (t' - t) v``; for a curved (VP / cosine)
path it moves along the arc through ``(x0_hat, x1_hat)``. If ``x1_hat`` and ``x0_hat`` are constant
along the model's trajectories (a "first-order ODE", the paper's thesis) one step is exact.

:func:`to_data_sample` is the multi-step sampler of a student ``ub(x, s) = u(x, s, 1)`` that only
predicts the average velocity to the data end (MDT-dist, 2509.04406, spec §5):
``x <- x + (t_next - t) ub(x, t)``.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike

from flowjax import _checks
from flowjax.paths import AffinePath, Prediction, broadcast_time, linear_path


def call_with_condition(fn: Callable, *args: Any, c: Any = None) -> Array:
    return fn(*args) if c is None else fn(*args, c=c)


def _grid(steps: int | None, times: ArrayLike | None, t0: float, t1: float) -> np.ndarray:
    if times is not None:
        grid = np.asarray(times, dtype=np.float64)
        if grid.ndim != 1 or grid.size < 2 or np.any(np.diff(grid) <= 0):
            raise ValueError(f"`times` must be an increasing 1D grid of at least 2 times, got {grid}.")
        _checks.check_time("times", grid)
        return grid
    _checks.check_positive_int("steps", steps)
    return np.linspace(t0, t1, steps + 1)


def data_and_noise(
    model_fn: Callable[..., Array],
    x: Array,
    t: Array,
    *,
    path: AffinePath,
    prediction: Prediction,
    alpha_min: float = 1e-3,
    c: Any = None,
) -> tuple[Array, Array]:
    """``(x1_hat, x0_hat)`` of a model at ``(x, t)`` (``t`` of shape ``(n,)``).

    Division by ``alpha_t`` (noise -> data) uses ``max(alpha_t, alpha_min)`` as the spec's pitfall
    advises (``alpha_min = 1e-3``, ours); division by ``sigma_t`` (data -> noise) uses a tiny
    floor so that a step *from* ``t = 1`` is never taken but ``sigma = 0`` is harmless.
    """
    pred = call_with_condition(model_fn, x, t, c=c)
    tb = broadcast_time(t, x)
    a, s = path.alpha(tb), path.sigma(tb)
    if prediction == "data":
        x1 = pred
        x0 = (x - a * x1) / jnp.maximum(s, jnp.finfo(x.dtype).tiny ** 0.5)
    elif prediction == "noise":
        x0 = pred
        x1 = (x - s * x0) / jnp.maximum(a, alpha_min)
    else:
        x1, x0 = path.to_data_and_noise(pred, x, t, prediction)
    return x1, x0


def first_order(
    model_fn: Callable[..., Array],
    x0: Array,
    *,
    path: AffinePath | None = None,
    prediction: Prediction = "velocity",
    steps: int | None = 1,
    times: ArrayLike | None = None,
    t0: float = 0.0,
    t1: float = 1.0,
    alpha_min: float = 1e-3,
    return_predictions: bool = False,
    c: Any = None,
) -> Array | tuple[Array, Array]:
    """DDIM / first-order sampling: ``x_{t'} = alpha_{t'} x1_hat + sigma_{t'} x0_hat`` on a grid.

    Args:
      model_fn: ``model_fn(x, t) -> prediction`` of kind ``prediction``.
      x0: states at ``t0`` ``(n, ...)``.
      path: the model's affine path (default linear; then this is Euler).
      prediction: ``"velocity" | "data" | "noise" | "score"``.
      steps / times: uniform steps on ``[t0, t1]`` or an explicit increasing grid.
      return_predictions: also return ``x1_hat`` at every grid time (``(steps, n, ...)``), the
        quantity whose variance measures first-order-ness (spec §5).

    Returns:
      The final state, or ``(state, x1_hats)``.
    """
    _checks.check_float_array("x0", x0, min_ndim=1)
    path = path or linear_path()
    grid = _grid(steps, times, t0, t1)
    n = x0.shape[0]

    def body(x, tt):
        t, t_next = tt[0], tt[1]
        tv = jnp.full((n,), t, x.dtype)
        x1_hat, x0_hat = data_and_noise(model_fn, x, tv, path=path, prediction=prediction, alpha_min=alpha_min, c=c)
        tn = jnp.full((n,), t_next, x.dtype)
        tb = broadcast_time(tn, x)
        return path.alpha(tb) * x1_hat + path.sigma(tb) * x0_hat, x1_hat

    pairs = jnp.stack([jnp.asarray(grid[:-1]), jnp.asarray(grid[1:])], axis=1).astype(x0.dtype)
    x, x1_hats = jax.lax.scan(body, x0, pairs)
    return (x, x1_hats) if return_predictions else x


def to_data_sample(
    ub_fn: Callable[..., Array],
    x0: Array,
    *,
    steps: int | None = 1,
    times: ArrayLike | None = None,
    t0: float = 0.0,
    c: Any = None,
) -> Array:
    """Multi-step sampling of a to-data average velocity ``ub(x, s) = u(x, s, 1)``.

    ``x <- x + (t_next - t) ub(x, t)`` on a grid ending at 1 (MDT-dist spec §5 and §7: only the last
    jump is exact; earlier ones use ``ub`` as an Euler-like velocity).
    """
    _checks.check_float_array("x0", x0, min_ndim=1)
    grid = _grid(steps, times, t0, 1.0)
    n = x0.shape[0]

    def body(x, tt):
        tv = jnp.full((n,), tt[0], x.dtype)
        return x + (tt[1] - tt[0]) * call_with_condition(ub_fn, x, tv, c=c), None

    pairs = jnp.stack([jnp.asarray(grid[:-1]), jnp.asarray(grid[1:])], axis=1).astype(x0.dtype)
    return jax.lax.scan(body, x0, pairs)[0]


__all__ = ["data_and_noise", "first_order", "to_data_sample"]
