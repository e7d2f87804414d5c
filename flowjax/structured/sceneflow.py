"""SCOOP (Lang et al., arXiv 2211.14020): self-supervised soft-correspondence scene flow with
test-time refinement. Scene flow is a per-point displacement ``f_i`` (in project terms the
one-interval average velocity ``u(x_i, 0, 1)``); there is no probability path.

Pieces (equations from the official code, as recorded in spec scoop.md §3):

- :class:`SetConvFeatures`: point features φ (3 SetConv layers 32→64→128 on a kNN graph, each
  ``[h_j ‖ x_j − x_i]`` → (Dense without bias → InstanceNorm with affine → LeakyReLU 0.1)×convs →
  max over neighbours) plus the learnable OT scalars ``ε = exp(ε̃) + 0.03``, ``γ = exp(γ̃)``.
- :func:`sinkhorn_unbalanced`: KL-relaxed Sinkhorn with power ``p = γ/(γ+ε)``, ``a = 1/n``;
  ``b ← ((1/m)/(Kᵀa))^p``, ``a ← ((1/n)/(K b))^p`` (``+1e-8`` in denominators), ``T = diag(a)K diag(b)``,
  ``K = exp(−C/ε)·1[‖x−y‖² < R²]``, ``C = 1 − cos(F_i, G_j)``; default ``L = 1`` iteration (code).
  With ``p = 1`` and many iterations it is balanced entropic OT; the tests compare it with ott-jax.
- :func:`soft_correspondence`: top-k rows of T → ``ŷ_i``, ``f⁰ = ŷ − x``, confidence
  ``c_i = relu(Σ_{j∈N_i} w_ij cos(F_i, G_j))``.
- :func:`scoop_loss`: ``CD_w(Ŷ, Y) + λ_c (1 − mean c) + λ_s L_smooth(f⁰)`` (no flow labels).
- :func:`refine_flow`: test-time ``f = sg[f⁰] + r``, Adam on ``r`` for
  ``J(r) = mean_i c_i min_j ‖x_i + f_i − y_j‖² + β mean_j min_i ‖·‖² + λ L_smooth(f)``, ``c`` detached.
"""

from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from jaxtyping import Array

from flowjax import _checks
from flowjax.metrics_3d import pairwise_sq_dists


def knn_indices(x: Array, k: int) -> Array:
    """Indices ``(…, n, k)`` of the k nearest points of each point in ``x (…, n, 3)``; the point itself first."""
    d2 = pairwise_sq_dists(x, x)
    # the point itself has distance exactly 0 only up to rounding: force it to come first
    n = x.shape[-2]
    d2 = jnp.where(jnp.eye(n, dtype=bool), -1.0, d2)
    return jax.lax.top_k(-d2, k)[1]


def _gather(h: Array, idx: Array) -> Array:
    """``h (n, c)``, ``idx (n, k)`` → ``(n, k, c)``."""
    return h[idx]


class SetConvFeatures(nn.Module):
    """SCOOP's point-feature network φ (spec §3.1) and the learnable OT scalars (§3.2).

    ``apply(params, points (B, n, 3)) -> (features (B, n, widths[-1]), eps, gamma)``.
    ``convs`` = number of (Dense → InstanceNorm → LeakyReLU) per layer (code: 3).
    """

    widths: tuple[int, ...] = (32, 64, 128)
    k: int = 32
    convs: int = 3

    @nn.compact
    def __call__(self, points: Array):
        idx = jax.vmap(lambda p: knn_indices(p, self.k))(points)  # (B, n, k)
        rel = jax.vmap(lambda p, i: _gather(p, i) - p[:, None, :])(points, idx)  # (B, n, k, 3)
        h = points
        for li, w in enumerate(self.widths):
            z = jnp.concatenate([jax.vmap(_gather)(h, idx), rel], -1)
            for ci in range(self.convs):
                z = nn.Dense(w, use_bias=False, name=f"l{li}_c{ci}")(z)
                mu = jnp.mean(z, axis=(1, 2), keepdims=True)
                var = jnp.var(z, axis=(1, 2), keepdims=True)
                z = (z - mu) / jnp.sqrt(var + 1e-5)
                scale = self.param(f"l{li}_c{ci}_scale", nn.initializers.ones, (w,))
                bias = self.param(f"l{li}_c{ci}_bias", nn.initializers.zeros, (w,))
                z = nn.leaky_relu(z * scale[None, None, None] + bias[None, None, None], 0.1)
            h = jnp.max(z, axis=2)
        log_eps = self.param("log_eps", nn.initializers.zeros, ())
        log_gamma = self.param("log_gamma", nn.initializers.zeros, ())
        return h, jnp.exp(log_eps) + 0.03, jnp.exp(log_gamma)


