"""Riemannian flow matching: manifolds as records of pure functions, geodesic paths and samplers.

Chen & Lipman, "Flow Matching on General Geometries" (arXiv 2302.03660). In project time
(t = 0 source, t = 1 data) the paper's geodesic conditional flow for simple manifolds is

    x_t = exp_{x0}( t log_{x0}(x1) )                                     (paper eq. 13, kappa(t) = 1 - t)
    u_t(x_t | x1) = d/dt x_t = log_{x_t}(x1) / (1 - t)                   (paper eq. 12 for the geodesic distance)

and the Riemannian CFM loss is ``E || v_theta(x_t, t) - u_t(x_t | x1) ||_g^2`` (paper eq. 9); on the
manifolds here the metric is the Euclidean one of the embedding. Samples come from integrating
``dx/dt = v(x, t)`` with steps that stay on the manifold:

    x_{k+1} = exp_{x_k}( h P_{x_k} v(x_k, t_k) )                         (projected / exp-map Euler)

where ``P_x`` is the orthogonal projection onto the tangent space ``T_x M``.

What is the paper's and what is ours: the path, the target and the exp-map Euler solver are the
paper's (and the same as facebookresearch ``flow_matching``'s RiemannianODESolver). The closed-form
geodesic velocity (instead of ``log_{x_t}(x1)/(1-t)``, which is 0/0 at t = 1) and the ``midpoint``
variant (tangent of the half step projected back to ``T_{x_k} M``) are ours.

A manifold is a frozen :class:`Manifold` record of pure functions on batched points ``(n, D)``
in ambient coordinates:

* ``sphere(d)``: the unit sphere ``S^d`` in ``R^{d+1}``;
* ``flat_torus(d)``: ``T^d = [-pi, pi)^d`` with the flat metric (angles);
* ``product(m1, m2, ...)``: the Riemannian product, coordinates concatenated on the last axis.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
from jaxtyping import Array

from flowjax import _checks

_EPS = 1e-12


class Manifold(NamedTuple):
    """A Riemannian manifold embedded in ``R^D`` (all functions act on batches ``(n, D)``).

    Fields:
      name: human-readable name.
      ambient_dim: ``D``, the size of the last axis of a point.
      dim: the intrinsic dimension (for densities and divergences).
      exp: ``exp(x, v) -> y``, the exponential map.
      log: ``log(x, y) -> v`` in ``T_x M``, the inverse of ``exp`` off the cut locus.
      proj: ``proj(x) -> point``, the closest point on the manifold (retraction of ambient points).
      proj_tangent: ``proj_tangent(x, v) -> v`` in ``T_x M`` (orthogonal projection).
      dist: ``dist(x, y) -> (n,)``, the geodesic distance.
      geodesic: ``geodesic(x0, x1, t) -> (x_t, dx_t/dt)`` with ``t`` of shape ``(n,)``.
      sample_uniform: ``sample_uniform(key, n) -> (n, D)``, the normalised volume measure.
      log_volume: ``log vol(M)`` (so the uniform log-density is ``-log_volume``).
      belongs: ``belongs(x, atol) -> (n,) bool``.
    """

    name: str
    ambient_dim: int
    dim: int
    exp: Callable[[Array, Array], Array]
    log: Callable[[Array, Array], Array]
    proj: Callable[[Array], Array]
    proj_tangent: Callable[[Array, Array], Array]
    dist: Callable[[Array, Array], Array]
    geodesic: Callable[[Array, Array, Array], tuple[Array, Array]]
    sample_uniform: Callable[[Array, int], Array]
    log_volume: float
    belongs: Callable[..., Array]


def _dot(a: Array, b: Array) -> Array:
    return jnp.sum(a * b, axis=-1, keepdims=True)


def _norm(v: Array) -> Array:
    return jnp.sqrt(jnp.maximum(_dot(v, v), _EPS**2))


def sphere(d: int = 2) -> Manifold:
    """The unit sphere ``S^d = {x in R^{d+1} : |x| = 1}`` with the round metric.

    ``exp_x(v) = cos|v| x + sin|v| v/|v|``; ``log_x(y) = theta (y - <x,y> x)/|y - <x,y> x|`` with
    ``theta = arccos <x, y>`` (undefined only at the antipode, where a valid tangent of length
    ``theta`` is not unique; we return the limit along the projected direction, 0 if it vanishes).
    """
    _checks.check_positive_int("d", d)

    def proj(x: Array) -> Array:
        return x / _norm(x)

    def proj_tangent(x: Array, v: Array) -> Array:
        return v - _dot(x, v) * x

    def exp(x: Array, v: Array) -> Array:
        n = _norm(v)
        # sin(n)/n written with a safe denominator; at n -> 0 it tends to 1 (v -> 0 too).
        y = jnp.cos(n) * x + jnp.sinc(n / jnp.pi) * v
        return proj(y)

    def log(x: Array, y: Array) -> Array:
        c = _dot(x, y)
        w = y - c * x
        nw = _norm(w)
        theta = jnp.arctan2(nw, c)  # = arccos<x, y>, accurate near 0 and pi
        return theta * w / nw

    def dist(x: Array, y: Array) -> Array:
        c = _dot(x, y)
        return jnp.arctan2(_norm(y - c * x), c)[..., 0]

    def geodesic(x0: Array, x1: Array, t: Array) -> tuple[Array, Array]:
        v = log(x0, x1)  # velocity of the geodesic at t = 0, |v| = theta
        theta = _norm(v)
        e = v / theta
        tt = t[:, None]
        xt = jnp.cos(tt * theta) * x0 + jnp.sin(tt * theta) * e
        dxt = theta * (-jnp.sin(tt * theta) * x0 + jnp.cos(tt * theta) * e)
        return proj(xt), dxt

    def sample_uniform(key: Array, n: int) -> Array:
        return proj(jax.random.normal(key, (n, d + 1)))

    def belongs(x: Array, atol: float = 1e-5) -> Array:
        return jnp.abs(jnp.linalg.norm(x, axis=-1) - 1.0) <= atol

    log_volume = math.log(2.0) + 0.5 * (d + 1) * math.log(math.pi) - math.lgamma(0.5 * (d + 1))
    return Manifold(f"S^{d}", d + 1, d, exp, log, proj, proj_tangent, dist, geodesic, sample_uniform, log_volume, belongs)


def _wrap(a: Array) -> Array:
    """Angles to ``[-pi, pi)``."""
    return jnp.mod(a + jnp.pi, 2 * jnp.pi) - jnp.pi


def flat_torus(d: int = 2) -> Manifold:
    """The flat torus ``T^d = R^d / (2 pi Z)^d`` in angle coordinates ``[-pi, pi)^d``.

    ``exp_x(v) = wrap(x + v)``, ``log_x(y) = wrap(y - x)`` (the shortest signed angle per axis),
    every vector is tangent and the geodesic is ``x_t = wrap(x0 + t log_{x0}(x1))``.
    """
    _checks.check_positive_int("d", d)

    def exp(x: Array, v: Array) -> Array:
        return _wrap(x + v)

    def log(x: Array, y: Array) -> Array:
        return _wrap(y - x)

    def dist(x: Array, y: Array) -> Array:
        return jnp.linalg.norm(log(x, y), axis=-1)

    def geodesic(x0: Array, x1: Array, t: Array) -> tuple[Array, Array]:
        v = log(x0, x1)
        return exp(x0, t[:, None] * v), v

    def sample_uniform(key: Array, n: int) -> Array:
        return jax.random.uniform(key, (n, d), minval=-jnp.pi, maxval=jnp.pi)

    def belongs(x: Array, atol: float = 1e-5) -> Array:
        return jnp.all((x >= -jnp.pi - atol) & (x <= jnp.pi + atol), axis=-1)

    return Manifold(
        f"T^{d}", d, d, exp, log, _wrap, lambda x, v: v, dist, geodesic, sample_uniform,
        d * math.log(2 * math.pi), belongs,
    )


def product(*manifolds: Manifold) -> Manifold:
    """The Riemannian product ``M_1 x ... x M_k``; a point concatenates the factors' coordinates."""
    if not manifolds or not all(isinstance(m, Manifold) for m in manifolds):
        raise TypeError(f"`manifolds` must be one or more Manifold records, got {manifolds!r}.")
    sizes = [m.ambient_dim for m in manifolds]
    offsets = [sum(sizes[:i]) for i in range(len(sizes) + 1)]

    def split(x: Array) -> list[Array]:
        return [x[..., offsets[i]:offsets[i + 1]] for i in range(len(manifolds))]

    def cat(parts: Sequence[Array]) -> Array:
        return jnp.concatenate(list(parts), axis=-1)

    def lift2(field: str) -> Callable[[Array, Array], Array]:
        return lambda a, b: cat([getattr(m, field)(p, q) for m, p, q in zip(manifolds, split(a), split(b))])

    def proj(x: Array) -> Array:
        return cat([m.proj(p) for m, p in zip(manifolds, split(x))])

    def dist(x: Array, y: Array) -> Array:
        return jnp.sqrt(sum(m.dist(p, q) ** 2 for m, p, q in zip(manifolds, split(x), split(y))))

    def geodesic(x0: Array, x1: Array, t: Array) -> tuple[Array, Array]:
        outs = [m.geodesic(p, q, t) for m, p, q in zip(manifolds, split(x0), split(x1))]
        return cat([o[0] for o in outs]), cat([o[1] for o in outs])

    def sample_uniform(key: Array, n: int) -> Array:
        keys = jax.random.split(key, len(manifolds))
        return cat([m.sample_uniform(k, n) for m, k in zip(manifolds, keys)])

    def belongs(x: Array, atol: float = 1e-5) -> Array:
        res = [m.belongs(p, atol) for m, p in zip(manifolds, split(x))]
        out = res[0]
        for r in res[1:]:
            out = out & r
        return out

    return Manifold(
        " x ".join(m.name for m in manifolds), sum(sizes), sum(m.dim for m in manifolds),
        lift2("exp"), lift2("log"), proj, lift2("proj_tangent"), dist, geodesic, sample_uniform,
        sum(m.log_volume for m in manifolds), belongs,
    )


