"""Visual Bridge: data-to-data flow matching from foundation-model tokens to several task representations.

Gao et al., "Visual Bridge: Universal Visual Perception Representations Generating", arXiv 2511.07877
(spec ``visual-bridge.md``). The paper's (abstract/summaries; full text not retrieved, no code): a
single velocity field learned by flow matching along the straight line between the frozen
foundation-model tokens (source) and a teacher's task representation (target), conditioned on the task.
The exact form below is the spec's derivation (section 3.1), in project notation:

    x0 = T(I) (source tokens),  x1 = P_k(E_k(I)) (task-k target tokens, same shape)
    x_t = (1 - t) x0 + t x1,    target velocity x1 - x0,  t ~ U(0, 1)
    L = E_{I, k, t} mean || v(x_t, t, c=k) - (x1 - x0) ||^2

No Gaussian noise: the map is deterministic. ``sigma_min`` (ours, spec section 7) optionally perturbs
the source by ``sigma_min * N(0, I)`` at training time only. Inference integrates ``dx/dt = v(x, t,
c=k)`` from ``x0`` at t = 0 to t = 1 (:func:`bridge_predict`).

:func:`linear_bridge_velocity` is the exact marginal velocity when ``x1 = A x0`` for one fixed linear
map (spec test 2): ``v(x, t) = (A - I)((1 - t) I + t A)^{-1} x``, valid when ``(1 - t) I + t A`` is
invertible on [0, 1] (no eigenvalue of A on (-inf, 0]).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array

from flowjax._checks import check_float_array, check_positive_int, check_same_shape
from flowjax.losses.cfm import call_with_condition
from flowjax.timesteps import TimeSampler, uniform

__all__ = ["visual_bridge", "bridge_predict", "linear_bridge_velocity"]


def visual_bridge(
    v_fn: Callable[..., Array],
    key: Array,
    x1: Array,
    *,
    x0: Array,
    task: Array | None = None,
    num_tasks: int | None = None,
    sigma_min: float = 0.0,
    time_sampler: TimeSampler | None = None,
) -> tuple[Array, dict]:
    """Universal-bridge FM loss ``mean ||v(x_t, t, c=task) - (x1 - x0)||^2`` (spec section 3.1).

    Args:
      v_fn: ``v(x, t, c=task)`` (``c`` omitted when ``task`` is None).
      key: PRNG key (time, and the source perturbation when ``sigma_min > 0``).
      x1: target representations ``(B, ...)``.
      x0: source tokens, same shape as ``x1`` (paired, no coupling: each image's own tokens).
      task: int task ids ``(B,)`` (a mixed-task batch is allowed).
      num_tasks: K; when given, ``aux`` also holds the per-task mean loss ``loss_task{k}``.
      sigma_min: std of an optional Gaussian perturbation of the source (ours; default 0 = deterministic).
      time_sampler: ``fn(key, n) -> t``; default U(0, 1).

    Returns:
      ``(loss, aux)``; ``aux`` has ``target_norm`` and, with ``num_tasks``, per-task losses.
    """
    check_float_array("x1", x1, min_ndim=2)
    check_float_array("x0", x0, min_ndim=2)
    check_same_shape("x0", x0, "x1", x1)
    b = x1.shape[0]
    if task is not None:
        task = jnp.asarray(task)
        if task.shape != (b,) or not jnp.issubdtype(task.dtype, jnp.integer):
            raise ValueError(f"`task` must be integer ids of shape ({b},), got {task.dtype} {task.shape}.")
    kt, kn = jax.random.split(key)
    t = (time_sampler or uniform())(kt, b).astype(x1.dtype)
    if sigma_min > 0:
        x0 = x0 + sigma_min * jax.random.normal(kn, x0.shape, x0.dtype)
    tb = t.reshape((b,) + (1,) * (x1.ndim - 1))
    x_t = (1.0 - tb) * x0 + tb * x1
    target = x1 - x0
    v = call_with_condition(v_fn, x_t, t, c=task)
    per = jnp.mean(((v - target) ** 2).reshape(b, -1), axis=-1)
    loss = jnp.mean(per)
    aux = {"target_norm": jnp.mean(jnp.sum((target**2).reshape(b, -1), axis=-1))}
    if num_tasks is not None and task is not None:
        check_positive_int("num_tasks", num_tasks)
        onehot = jax.nn.one_hot(task, num_tasks, dtype=per.dtype)  # (B, K)
        counts = jnp.sum(onehot, axis=0)
        per_task = jnp.sum(onehot * per[:, None], axis=0) / jnp.maximum(counts, 1.0)
        for k in range(num_tasks):
            aux[f"loss_task{k}"] = per_task[k]
    return loss, aux


def bridge_predict(v_fn: Callable[..., Array], x0: Array, *, task: Array | None = None, steps: int = 4,
                   solver: str = "euler") -> Array:
    """Integrate the bridge from the source tokens ``x0`` (t = 0) to t = 1 for task ``task`` (no noise)."""
    from flowjax import samplers

    check_float_array("x0", x0, min_ndim=2)
    check_positive_int("steps", steps)
    return samplers.ode(v_fn, x0, solver=solver, steps=steps, c=task)


def linear_bridge_velocity(a: Array) -> Callable[[Array, Array], Array]:
    """Exact marginal velocity of the deterministic bridge ``x1 = A x0`` on vectors ``x (B, d)``.

    ``x_t = ((1 - t) I + t A) x0``, so ``v(x, t) = (A - I) ((1 - t) I + t A)^{-1} x``.
    """
    a = jnp.asarray(a)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"`a` must be a square matrix, got shape {a.shape}.")
    eye = jnp.eye(a.shape[0], dtype=a.dtype)

    def v(x, t, **_):
        t = jnp.broadcast_to(jnp.asarray(t, x.dtype), (x.shape[0],))
        m = (1.0 - t)[:, None, None] * eye[None] + t[:, None, None] * a[None]  # (B, d, d)
        x0 = jnp.linalg.solve(m, x[:, :, None])[..., 0]
        return x0 @ (a - eye).T

    return v