def cosine_similarity(f: Array, g: Array) -> Array:
    """``cos(F_i, G_j)`` for ``f (…, n, c)``, ``g (…, m, c)`` → ``(…, n, m)``."""
    fn = f / (jnp.linalg.norm(f, axis=-1, keepdims=True) + 1e-8)
    gn = g / (jnp.linalg.norm(g, axis=-1, keepdims=True) + 1e-8)
    return fn @ jnp.swapaxes(gn, -1, -2)


def sinkhorn_unbalanced(
    cost: Array,
    *,
    epsilon: Array | float,
    gamma: Array | float,
    support: Array | None = None,
    num_iters: int = 1,
) -> Array:
    """SCOOP/FLOT KL-relaxed Sinkhorn plan ``T (…, n, m)`` (see module doc; code, not the paper text).

    ``p = γ/(γ+ε)``; pass ``gamma=jnp.inf`` for ``p = 1`` (balanced marginals at convergence).
    """
    _checks.check_float_array("cost", cost, min_ndim=2)
    _checks.check_positive_int("num_iters", num_iters)
    n, m = cost.shape[-2], cost.shape[-1]
    kern = jnp.exp(-cost / epsilon)
    if support is not None:
        kern = kern * support.astype(kern.dtype)
    p = jnp.where(jnp.isinf(gamma), 1.0, gamma / (gamma + epsilon))
    a = jnp.full(cost.shape[:-1], 1.0 / n, cost.dtype)
    b = jnp.full(cost.shape[:-2] + (m,), 1.0 / m, cost.dtype)

    def body(_, ab):
        a, _ = ab
        kta = jnp.einsum("...nm,...n->...m", kern, a)
        b = ((1.0 / m) / (kta + 1e-8)) ** p
        kb = jnp.einsum("...nm,...m->...n", kern, b)
        a = ((1.0 / n) / (kb + 1e-8)) ** p
        return a, b

    a, b = jax.lax.fori_loop(0, num_iters, body, (a, b))
    return a[..., :, None] * kern * b[..., None, :]


def soft_correspondence(plan: Array, target: Array, similarity: Array, *, k: int = 64) -> tuple[Array, Array]:
    """Top-k soft target and confidence (spec §3.2).

    ``w_ij = T_ij / (Σ_{j'∈N_i} T_ij' + 1e-8)`` over the k largest entries ``N_i`` of row i;
    ``ŷ_i = Σ w_ij y_j``; ``c_i = max(0, Σ w_ij cos_ij)``. ``k = 0`` uses the whole row.
    Shapes: ``plan, similarity (…, n, m)``, ``target (…, m, 3)`` → ``ŷ (…, n, 3)``, ``c (…, n)``.
    """
    if k == 0 or k >= plan.shape[-1]:
        w = plan / (jnp.sum(plan, -1, keepdims=True) + 1e-8)
        return w @ target, jnp.maximum(jnp.sum(w * similarity, -1), 0.0)
    vals, idx = jax.lax.top_k(plan, k)
    w = vals / (jnp.sum(vals, -1, keepdims=True) + 1e-8)
    y_k = _batched_take(target, idx)
    sim_k = jnp.take_along_axis(similarity, idx, axis=-1)
    y_hat = jnp.sum(w[..., None] * y_k, axis=-2)
    conf = jnp.maximum(jnp.sum(w * sim_k, -1), 0.0)
    return y_hat, conf