def geodesic_path(manifold: Manifold, x0: Array, x1: Array, t: Array) -> tuple[Array, Array]:
    """Geodesic interpolant and its velocity (Chen & Lipman 2302.03660, eq. 13 with kappa = 1 - t).

    Returns ``x_t = exp_{x0}(t log_{x0} x1)`` and ``u_t = d x_t / dt``, which equals
    ``log_{x_t}(x1) / (1 - t)`` (eq. 12) and has constant norm ``dist(x0, x1)``.
    Shapes: ``x0, x1 (n, D)``, ``t (n,)``.
    """
    _checks.check_float_array("x0", x0, ndim=2)
    _checks.check_same_shape("x0", x0, "x1", x1)
    _checks.check_time("t", t, x0.shape[0])
    t = jnp.broadcast_to(jnp.asarray(t, x0.dtype), (x0.shape[0],))
    return manifold.geodesic(x0, x1, t)


def conditional_velocity(manifold: Manifold, x_t: Array, x1: Array, t: Array) -> Array:
    """``u_t(x | x1) = log_x(x1) / (1 - t)`` (Chen & Lipman 2302.03660, eq. 12), for ``t < 1``."""
    t = jnp.broadcast_to(jnp.asarray(t, x_t.dtype), (x_t.shape[0],))
    return manifold.log(x_t, x1) / (1.0 - t)[:, None]


