"""Riemannian conditional flow matching (Chen & Lipman, "Flow Matching on General Geometries", 2302.03660).

In project time (t = 0 source, t = 1 data), with ``x0 ~ p0`` (uniform on the manifold by default),
``x1 ~ data`` and ``t ~ p(t)``:

    x_t = exp_{x0}(t log_{x0} x1),   u_t = d x_t/dt = log_{x_t}(x1) / (1 - t)     (paper eqs. 12-13)
    L = E || P_{x_t} v_theta(x_t, t) - u_t ||^2                                   (paper eq. 9)

with the metric of the embedding (sphere, flat torus and their products are isometrically
embedded, so the Riemannian norm of a tangent vector is its Euclidean norm). ``P_x`` projects the
network output onto ``T_x M`` (the paper's construction of a tangent field from an ambient network;
set ``project_output=False`` to regress the raw output). The target is the closed-form geodesic
velocity (ours: numerically equal to eq. 12 for t < 1, finite at t = 1). The minimiser is the
marginal field of the geodesic probability path (the paper's Theorem 3.1).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array

from flowjax import _checks
from flowjax.losses.cfm import call_with_condition
from flowjax.riemannian import Manifold
from flowjax.timesteps import TimeSampler, uniform


def riemannian_cfm(
    v_fn: Callable[..., Array],
    key: Array,
    x1: Array,
    *,
    manifold: Manifold,
    x0: Array | None = None,
    time_sampler: TimeSampler | None = None,
    project_output: bool = True,
    c: Any = None,
) -> tuple[Array, dict[str, Array]]:
    """Riemannian CFM loss on the geodesic path; returns ``(loss, aux)``.

    Args:
      v_fn: model ``v(x, t)`` with ``x (n, D)``, ``t (n,)`` -> ``(n, D)``.
      key: PRNG key (time and, when ``x0`` is None, the uniform source).
      x1: ``(n, D)`` data points on ``manifold``.
      manifold: a :class:`flowjax.riemannian.Manifold` (required).
      x0: optional ``(n, D)`` source points (default: uniform on the manifold).
      time_sampler: ``fn(key, n) -> t`` (default ``U[0, 1]``).
      project_output: project the model output onto ``T_{x_t} M`` before the regression.
      c: optional condition passed as ``v(x, t, c=c)``.
    Returns:
      mean over the batch of the squared tangent error (summed over coordinates, i.e. the
      squared Riemannian norm), and aux ``{"loss", "target_norm"}``.
    """
    if not isinstance(manifold, Manifold):
        raise TypeError(f"`manifold` must be a flowjax.riemannian.Manifold, got {type(manifold).__name__}.")
    _checks.check_float_array("x1", x1, ndim=2)
    if x1.shape[-1] != manifold.ambient_dim:
        raise ValueError(f"`x1` must have last axis {manifold.ambient_dim} for {manifold.name}, got shape {tuple(x1.shape)}.")
    n = x1.shape[0]
    k_t, k_0 = jax.random.split(key)
    if x0 is None:
        x0 = manifold.sample_uniform(k_0, n).astype(x1.dtype)
    else:
        _checks.check_float_array("x0", x0, ndim=2)
        _checks.check_same_shape("x0", x0, "x1", x1)
    sampler = time_sampler if time_sampler is not None else uniform()
    t = sampler(k_t, n).astype(x1.dtype)
    x_t, u_t = manifold.geodesic(x0, x1, t)
    v = call_with_condition(v_fn, x_t, t, c=c)
    if v.shape != x_t.shape:
        raise ValueError(f"`v_fn` must return shape {tuple(x_t.shape)}, got {tuple(v.shape)}.")
    if project_output:
        v = manifold.proj_tangent(x_t, v)
    per = jnp.sum((v - u_t) ** 2, axis=-1)
    loss = jnp.mean(per)
    return loss, {"loss": loss, "target_norm": jnp.mean(jnp.linalg.norm(u_t, axis=-1))}


__all__ = ["riemannian_cfm"]