def _batched_take(target: Array, idx: Array) -> Array:
    """``target (…, m, 3)``, ``idx (…, n, k)`` → ``(…, n, k, 3)``."""
    if target.ndim == 2:
        return target[idx]
    return jax.vmap(_batched_take)(target, idx)


@jax.custom_jvp
def _abs(x: Array) -> Array:
    """``|x|`` with derivative ``sign(x)`` (0 at 0, as PyTorch's ``norm(p=1)``), so that a constant
    flow is a stationary point of the L1 smoothness term; ``jnp.abs`` would pick the subgradient 1."""
    return jnp.abs(x)


@_abs.defjvp
def _abs_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    return jnp.abs(x), jnp.sign(x) * dx


def smoothness_l1(flow: Array, neighbours: Array) -> Array:
    """``L_smooth(f) = mean_i (1/k_s) Σ_{j∈N(i)} ‖f_i − f_j‖₁`` (L1 of the 3-vector difference).

    ``neighbours (…, n, k_s + 1)`` from :func:`knn_indices` (self first; skipped here).
    """
    nb = neighbours[..., 1:]
    fj = _batched_take(flow, nb)
    return jnp.mean(jnp.sum(_abs(flow[..., :, None, :] - fj), -1))


def weighted_chamfer(pred: Array, target: Array, *, weights: Array | None = None, beta: float = 0.0) -> Array:
    """``mean_i w_i min_j ‖p_i − y_j‖² + β mean_j min_i ‖p_i − y_j‖²`` (weights on the forward term only)."""
    d2 = pairwise_sq_dists(pred, target)
    fwd = jnp.min(d2, -1)
    if weights is not None:
        fwd = weights * fwd
    out = jnp.mean(fwd, -1)
    if beta:
        out = out + beta * jnp.mean(jnp.min(d2, -2), -1)
    return jnp.mean(out)


def scoop_correspondence(
    feature_fn: Callable[[Array], tuple[Array, Array, Array]],
    source: Array,
    target: Array,
    *,
    num_iters: int = 1,
    k_corr: int = 64,
    radius: float = 10.0,
) -> tuple[Array, Array]:
    """Initial flow ``f⁰ = ŷ − x`` and confidence ``c`` for batches ``source (B, n, 3)``, ``target (B, m, 3)``."""
    fx, eps, gamma = feature_fn(source)
    gy, _, _ = feature_fn(target)
    sim = cosine_similarity(fx, gy)
    support = pairwise_sq_dists(source, target) < radius**2
    plan = sinkhorn_unbalanced(1.0 - sim, epsilon=eps, gamma=gamma, support=support, num_iters=num_iters)
    y_hat, conf = soft_correspondence(plan, target, sim, k=k_corr)
    return y_hat - source, conf


def scoop_loss(
    feature_fn: Callable[[Array], tuple[Array, Array, Array]],
    key: Array,
    source: Array,
    *,
    target: Array,
    lambda_conf: float = 0.1,
    lambda_smooth: float = 10.0,
    k_smooth: int = 32,
    num_iters: int = 1,
    k_corr: int = 64,
    radius: float = 10.0,
) -> tuple[Array, dict[str, Array]]:
    """SCOOP self-supervised training loss (spec §3.3; code): no flow labels.

    ``L = mean_i c_i min_j ‖ŷ_i − y_j‖² + λ_c (1 − mean c) + λ_s L_smooth(f⁰)``. Gradients flow
    through ŷ into T and into φ, ε, γ; the confidence is not detached (code).
    """
    del key
    _checks.check_float_array("source", source, ndim=3)
    _checks.check_float_array("target", target, ndim=3)
    f0, conf = scoop_correspondence(feature_fn, source, target, num_iters=num_iters, k_corr=k_corr, radius=radius)
    y_hat = source + f0
    cd = weighted_chamfer(y_hat, target, weights=conf)
    nb = jax.vmap(lambda p: knn_indices(p, k_smooth + 1))(source)
    smooth = smoothness_l1(f0, nb)
    mean_conf = jnp.mean(conf)
    loss = cd + lambda_conf * (1.0 - mean_conf) + lambda_smooth * smooth
    return loss, {"chamfer": cd, "confidence": mean_conf, "smooth": smooth}


