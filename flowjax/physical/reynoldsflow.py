"""ReynoldsFlow: a training-free flow estimate from the Reynolds transport theorem, HSV and RGB encodings.

Paper: Y.-H. Chen and C.-T. Wu, *ReynoldsFlow: Exquisite Flow Estimation via Reynolds Transport
Theorem*, arXiv:2503.04500 (2025). Spec: ``shared/papers/reynoldsflow.md``.

Provenance (read this before citing numbers). The paper's full text was not available when this
module was written; only the abstract is. What is the PAPER'S:
  * a training-free flow "inspired by the Reynolds transport theorem", using the Helmholtz
    decomposition and giving an *irrotational* Reynolds flow ``v_r`` that is robust to lighting;
  * the conventional HSV (OpenCV colour-wheel) encoding of a flow;
  * the RGB encoding "ReynoldsFlow+" that stacks ``|v_o|``, ``|v_r|`` and the frame ``f^n``.
What is OURS / DERIVED (spec §3.2-3.3, not the paper's equations):
  * ``v_o`` is the minimum-norm brightness-constancy ("normal") flow
    ``v_o = -f_t grad f / (|grad f|^2 + eps_g)``;
  * ``v_r``: intensity conserved over material regions (transport theorem) gives the continuity
    equation ``f_t + div(f v) = 0``; the flux ``q = f v`` is taken irrotational, ``q = grad Phi``,
    so ``Lap Phi = -(f_t - g)`` with ``g = mean(f_t)`` (Neumann compatibility; ``g`` is the global
    illumination change), solved in closed form by a DCT-II diagonalisation of the 5-point Neumann
    Laplacian; ``v_r = grad_fwd Phi / (fbar + eps_f)``;
  * the channel order (R, G, B) = (N|v_o|, N|v_r|, f^n) of ReynoldsFlow+ is assumed.

Conventions: frames are grayscale ``(H, W)`` arrays in [0, 1]; time is the *video* frame index,
not the project's generative time. A flow is an ``(H, W, 2)`` array ``(v_x, v_y)`` = (column,
row) displacement in pixels per frame, with y pointing DOWN (OpenCV convention). All functions act
on one frame pair; use ``jax.vmap`` (or :func:`flow_sequence`) for batches.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.fft import dctn, idctn
from jaxtyping import Array, Float

from flowjax._checks import check_float_array, check_same_shape

LUMA_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R 601

__all__ = [
    "rgb_to_gray", "central_gradient", "forward_gradient", "backward_divergence", "neumann_laplacian",
    "discrete_curl", "poisson_neumann", "normal_flow", "reynolds_potential", "reynolds_flux",
    "reynolds_flow", "translation_from_normal_flow", "flow_sequence", "minmax_normalize", "hsv_components", "hsv_to_rgb",
    "hsv_encoding", "rgb_plus_encoding", "to_uint8",
]


def _check_frame(name: str, f) -> None:
    check_float_array(name, f, ndim=2)


def _check_flow(name: str, v) -> None:
    check_float_array(name, v, ndim=3)
    if v.shape[-1] != 2:
        raise ValueError(f"`{name}` must have shape (H, W, 2), got {tuple(v.shape)}.")


def rgb_to_gray(frames: Float[Array, "... 3"]) -> Float[Array, "..."]:
    """ITU-R 601 luma ``0.299 R + 0.587 G + 0.114 B`` over the last (channel) axis (spec §3.1)."""
    check_float_array("frames", frames, min_ndim=1)
    if frames.shape[-1] != 3:
        raise ValueError(f"`frames` must have 3 channels on the last axis, got shape {tuple(frames.shape)}.")
    w = jnp.asarray(LUMA_WEIGHTS, frames.dtype)
    return jnp.tensordot(frames, w, axes=([-1], [0]))


def central_gradient(f: Float[Array, "H W"]) -> Float[Array, "H W 2"]:
    """Central differences (one-sided at the border), returned as ``(d/dx, d/dy)`` = (column, row)."""
    gy, gx = jnp.gradient(f)
    return jnp.stack([gx, gy], axis=-1)


def forward_gradient(phi: Float[Array, "H W"]) -> Float[Array, "H W 2"]:
    """Forward differences with zero flux through the last column/row (homogeneous Neumann).

    Pairs with :func:`backward_divergence` so that ``backward_divergence(forward_gradient(phi))``
    equals :func:`neumann_laplacian` exactly (spec §3.3 step 6, pitfall "stencil pairing").
    """
    zc = jnp.zeros_like(phi[:, :1])
    zr = jnp.zeros_like(phi[:1, :])
    gx = jnp.concatenate([phi[:, 1:] - phi[:, :-1], zc], axis=1)
    gy = jnp.concatenate([phi[1:, :] - phi[:-1, :], zr], axis=0)
    return jnp.stack([gx, gy], axis=-1)


def backward_divergence(q: Float[Array, "H W 2"]) -> Float[Array, "H W"]:
    """Backward-difference divergence with zero flux entering through the first column/row."""
    qx, qy = q[..., 0], q[..., 1]
    dx = qx - jnp.concatenate([jnp.zeros_like(qx[:, :1]), qx[:, :-1]], axis=1)
    dy = qy - jnp.concatenate([jnp.zeros_like(qy[:1, :]), qy[:-1, :]], axis=0)
    return dx + dy


def neumann_laplacian(phi: Float[Array, "H W"]) -> Float[Array, "H W"]:
    """5-point Laplacian with mirrored ghost cells (homogeneous Neumann), diagonalised by DCT-II."""
    p = jnp.pad(phi, 1, mode="edge")
    return p[:-2, 1:-1] + p[2:, 1:-1] + p[1:-1, :-2] + p[1:-1, 2:] - 4.0 * phi


def discrete_curl(q: Float[Array, "H W 2"]) -> Float[Array, "H-1 W-1"]:
    """Staggered curl ``D_x q_y - D_y q_x`` on the (H-1)x(W-1) interior cells; 0 for ``q = grad_fwd Phi``."""
    qx, qy = q[..., 0], q[..., 1]
    return (qy[:-1, 1:] - qy[:-1, :-1]) - (qx[1:, :-1] - qx[:-1, :-1])


def _dct_eigenvalues(h: int, w: int, dtype) -> jax.Array:
    k = jnp.arange(w, dtype=dtype)
    l = jnp.arange(h, dtype=dtype)
    return (2.0 * jnp.cos(jnp.pi * l / h) - 2.0)[:, None] + (2.0 * jnp.cos(jnp.pi * k / w) - 2.0)[None, :]


def poisson_neumann(rhs: Float[Array, "H W"]) -> Float[Array, "H W"]:
    """Solve ``neumann_laplacian(Phi) = rhs - mean(rhs)`` with ``mean(Phi) = 0`` (closed form, DCT-II).

    Eigenvalues ``lambda_kl = 2cos(pi k/W) + 2cos(pi l/H) - 4``; the DC mode is set to zero, which
    both removes ``mean(rhs)`` (the compatibility condition) and fixes ``mean(Phi) = 0``. Derived
    (spec §3.3 step 5), O(HW log HW).
    """
    _check_frame("rhs", rhs)
    h, w = rhs.shape
    r_hat = dctn(rhs, type=2, norm="ortho")
    lam = _dct_eigenvalues(h, w, rhs.dtype)
    lam_safe = lam.at[0, 0].set(1.0)
    phi_hat = (r_hat / lam_safe).at[0, 0].set(0.0)
    return idctn(phi_hat, type=2, norm="ortho")


def normal_flow(f0: Float[Array, "H W"], f1: Float[Array, "H W"], *, eps_g: float = 1e-3) -> Float[Array, "H W 2"]:
    """Conventional flow ``v_o = -f_t grad fbar / (|grad fbar|^2 + eps_g)`` (derived, spec §3.2).

    Minimum-norm solution of brightness constancy ``f_t + v . grad f = 0``; ``grad`` is central
    differences on ``fbar = (f0 + f1)/2`` (a midpoint rule, so a translation by ``d`` gives
    ``f_t = -d . grad fbar + O(|d|^3)``).
    """
    _check_frame("f0", f0)
    _check_frame("f1", f1)
    check_same_shape("f0", f0, "f1", f1)
    ft = f1 - f0
    grad = central_gradient(0.5 * (f0 + f1))
    denom = jnp.sum(grad**2, axis=-1) + eps_g
    return -(ft / denom)[..., None] * grad


def translation_from_normal_flow(v_o: Float[Array, "H W 2"], f0: Float[Array, "H W"], f1: Float[Array, "H W"]) -> Float[Array, "2"]:
    """Least-squares global translation ``d`` whose normal component matches ``v_o`` (ours).

    ``v_o`` only fixes ``d . grad f`` per pixel (aperture problem); pooling over the frame,
    ``d = (sum g g^T)^{-1} sum g (g . v_o)`` with ``g = grad fbar`` recovers a global translation
    when the texture has gradients in both directions (structure tensor of full rank).
    """
    _check_flow("v_o", v_o)
    g = central_gradient(0.5 * (f0 + f1)).reshape(-1, 2)
    a = g.T @ g
    b = g.T @ jnp.sum(g * v_o.reshape(-1, 2), axis=-1)
    return jnp.linalg.solve(a, b)


def reynolds_potential(f0: Float[Array, "H W"], f1: Float[Array, "H W"]) -> tuple[Float[Array, "H W"], Float[Array, ""]]:
    """Potential ``Phi`` of the irrotational intensity flux and global illumination change ``g``.

    ``Lap_h Phi = -(f_t - g)``, ``g = mean(f_t)``, Neumann boundary (derived, spec §3.3).
    """
    _check_frame("f0", f0)
    _check_frame("f1", f1)
    check_same_shape("f0", f0, "f1", f1)
    ft = f1 - f0
    g = jnp.mean(ft)
    return poisson_neumann(-(ft - g)), g


def reynolds_flux(f0: Float[Array, "H W"], f1: Float[Array, "H W"]) -> tuple[Float[Array, "H W 2"], Float[Array, ""]]:
    """Irrotational flux ``q_r = grad_fwd Phi`` with ``div_h q_r = -(f_t - g)`` exactly; returns ``(q_r, g)``."""
    phi, g = reynolds_potential(f0, f1)
    return forward_gradient(phi), g


def reynolds_flow(f0: Float[Array, "H W"], f1: Float[Array, "H W"], *, eps_f: float = 1e-2,
                  encode_flux: bool = False) -> Float[Array, "H W 2"]:
    """Reynolds flow ``v_r = q_r / (fbar + eps_f)`` (derived closed form, spec §3.3 step 6).

    ``encode_flux=True`` returns the flux ``q_r`` itself (spec pitfall "division by intensity").
    """
    q, _ = reynolds_flux(f0, f1)
    if encode_flux:
        return q
    fbar = 0.5 * (f0 + f1)
    return q / (fbar + eps_f)[..., None]


def flow_sequence(frames: Float[Array, "T H W"], *, eps_g: float = 1e-3, eps_f: float = 1e-2) -> tuple[Float[Array, "T-1 H W 2"], Float[Array, "T-1 H W 2"]]:
    """``(v_o, v_r)`` for every consecutive pair of a grayscale sequence (vmapped)."""
    check_float_array("frames", frames, ndim=3)
    if frames.shape[0] < 2:
        raise ValueError(f"`frames` must hold at least 2 frames, got shape {tuple(frames.shape)}.")
    f0, f1 = frames[:-1], frames[1:]
    vo = jax.vmap(lambda a, b: normal_flow(a, b, eps_g=eps_g))(f0, f1)
    vr = jax.vmap(lambda a, b: reynolds_flow(a, b, eps_f=eps_f))(f0, f1)
    return vo, vr


def minmax_normalize(a: Float[Array, "H W"], *, a_floor: float | None = None) -> Float[Array, "H W"]:
    """``N(a) = (a - min a) / (max a - min a + 1e-8)`` per frame, in [0, 1] (spec §3.4).

    With ``a_floor`` (spec §7, ours) the denominator is ``max(max a, a_floor) - min a + 1e-8`` so
    near-static frames are not amplified; the floor breaks scale invariance, so it is off by default.
    """
    lo, hi = jnp.min(a), jnp.max(a)
    if a_floor is not None:
        hi = jnp.maximum(hi, a_floor)
    return (a - lo) / (hi - lo + 1e-8)


def hsv_components(v: Float[Array, "H W 2"], *, a_floor: float | None = None) -> Float[Array, "H W 3"]:
    """OpenCV-style flow HSV: hue in [0, 180) (degrees/2 of ``atan2(v_y, v_x)`` mapped to [0, 2pi)),
    S = 255, V = 255 * N(|v|) (paper: conventional encoding; details per spec §3.4)."""
    _check_flow("v", v)
    theta = jnp.mod(jnp.arctan2(v[..., 1], v[..., 0]), 2.0 * jnp.pi)
    hue = jnp.mod(theta * 180.0 / (2.0 * jnp.pi), 180.0)
    mag = jnp.sqrt(jnp.sum(v**2, axis=-1))
    val = 255.0 * minmax_normalize(mag, a_floor=a_floor)
    return jnp.stack([hue, jnp.full_like(hue, 255.0), val], axis=-1)


def hsv_to_rgb(hsv: Float[Array, "... 3"]) -> Float[Array, "... 3"]:
    """OpenCV-range HSV (H in [0,180), S,V in [0,255]) -> RGB floats in [0, 1] (standard hexcone map)."""
    h = hsv[..., 0] / 30.0  # sector index in [0, 6)
    s = hsv[..., 1] / 255.0
    val = hsv[..., 2] / 255.0
    def chan(n):
        k = jnp.mod(n + h, 6.0)
        return val - val * s * jnp.clip(jnp.minimum(k, 4.0 - k), 0.0, 1.0)
    return jnp.stack([chan(5.0), chan(3.0), chan(1.0)], axis=-1)


def hsv_encoding(v: Float[Array, "H W 2"], *, a_floor: float | None = None) -> Float[Array, "H W 3"]:
    """HSV colour-wheel encoding of a flow as an RGB image in [0, 1] (the paper's conventional input)."""
    return hsv_to_rgb(hsv_components(v, a_floor=a_floor))


def rgb_plus_encoding(v_o: Float[Array, "H W 2"], v_r: Float[Array, "H W 2"], f0: Float[Array, "H W"], *,
                      a_floor: float | None = None) -> Float[Array, "H W 3"]:
    """ReynoldsFlow+ ``[N|v_o|, N|v_r|, f^n]`` in [0, 1] (paper's channels; R,G,B order assumed)."""
    _check_flow("v_o", v_o)
    _check_flow("v_r", v_r)
    _check_frame("f0", f0)
    r = minmax_normalize(jnp.sqrt(jnp.sum(v_o**2, axis=-1)), a_floor=a_floor)
    g = minmax_normalize(jnp.sqrt(jnp.sum(v_r**2, axis=-1)), a_floor=a_floor)
    return jnp.stack([r, g, f0.astype(r.dtype)], axis=-1)


def to_uint8(x: Float[Array, "..."]) -> jax.Array:
    """Round a [0, 1] encoding to uint8 [0, 255] (do this only at the boundary; spec §7)."""
    return jnp.clip(jnp.round(x * 255.0), 0, 255).astype(jnp.uint8)