SOLVERS = ("euler", "midpoint")


def ode(
    v_fn: Callable[..., Array],
    x0: Array,
    manifold: Manifold,
    *,
    t0: float = 0.0,
    t1: float = 1.0,
    steps: int = 100,
    solver: str = "euler",
    save_trajectory: bool = False,
    c: Any = None,
) -> Array:
    """Integrate ``dx/dt = v(x, t)`` on ``manifold`` with exponential-map steps.

    Euler (Chen & Lipman 2302.03660, sec. 3.3 / facebookresearch flow_matching):
    ``x_{k+1} = exp_{x_k}(h P_{x_k} v(x_k, t_k))``. Midpoint (ours): the field at
    ``x_mid = exp_{x_k}(h/2 P v(x_k, t_k))``, projected to ``T_{x_k} M``, drives the full step.
    Every state is on the manifold by construction (``exp`` ends with the manifold projection).

    Args:
      v_fn: ``v(x, t)`` with ``x (n, D)``, ``t (n,)``; its output is projected to the tangent space.
      x0: ``(n, D)`` points on the manifold (projected once on entry).
      manifold: a :class:`Manifold`.
      t0, t1: start and end time (``t1 < t0`` integrates backwards).
      steps: number of uniform steps.
      solver: ``"euler"`` or ``"midpoint"``.
      save_trajectory: also return all states ``(steps + 1, n, D)``.
      c: optional condition passed as ``v(x, t, c=c)``.
    Returns:
      ``x(t1)`` of shape ``(n, D)``, or the trajectory when ``save_trajectory``.
    """
    _checks.check_float_array("x0", x0, ndim=2)
    if x0.shape[-1] != manifold.ambient_dim:
        raise ValueError(f"`x0` must have last axis {manifold.ambient_dim} for {manifold.name}, got shape {tuple(x0.shape)}.")
    _checks.check_positive_int("steps", steps)
    _checks.check_choice("solver", solver, SOLVERS)
    n = x0.shape[0]
    h = (t1 - t0) / steps

    def field(x: Array, t: Array) -> Array:
        tv = jnp.full((n,), t, x.dtype)
        out = v_fn(x, tv) if c is None else v_fn(x, tv, c=c)
        return manifold.proj_tangent(x, out)

    def step(x: Array, k: Array) -> tuple[Array, Array]:
        t = t0 + k * h
        v = field(x, t)
        if solver == "midpoint":
            x_mid = manifold.exp(x, 0.5 * h * v)
            v = manifold.proj_tangent(x, field(x_mid, t + 0.5 * h))
        x_new = manifold.exp(x, h * v)
        return x_new, x_new

    x_init = manifold.proj(x0)
    x_end, traj = jax.lax.scan(step, x_init, jnp.arange(steps, dtype=x0.dtype))
    if save_trajectory:
        return jnp.concatenate([x_init[None], traj], axis=0)
    return x_end