def refinement_objective(
    flow: Array, source: Array, target: Array, neighbours: Array, *, confidence: Array | None = None,
    lambda_smooth: float = 1.0, beta: float = 0.0,
) -> Array:
    """``J(f) = mean_i c_i min_j ‖x_i + f_i − y_j‖² + β mean_j min_i ‖·‖² + λ L_smooth(f)`` (spec §3.4)."""
    return weighted_chamfer(source + flow, target, weights=confidence, beta=beta) + lambda_smooth * smoothness_l1(flow, neighbours)


def refine_flow(
    flow0: Array,
    source: Array,
    target: Array,
    *,
    confidence: Array | None = None,
    steps: int = 150,
    learning_rate: float = 0.05,
    lambda_smooth: float = 1.0,
    k_smooth: int = 16,
    beta: float = 0.0,
) -> Array:
    """Test-time flow refinement (spec §3.4): Adam on a residual ``r`` (init 0), ``f = sg[f⁰] + r``.

    ``J(r) = mean_i c_i min_j ‖x_i + f_i − y_j‖² + β mean_j min_i ‖x_i + f_i − y_j‖² + λ L_smooth(f)``
    with ``c = sg[c]`` (1 when None). One scene: ``flow0, source (n, 3)``, ``target (m, 3)``;
    ``vmap`` it for batches. Adam (β₁ = 0.9, β₂ = 0.999, 1e-8) written out so that the library
    does not depend on optax.
    """
    _checks.check_float_array("flow0", flow0, ndim=2)
    _checks.check_positive_int("steps", steps)
    f0 = jax.lax.stop_gradient(flow0)  # §3.4: only r is optimised
    c = None if confidence is None else jax.lax.stop_gradient(confidence)  # §3.4: confidence fixed
    nb = knn_indices(source, k_smooth + 1)

    grad = jax.grad(lambda r: refinement_objective(f0 + r, source, target, nb, confidence=c, lambda_smooth=lambda_smooth, beta=beta))

    def step(carry, i):
        r, m, v = carry
        g = grad(r)
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        t = (i + 1).astype(r.dtype)
        mh, vh = m / (1 - 0.9**t), v / (1 - 0.999**t)
        return (r - learning_rate * mh / (jnp.sqrt(vh) + 1e-8), m, v), None

    z = jnp.zeros_like(f0)
    (r, _, _), _ = jax.lax.scan(step, (z, z, z), jnp.arange(steps))
    return f0 + r


def nearest_neighbour_flow(source: Array, target: Array) -> Array:
    """Baseline ``f_i = NN_Y(x_i) − x_i`` for ``(…, n, 3)``, ``(…, m, 3)``."""
    idx = jnp.argmin(pairwise_sq_dists(source, target), -1)
    return _batched_take(target, idx[..., None])[..., 0, :] - source


__all__ = [
    "SetConvFeatures",
    "cosine_similarity",
    "knn_indices",
    "nearest_neighbour_flow",
    "refine_flow",
    "refinement_objective",
    "scoop_correspondence",
    "scoop_loss",
    "sinkhorn_unbalanced",
    "smoothness_l1",
    "soft_correspondence",
    "weighted_chamfer",
]
