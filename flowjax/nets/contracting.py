"""Residual velocity fields that are contracting by construction (for ResFT-FM, arXiv 2510.02081).

Spec mle-finetune.md section 3.3. The paper (v1 abstract and the OpenReview reviews) names a
"contraction-aware residual" satisfying an LMI; the full text was not available, so both
parameterisations below are ours (derived, exact by construction):

* linear: ``r(x, t) = -(L(t) L(t)^T + lam I)(x - m(t))``. Its Jacobian is
  ``J_r = -(L L^T + lam I)``, symmetric with ``sym(J_r) <= -lam I``.
* gradient of a strongly convex potential: ``r(x, t) = -grad_x Phi(x, t)`` with
  ``Phi = ICNN(x, t) + (lam / 2) |x|^2`` and ``ICNN`` convex in ``x`` (Amos et al. 1609.07698:
  non-negative weights on the hidden path, convex non-decreasing activations). Then
  ``J_r = -Hess Phi <= -lam I``.

Either way the residual system ``dx/dt = r(x, t) + w(t)`` is contracting with rate ``lam`` and
input-to-state stable in ``w`` (two trajectories approach like ``exp(-lam (t - s))``). The sum
``v_theta0 + r`` contracts only if ``lam`` exceeds the log-norm of the base field's Jacobian; one
explicit Euler step ``x + tau r(x)`` of the linear form contracts iff ``tau (lam + |L|^2) < 2``.

Both modules take ``(x, t)`` with ``x`` of shape ``(n, d)`` and ``t`` of shape ``(n,)``.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from flowjax import _checks
from flowjax.nets.embeddings import timestep_embedding


def linear_contracting_residual(
    x: Float[Array, "n d"], L: Float[Array, "n d d"], m: Float[Array, "n d"], *, lam: float
) -> Array:
    """``r = -(L L^T + lam I)(x - m)`` per sample (``L`` of shape ``(n, d, d)``, ``m`` ``(n, d)``)."""
    _checks.check_float_array("x", x, ndim=2)
    if L.shape != x.shape + (x.shape[-1],) or m.shape != x.shape:
        raise ValueError(f"`L` must have shape {x.shape + (x.shape[-1],)} and `m` {x.shape}; got {L.shape} and {m.shape}.")
    if lam < 0:
        raise ValueError(f"`lam` must be >= 0, got {lam}.")
    y = x - m
    lty = jnp.einsum("nji,nj->ni", L, y)  # L^T y
    return -(jnp.einsum("nij,nj->ni", L, lty) + lam * y)


class _TimeFeatures(nn.Module):
    dim: int

    @nn.compact
    def __call__(self, t: Array) -> Array:
        return nn.silu(nn.Dense(self.dim)(timestep_embedding(t, self.dim)))


class LinearContractingResidual(nn.Module):
    """``r_psi(x, t) = -(L(t) L(t)^T + lam I)(x - m(t))`` with ``L, m`` from a time MLP (ours).

    ``L`` and ``m`` come from zero-initialised dense heads on a time embedding, so at
    initialisation ``r = -lam x`` (and ``r == 0`` when ``lam == 0``: the reduction of spec test 6).
    """

    dim: int
    lam: float = 0.2
    time_dim: int = 32

    @nn.compact
    def __call__(self, x: Array, t: Array) -> Array:
        n, d = x.shape
        if d != self.dim:
            raise ValueError(f"LinearContractingResidual(dim={self.dim}) got x of shape {x.shape}.")
        h = _TimeFeatures(self.time_dim)(jnp.broadcast_to(t, (n,)).astype(x.dtype))
        L = nn.Dense(d * d, kernel_init=nn.initializers.zeros, name="L")(h).reshape(n, d, d)
        m = nn.Dense(d, kernel_init=nn.initializers.zeros, name="m")(h)
        return linear_contracting_residual(x, L, m, lam=self.lam)


class ICNNPotential(nn.Module):
    """Input-convex potential ``Phi(x, t)`` (convex in ``x`` for every ``t``), shape ``(n,)``.

    ``z_1 = softplus(W_0 x + b_0(t))``, ``z_{k+1} = softplus(U_k z_k + W_k x + b_k(t))`` with
    ``U_k = softplus(raw) >= 0``, ``Phi = a^T z_K + w^T x + b(t)`` with ``a >= 0`` (Amos et al.
    1609.07698; time enters only through biases, so convexity in ``x`` holds for each ``t``).
    """

    hidden: int = 64
    depth: int = 2
    time_dim: int = 32
    out_init: float = -4.0  # softplus(-4) ~ 0.018: the potential starts nearly linear

    @nn.compact
    def __call__(self, x: Array, t: Array) -> Array:
        n = x.shape[0]
        h = _TimeFeatures(self.time_dim)(jnp.broadcast_to(t, (n,)).astype(x.dtype))
        z = nn.softplus(nn.Dense(self.hidden, name="W_0")(x) + nn.Dense(self.hidden, name="b_0")(h))
        for k in range(1, self.depth):
            raw = self.param(f"U_{k}", nn.initializers.normal(0.1), (self.hidden, self.hidden), x.dtype)
            u = nn.softplus(raw - 2.0) / self.hidden  # non-negative: keeps convexity
            z = nn.softplus(z @ u + nn.Dense(self.hidden, use_bias=False, name=f"W_{k}")(x) + nn.Dense(self.hidden, name=f"b_{k}")(h))
        a = nn.softplus(self.param("a", nn.initializers.constant(self.out_init), (self.hidden,), x.dtype))
        lin = nn.Dense(1, kernel_init=nn.initializers.zeros, name="lin")(x)[:, 0]
        return z @ a + lin


def gradient_contracting_residual(
    potential_fn, x: Float[Array, "n d"], t: Array, *, lam: float
) -> Array:
    """``r(x, t) = -grad_x [Phi(x, t) + (lam/2) |x|^2]`` for a convex ``potential_fn(x, t) -> (n,)``.

    With ``potential_fn`` an :class:`ICNNPotential` applied to its parameters
    (``partial(icnn.apply, params)``), ``sym(J_r) = -Hess Phi - lam I <= -lam I`` (ours). Training
    through it is double backprop (spec section 4).
    """
    _checks.check_float_array("x", x, ndim=2)
    if lam < 0:
        raise ValueError(f"`lam` must be >= 0, got {lam}.")
    grad = jax.grad(lambda z: jnp.sum(potential_fn(z, t)))(x)  # rows are independent samples
    return -grad - lam * x


__all__ = [
    "ICNNPotential",
    "gradient_contracting_residual",
    "LinearContractingResidual",
    "linear_contracting_residual",
]