def divergence(v_fn: Callable[..., Array], x: Array, t: Array, manifold: Manifold) -> Array:
    """Riemannian divergence ``div_M(P v)(x) = tr(P_x J)`` of the tangent field ``P_x v(x, t)``, ``(n,)``.

    For a submanifold isometrically embedded in ``R^D``, ``div_M V = sum_i <e_i, D_{e_i} V>`` over an
    orthonormal tangent basis, i.e. the trace of the ambient Jacobian ``J`` of any extension of ``V``
    composed with the tangent projection (standard; the extension here is ``x -> P_x v(x, t)``).
    Exact (forward-mode Jacobian, ``D`` JVPs per sample).
    """

    def field_one(xi: Array, ti: Array) -> Array:
        return manifold.proj_tangent(xi[None], v_fn(xi[None], ti[None]))[0]

    def div_one(xi: Array, ti: Array) -> Array:
        jac = jax.jacfwd(field_one)(xi, ti)  # (D, D), column j = d field / d x_j
        pj = manifold.proj_tangent(jnp.broadcast_to(xi, jac.shape), jac.T)  # rows = P applied to columns
        return jnp.trace(pj)

    t = jnp.broadcast_to(jnp.asarray(t, x.dtype), (x.shape[0],))
    return jax.vmap(div_one)(x, t)


def log_likelihood(
    v_fn: Callable[..., Array],
    x1: Array,
    manifold: Manifold,
    *,
    log_p0: Callable[[Array], Array] | None = None,
    steps: int = 100,
) -> Array:
    """``log p_1(x1) = log p_0(x_0) - int_0^1 div_M v(x_t, t) dt`` along the flow (Chen & Lipman
    2302.03660, sec. 3.3, the Riemannian instantaneous change of variables), ``(n,)``.

    Integrates backwards from ``t = 1`` to ``t = 0`` with exp-map midpoint steps (ours); the
    divergence is exact (:func:`divergence`) and evaluated at the midpoint. ``log_p0`` defaults to
    the uniform density ``-log vol(M)``.
    """
    _checks.check_float_array("x1", x1, ndim=2)
    _checks.check_positive_int("steps", steps)
    n = x1.shape[0]
    h = 1.0 / steps

    def field(x: Array, t: Array) -> Array:
        return manifold.proj_tangent(x, v_fn(x, jnp.full((n,), t, x.dtype)))

    def step(carry, k):
        x, acc = carry
        t = 1.0 - k * h
        x_mid = manifold.exp(x, -0.5 * h * field(x, t))
        t_mid = t - 0.5 * h
        v_mid = manifold.proj_tangent(x, field(x_mid, t_mid))
        acc = acc + h * divergence(v_fn, x_mid, jnp.full((n,), t_mid, x.dtype), manifold)
        return (manifold.exp(x, -h * v_mid), acc), None

    (x0, acc), _ = jax.lax.scan(step, (manifold.proj(x1), jnp.zeros((n,), x1.dtype)), jnp.arange(steps, dtype=x1.dtype))
    lp0 = log_p0(x0) if log_p0 is not None else jnp.full((n,), -manifold.log_volume, x1.dtype)
    return lp0 - acc


def wrapped_normal_mixture(
    means: Array, stds: Array, weights: Array | None = None, *, terms: int = 3
) -> tuple[Callable[[Array, int], Array], Callable[[Array], Array]]:
    """A mixture of isotropic wrapped normals on the flat torus ``T^d = [-pi, pi)^d``: ``(sample, log_prob)``.

    ``p(x) = sum_c w_c prod_i sum_{k=-K..K} N(x_i + 2 pi k; mu_ci, s_c^2)`` (the standard wrapped normal,
    e.g. Mardia & Jupp, Directional Statistics, sec. 3.5; truncated at ``K = terms`` windings, relative
    error below ``exp(-(2K+1)^2 pi^2 / (2 s^2))`` per coordinate for ``s <= pi``). ``sample(key, n)``
    draws ``wrap(mu_c + s_c eps)``. ``means`` ``(C, d)``, ``stds`` ``(C,)``, ``weights`` ``(C,)``
    (default equal). This is the known density the torus experiments and tests compare with.
    """
    means = jnp.asarray(means)
    stds = jnp.asarray(stds, means.dtype)
    if means.ndim != 2 or stds.shape != (means.shape[0],):
        raise ValueError(f"`means` must be (C, d) and `stds` (C,), got {means.shape} and {stds.shape}.")
    c, d = means.shape
    w = jnp.full((c,), 1.0 / c, means.dtype) if weights is None else jnp.asarray(weights, means.dtype) / jnp.sum(jnp.asarray(weights))
    shifts = 2 * jnp.pi * jnp.arange(-terms, terms + 1, dtype=means.dtype)

    def log_prob(x: Array) -> Array:
        diff = x[:, None, :, None] - means[None, :, :, None] + shifts[None, None, None, :]  # (n, C, d, 2K+1)
        s = stds[None, :, None, None]
        lp1 = jax.nn.logsumexp(-0.5 * (diff / s) ** 2, axis=-1) - jnp.log(s[..., 0]) - 0.5 * math.log(2 * math.pi)
        return jax.nn.logsumexp(jnp.log(w)[None] + jnp.sum(lp1, -1), axis=-1)

    def sample(key: Array, n: int) -> Array:
        kc, kx = jax.random.split(key)
        comp = jax.random.choice(kc, c, (n,), p=w)
        return _wrap(means[comp] + stds[comp][:, None] * jax.random.normal(kx, (n, d), means.dtype))

    return sample, log_prob


__all__ = [
    "Manifold",
    "SOLVERS",
    "conditional_velocity",
    "divergence",
    "flat_torus",
    "geodesic_path",
    "log_likelihood",
    "ode",
    "product",
    "sphere",
    "wrapped_normal_mixture",
]
