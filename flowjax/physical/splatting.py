"""FlowGaussian-VR in 2-D: a differentiable Gaussian-splatting video renderer with velocity-field
rendering (VFR), the optical-flow loss, and flow-assisted adaptive densification (FAD).

Paper: Z. Li, X. Bai, T. Zhang, P. Shen, W. Xu, Y. Peng, *Enhanced Velocity Field Modeling for
Gaussian Video Reconstruction* ("FlowGaussian-VR"), arXiv:2507.23704 (ISMAR 2025). Spec:
``shared/papers/flowgaussian-vr.md``.

Provenance (read this before trusting a formula). Only the abstract, the project-page caption and a
third-party summary were available; no code exists.

* THE PAPER'S: each Gaussian carries a 2-D (projected) velocity; a velocity field is rendered
  alongside colour and supervised with optical flow (VFR); Gaussians are added/resized in dynamic
  regions guided by flow (FAD) "in the canonical space"; centres follow ``mu_i(tau) = mu_i^0 +
  D(mu_i^0, tau)`` (deformation-based 4DGS baseline).
* THE 3DGS / 4DGS BASELINE (Kerbl et al. 2023; Wu et al. 2024): front-to-back alpha compositing
  ``C(p) = sum_i T_i alpha_i c_i``, ``alpha_i = o_i exp(-1/2 |L_i^{-1}(p - m_i)|^2)`` clipped to 0.99
  and skipped below 1/255, ``L_rgb = 0.8 L1 + 0.2 (1 - SSIM)``, clone/split on the mean positional
  gradient, prune at opacity < 0.005.
* DERIVED (spec §3.2-3.3, following GaussianFlow, Gao et al. 2024): the finite-difference velocity
  ``v_i(tau) = mu_i(tau + dtau) - mu_i(tau)`` (pixels per frame step), blending it with the colour
  weights ``V(p) = sum_i T_i alpha_i v_i``, the masked L1 flow loss with the forward-backward mask
  and ``A > 0.5``, and every detail of FAD (dynamic mask ``|F| > tau_f``, error threshold, spawn in
  canonical space by fixed-point inversion of D, opacity 0.1, footprint / (1 + |F|/tau_f),
  shrinking oversized dynamic Gaussians by 0.8).
* OURS (the 2-D toy of spec §5): the camera is the identity (Gaussians live in pixel space, x =
  column, y = row, pixel centres at integer coordinates, as in :mod:`flowjax.physical.flowv2v`);
  each Gaussian has a fixed scalar depth used only for the sort order; the renderer is a dense
  (pixels x Gaussians) composite, not a tile rasteriser; a fixed slot capacity with an ``active``
  mask keeps shapes static under ``jit``; the deformation network is a plain-JAX Fourier-feature MLP.

Scene pytree (a ``dict``): ``mean (N, 2)``, ``log_scale (N, 2)`` (log of the Cholesky diagonal),
``offdiag (N,)`` (the Cholesky off-diagonal ``L_10``), ``color_logit (N, C)``, ``opacity_logit (N,)``,
``depth (N,)`` (not trained), ``active (N,)`` bool (not trained). ``Sigma_i = L_i L_i^T``.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

from flowjax._checks import check_choice, check_float_array
from flowjax.physical.flowv2v import occlusion_mask

__all__ = [
    "cholesky_factor", "render", "render_scene", "deformation_init", "deformation_apply", "deformed_scene",
    "finite_difference_velocity", "flow_loss", "forward_backward_mask", "photometric_loss", "ssim", "psnr",
    "init_scene", "gradient_densify", "flow_assisted_densify", "canonical_inverse", "TRAINABLE",
]

TRAINABLE = ("mean", "log_scale", "offdiag", "color_logit", "opacity_logit")


# --------------------------------------------------------------------------------------------------
# renderer
# --------------------------------------------------------------------------------------------------

def cholesky_factor(log_scale: Float[Array, "N 2"], offdiag: Float[Array, "N"]) -> Float[Array, "N 2 2"]:
    """Lower-triangular ``L = [[exp(s0), 0], [offdiag, exp(s1)]]`` with ``Sigma = L L^T`` (log-diagonal, spec §5)."""
    check_float_array("log_scale", log_scale, ndim=2)
    check_float_array("offdiag", offdiag, ndim=1)
    if log_scale.shape[-1] != 2 or offdiag.shape[0] != log_scale.shape[0]:
        raise ValueError(f"`log_scale` must be (N, 2) and `offdiag` (N,), got {tuple(log_scale.shape)} and {tuple(offdiag.shape)}.")
    d = jnp.exp(log_scale)
    z = jnp.zeros_like(offdiag)
    return jnp.stack([jnp.stack([d[:, 0], z], -1), jnp.stack([offdiag, d[:, 1]], -1)], -2)


def render(means: Float[Array, "N 2"], chol: Float[Array, "N 2 2"], opacity: Float[Array, "N"],
           features: Float[Array, "N K"], depth: Float[Array, "N"], *, height: int, width: int,
           active: Bool[Array, "N"] | None = None, alpha_max: float = 0.99,
           alpha_min: float = 1.0 / 255.0) -> tuple[Float[Array, "H W K"], Float[Array, "H W"]]:
    """Dense front-to-back alpha compositing of 2-D Gaussians (3DGS rule, spec §3.1; the identity camera is ours).

    ``alpha_i(p) = min(o_i exp(-1/2 |L_i^{-1}(p - m_i)|^2), alpha_max)``, set to 0 below ``alpha_min``;
    Gaussians sorted by ascending ``depth`` (front first), ``T_i = prod_{j<i} (1 - alpha_j)``.
    Returns ``(F, A)`` with ``F(p) = sum_i T_i alpha_i f_i`` for every feature channel (colour,
    velocity, depth: one fused pass, spec §4) and ``A(p) = sum_i T_i alpha_i = 1 - prod_i (1 - alpha_i)``.
    Pixel ``(row, col)`` has position ``p = (col, row)``. ``alpha_min=0`` makes the map smooth.
    """
    check_float_array("means", means, ndim=2)
    n = means.shape[0]
    if means.shape[1] != 2:
        raise ValueError(f"`means` must have shape (N, 2), got {tuple(means.shape)}.")
    check_float_array("chol", chol, ndim=3)
    if chol.shape != (n, 2, 2):
        raise ValueError(f"`chol` must have shape {(n, 2, 2)}, got {tuple(chol.shape)}.")
    check_float_array("opacity", opacity, ndim=1)
    check_float_array("features", features, ndim=2)
    check_float_array("depth", depth, ndim=1)
    if opacity.shape != (n,) or depth.shape != (n,) or features.shape[0] != n:
        raise ValueError(f"`opacity`, `depth` must be ({n},) and `features` ({n}, K); got "
                         f"{tuple(opacity.shape)}, {tuple(depth.shape)}, {tuple(features.shape)}.")
    if active is not None:
        if tuple(active.shape) != (n,):
            raise ValueError(f"`active` must have shape ({n},), got {tuple(active.shape)}.")
        opacity = jnp.where(active, opacity, 0.0)
    order = jnp.argsort(depth, stable=True)  # front (small depth) first; the order carries no gradient
    m, l, o, f = means[order], chol[order], opacity[order], features[order]
    rows, cols = jnp.meshgrid(jnp.arange(height, dtype=means.dtype), jnp.arange(width, dtype=means.dtype), indexing="ij")
    px = jnp.stack([cols.reshape(-1), rows.reshape(-1)], -1)  # (P, 2) as (x, y)
    d = px[:, None, :] - m[None, :, :]  # (P, N, 2)
    z0 = d[..., 0] / l[None, :, 0, 0]  # solve L z = d (lower triangular)
    z1 = (d[..., 1] - l[None, :, 1, 0] * z0) / l[None, :, 1, 1]
    alpha = o[None, :] * jnp.exp(-0.5 * (z0**2 + z1**2))
    alpha = jnp.minimum(alpha, alpha_max)
    alpha = jnp.where(alpha < alpha_min, 0.0, alpha)
    trans = jnp.cumprod(1.0 - alpha, axis=1)
    trans = jnp.concatenate([jnp.ones_like(trans[:, :1]), trans[:, :-1]], axis=1)  # exclusive product
    w = trans * alpha
    out = w @ f
    acc = jnp.sum(w, axis=1)
    return out.reshape(height, width, -1), acc.reshape(height, width)


def render_scene(scene: dict, *, height: int, width: int, velocity: Float[Array, "N 2"] | None = None,
                 means: Float[Array, "N 2"] | None = None, log_scale: Float[Array, "N 2"] | None = None,
                 **kw) -> dict:
    """Render colour (sigmoid of ``color_logit``), optional velocity ``V`` and depth in one pass.

    ``means``/``log_scale`` override the canonical ones (use :func:`deformed_scene`). Returns a dict
    with ``color (H, W, C)``, ``alpha (H, W)``, ``depth (H, W)`` (``sum T alpha z / A``, 0 where
    ``A = 0``) and, if ``velocity`` is given, the unnormalised ``velocity (H, W, 2)``.
    """
    means = scene["mean"] if means is None else means
    log_scale = scene["log_scale"] if log_scale is None else log_scale
    col = jax.nn.sigmoid(scene["color_logit"])
    feats = [col, scene["depth"][:, None].astype(col.dtype)]
    if velocity is not None:
        feats.append(velocity)
    f = jnp.concatenate(feats, axis=-1)
    out, acc = render(means, cholesky_factor(log_scale, scene["offdiag"]), jax.nn.sigmoid(scene["opacity_logit"]), f,
                      scene["depth"], height=height, width=width, active=scene.get("active"), **kw)
    c = col.shape[-1]
    res = {"color": out[..., :c], "alpha": acc,
           "depth": jnp.where(acc > 0, out[..., c] / jnp.where(acc > 0, acc, 1.0), 0.0)}
    if velocity is not None:
        res["velocity"] = out[..., c + 1:]
    return res


# --------------------------------------------------------------------------------------------------
# deformation field and finite-difference velocity
# --------------------------------------------------------------------------------------------------

def _fourier(x, num_freqs):
    freqs = (2.0 ** jnp.arange(num_freqs, dtype=x.dtype)) * jnp.pi
    ang = x[..., :, None] * freqs.reshape((1,) * x.ndim + (-1,))
    return jnp.concatenate([x, jnp.sin(ang).reshape(*x.shape[:-1], -1), jnp.cos(ang).reshape(*x.shape[:-1], -1)], -1)


def deformation_init(key: jax.Array, *, hidden: int = 64, depth: int = 2, num_freqs: int = 6,
                     out_dim: int = 4, dtype=jnp.float32) -> dict:
    """Parameters of ``D(mu0, tau) -> (dmu (2), dlog_scale (2))``: Fourier features of ``(mu0/extent, tau)``
    (``num_freqs`` octaves), ``depth`` hidden layers of ``hidden`` units (SiLU), ZERO-initialised last
    layer so ``D = 0`` at init (spec §5; a stand-in for 4DGS's HexPlane + MLP)."""
    d_in = 3 * (1 + 2 * num_freqs)
    sizes = [d_in] + [hidden] * depth
    keys = jax.random.split(key, depth)
    layers = [{"w": jax.random.normal(k, (a, b), dtype) * jnp.sqrt(2.0 / a).astype(dtype), "b": jnp.zeros((b,), dtype)}
              for k, a, b in zip(keys, sizes[:-1], sizes[1:])]
    layers.append({"w": jnp.zeros((sizes[-1], out_dim), dtype), "b": jnp.zeros((out_dim,), dtype)})
    return {"layers": layers}


def deformation_apply(params: dict, mu0: Float[Array, "N 2"], tau, *, extent: float,
                      num_freqs: int = 6) -> tuple[Float[Array, "N 2"], Float[Array, "N 2"]]:
    """``(dmu, dlog_scale) = D(mu0, tau)``; ``dmu`` in pixels (the MLP output is scaled by ``extent/10``, ours)."""
    check_float_array("mu0", mu0, ndim=2)
    tau = jnp.broadcast_to(jnp.asarray(tau, mu0.dtype), mu0.shape[:1])
    x = jnp.concatenate([mu0 / extent, tau[:, None]], axis=-1)
    h = _fourier(x, num_freqs)
    for lay in params["layers"][:-1]:
        h = jax.nn.silu(h @ lay["w"] + lay["b"])
    out = h @ params["layers"][-1]["w"] + params["layers"][-1]["b"]
    return out[:, :2] * (extent / 10.0), out[:, 2:4]


def deformed_scene(scene: dict, deform: Callable, tau) -> tuple[Float[Array, "N 2"], Float[Array, "N 2"]]:
    """Centres and log-scales at video time ``tau``: ``mu(tau) = mu0 + dmu``, ``s(tau) = s0 + ds``
    (4DGS rule, spec §3.1). ``deform(mu0, tau) -> (dmu, dlog_scale)``."""
    dmu, ds = deform(scene["mean"], tau)
    return scene["mean"] + dmu, scene["log_scale"] + ds


def finite_difference_velocity(positions: Callable, tau, dtau) -> Float[Array, "N 2"]:
    """``v_i(tau) = pi(mu_i(tau + dtau)) - pi(mu_i(tau))`` with ``pi`` = identity (spec §3.2, derived).

    ``positions(tau) -> (N, 2)``. A displacement over one frame step in pixels, i.e. ``dtau`` times the
    average velocity on ``[tau, tau + dtau]`` (not an instantaneous derivative). No stop-gradient on
    either branch: both train D (spec §7).
    """
    return positions(tau + dtau) - positions(tau)


# --------------------------------------------------------------------------------------------------
# losses and metrics
# --------------------------------------------------------------------------------------------------

def forward_backward_mask(flow_fwd: Float[Array, "H W 2"], flow_bwd: Float[Array, "H W 2"]) -> Float[Array, "H W"]:
    """``|F_f(p) + F_b(p + F_f(p))|^2 < 0.01 (|F_f|^2 + |F_b|^2) + 0.5`` (spec §3.2; same rule as FlowV2V's
    :func:`flowjax.physical.occlusion_mask`, with points leaving the image counted as inconsistent)."""
    return occlusion_mask(flow_fwd, flow_bwd)


def flow_loss(velocity: Float[Array, "H W 2"], alpha: Float[Array, "H W"], flow: Float[Array, "H W 2"], *,
              valid: Float[Array, "H W"] | None = None, alpha_threshold: float = 0.5, normalize: bool = False,
              penalty: str = "l1") -> Float[Array, ""]:
    """``L_flow = sum_p M(p) |V(p) - F(p)|_1 / sum_p M(p)``, ``M = valid * 1[A > alpha_threshold]`` (spec §3.2, derived).

    ``normalize=True`` compares ``V / A`` instead of ``V`` (spec flag). ``penalty="l2"`` uses the squared
    norm (ours; smooth at 0, used to test that the gradient vanishes at the truth). The mask ``M`` is a
    hard indicator and carries no gradient (explicit ``stop_gradient``); gradients reach the Gaussians
    through ``V`` (both ``v_i`` and the weights ``T_i alpha_i``).
    """
    check_float_array("velocity", velocity, ndim=3)
    check_float_array("alpha", alpha, ndim=2)
    check_float_array("flow", flow, ndim=3)
    if velocity.shape != flow.shape or velocity.shape[-1] != 2 or alpha.shape != velocity.shape[:2]:
        raise ValueError(f"`velocity` and `flow` must be (H, W, 2) and `alpha` (H, W); got {tuple(velocity.shape)}, "
                         f"{tuple(flow.shape)}, {tuple(alpha.shape)}.")
    check_choice("penalty", penalty, ("l1", "l2"))
    m = (alpha > alpha_threshold).astype(velocity.dtype)
    if valid is not None:
        if valid.shape != alpha.shape:
            raise ValueError(f"`valid` must have shape {tuple(alpha.shape)}, got {tuple(valid.shape)}.")
        m = m * valid
    m = jax.lax.stop_gradient(m)  # the mask selects pixels; it is not optimised
    v = velocity
    if normalize:
        v = v / jnp.where(alpha > alpha_threshold, alpha, 1.0)[..., None]
    d = v - flow
    per = jnp.sum(jnp.abs(d), -1) if penalty == "l1" else jnp.sum(d**2, -1)
    return jnp.sum(m * per) / jnp.maximum(jnp.sum(m), 1.0)


def _gauss_window(size, sigma, dtype):
    x = jnp.arange(size, dtype=dtype) - (size - 1) / 2
    g = jnp.exp(-0.5 * (x / sigma) ** 2)
    return g / jnp.sum(g)


def ssim(a: Float[Array, "H W C"], b: Float[Array, "H W C"], *, window: int = 11, sigma: float = 1.5,
         c1: float = 0.01**2, c2: float = 0.03**2) -> Float[Array, ""]:
    """Mean SSIM (Wang et al. 2004) with a Gaussian window, 'valid' padding, data range 1."""
    g = _gauss_window(window, sigma, a.dtype)

    def blur(x):  # separable conv per channel, x (H, W, C)
        x = jnp.moveaxis(x, -1, 0)[:, None]  # (C, 1, H, W)
        k1 = g[None, None, :, None]
        k2 = g[None, None, None, :]
        y = jax.lax.conv_general_dilated(x, k1, (1, 1), "VALID")
        y = jax.lax.conv_general_dilated(y, k2, (1, 1), "VALID")
        return y[:, 0]

    mu_a, mu_b = blur(a), blur(b)
    saa = blur(a * a) - mu_a**2
    sbb = blur(b * b) - mu_b**2
    sab = blur(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * sab + c2)) / ((mu_a**2 + mu_b**2 + c1) * (saa + sbb + c2))
    return jnp.mean(s)


def photometric_loss(pred: Float[Array, "H W C"], target: Float[Array, "H W C"], *, lambda_ssim: float = 0.2) -> Float[Array, ""]:
    """``L_rgb = (1 - lambda_ssim) |C - I|_1 + lambda_ssim (1 - SSIM)`` (3DGS, lambda_ssim = 0.2)."""
    l1 = jnp.mean(jnp.abs(pred - target))
    if lambda_ssim == 0.0:
        return l1
    return (1.0 - lambda_ssim) * l1 + lambda_ssim * (1.0 - ssim(pred, target))


def psnr(pred, target) -> Float[Array, ""]:
    """PSNR in dB for data range 1."""
    return -10.0 * jnp.log10(jnp.mean((pred - target) ** 2))


# --------------------------------------------------------------------------------------------------
# scene initialisation and densification (fixed slot capacity)
# --------------------------------------------------------------------------------------------------

def init_scene(key: jax.Array, image: Float[Array, "H W C"], *, num: int, capacity: int, init_scale: float = 2.0,
               init_opacity: float = 0.5) -> dict:
    """``num`` active Gaussians at uniform random pixel positions, colour from ``image`` at their position
    (stand-in for SfM-point colours), isotropic scale ``init_scale`` px, random depths; ``capacity - num``
    inactive slots (ours)."""
    check_float_array("image", image, ndim=3)
    if capacity < num:
        raise ValueError(f"`capacity` must be >= `num`, got {capacity} < {num}.")
    h, w, _ = image.shape
    k1, k2 = jax.random.split(key)
    dt = image.dtype
    pos = jax.random.uniform(k1, (capacity, 2), dt) * jnp.array([[w - 1, h - 1]], dt)
    ri = jnp.clip(jnp.round(pos[:, 1]).astype(jnp.int32), 0, h - 1)
    ci = jnp.clip(jnp.round(pos[:, 0]).astype(jnp.int32), 0, w - 1)
    col = jnp.clip(image[ri, ci], 0.02, 0.98)
    return {
        "mean": pos,
        "log_scale": jnp.full((capacity, 2), jnp.log(init_scale), dt),
        "offdiag": jnp.zeros((capacity,), dt),
        "color_logit": jnp.log(col) - jnp.log1p(-col),
        "opacity_logit": jnp.full((capacity,), jnp.log(init_opacity) - jnp.log1p(-init_opacity), dt),
        "depth": jax.random.uniform(k2, (capacity,), dt),
        "active": jnp.arange(capacity) < num,
    }


def _assign_free(active, want):
    """Ranks of the ``want`` entries and the free slot each one gets (or ``N`` = dropped)."""
    n = active.shape[0]
    free = jnp.argsort(active, stable=True)  # inactive slots first, in index order
    n_free = jnp.sum(~active)
    rank = jnp.cumsum(want) - 1
    ok = want & (rank < n_free)
    slot = jnp.where(ok, free[jnp.clip(rank, 0, n - 1)], n)
    return ok, slot


def _scatter(scene, slot, src):
    out = dict(scene)
    for k, v in src.items():
        out[k] = scene[k].at[slot].set(v, mode="drop")
    return out


def gradient_densify(key: jax.Array, scene: dict, grad_norm_mean: Float[Array, "N"], *, grad_threshold: float,
                     scale_threshold: float, split_factor: float = 1.6, prune_opacity: float = 0.005) -> tuple[dict, Array]:
    """3DGS densification with fixed capacity (spec §3.1): Gaussians whose mean positional-gradient norm
    exceeds ``grad_threshold`` are CLONED (max scale <= ``scale_threshold``) or SPLIT into two samples of
    themselves with scales / ``split_factor``; new Gaussians take free slots in index order (dropped
    when full); then Gaussians with opacity < ``prune_opacity`` are deactivated.
    Returns ``(scene, changed)`` where ``changed`` marks slots whose parameters were (re)written.
    """
    act = scene["active"]
    sel = act & (grad_norm_mean > grad_threshold)
    big = jnp.max(jnp.exp(scene["log_scale"]), -1) > scale_threshold
    ok, slot = _assign_free(act, sel)
    split = ok & big
    chol = cholesky_factor(scene["log_scale"], scene["offdiag"])
    eps = jax.random.normal(key, (2,) + scene["mean"].shape, scene["mean"].dtype)
    samp = scene["mean"][None] + jnp.einsum("nij,knj->kni", chol, eps)
    ls_new = scene["log_scale"] - jnp.log(split_factor) * split[:, None]
    # originals: split ones move to sample 0 and shrink; clones stay unchanged
    new = dict(scene)
    new["mean"] = jnp.where(split[:, None], samp[0], scene["mean"])
    new["log_scale"] = ls_new
    new["offdiag"] = jnp.where(split, scene["offdiag"] / split_factor, scene["offdiag"])
    src = {k: new[k] for k in TRAINABLE}
    src["mean"] = jnp.where(split[:, None], samp[1], scene["mean"])
    src["depth"] = scene["depth"]
    src["active"] = jnp.ones_like(act)
    new = _scatter(new, slot, src)
    changed = split | (jnp.zeros_like(act).at[slot].set(True, mode="drop"))
    new["active"] = new["active"] & (jax.nn.sigmoid(new["opacity_logit"]) >= prune_opacity)
    return new, changed


def canonical_inverse(x: Float[Array, "K 2"], dmu: Callable, *, iters: int = 2) -> Float[Array, "K 2"]:
    """Fixed-point inversion of ``x = mu0 + dmu(mu0)``: ``mu0 <- x - dmu(mu0)`` from ``mu0 = x`` (spec §3.3 step 4)."""
    mu0 = x
    for _ in range(iters):
        mu0 = x - dmu(mu0)
    return mu0


def flow_assisted_densify(key: jax.Array, scene: dict, *, image: Float[Array, "H W C"], rendered: dict,
                          flow: Float[Array, "H W 2"], dmu: Callable, max_add: int, flow_threshold: float = 1.0,
                          error_threshold: float = 0.1, spawn_opacity: float = 0.1, footprint: float = 1.0,
                          max_radius: float = 6.0, shrink: float = 0.8, inverse_iters: int = 2,
                          deformed_means: Float[Array, "N 2"] | None = None,
                          deformed_log_scale: Float[Array, "N 2"] | None = None) -> tuple[dict, dict]:
    """FAD (spec §3.3, derived) for the identity camera at one frame.

    1. ``M_dyn = |F| > flow_threshold``; 2. candidates ``M_dyn & |C - I|_1 > error_threshold`` (sum over
    channels, ours), at most ``max_add`` of them chosen uniformly at random; 3. back-projection is the
    identity (``x = p``); 4. ``mu0 = canonical_inverse(p, dmu)``; 5. spawn with colour ``I(p)``,
    opacity ``spawn_opacity``, isotropic scale ``footprint / (1 + |F(p)| / flow_threshold)``, depth =
    rendered depth ``d(p)``; 6. active Gaussians whose (deformed) centre lies in ``M_dyn`` and whose
    projected radius ``3 sqrt(lambda_max(Sigma))`` exceeds ``max_radius`` are shrunk by ``shrink``.
    ``dmu(mu0) -> (K, 2)`` is the deformation offset at this frame. Returns ``(scene, info)``;
    ``info["spawn_xy"]`` are the chosen pixels (``-1`` rows for unused draws), ``info["changed"]``
    marks rewritten slots.
    """
    check_float_array("image", image, ndim=3)
    _h, _w = image.shape[:2]
    if flow.shape != (_h, _w, 2):
        raise ValueError(f"`flow` must have shape {(_h, _w, 2)}, got {tuple(flow.shape)}.")
    dt = scene["mean"].dtype
    speed = jnp.linalg.norm(flow, axis=-1)
    dyn = speed > flow_threshold
    err = jnp.sum(jnp.abs(rendered["color"] - image), -1)
    cand = (dyn & (err > error_threshold)).reshape(-1)
    g = jax.random.gumbel(key, cand.shape, dt)
    score = jnp.where(cand, g, -jnp.inf)
    k = min(int(max_add), cand.shape[0])
    top, idx = jax.lax.top_k(score, k)
    want_k = jnp.isfinite(top)
    rows, cols = idx // _w, idx % _w
    px = jnp.stack([cols, rows], -1).astype(dt)
    mu0 = canonical_inverse(px, dmu, iters=inverse_iters)
    colr = jnp.clip(image.reshape(-1, image.shape[-1])[idx], 0.02, 0.98)
    sc = footprint / (1.0 + speed.reshape(-1)[idx] / flow_threshold)
    # free slots for the K candidates
    act = scene["active"]
    free = jnp.argsort(act, stable=True)
    n_free = jnp.sum(~act)
    rank = jnp.cumsum(want_k) - 1
    ok = want_k & (rank < n_free)
    slot = jnp.where(ok, free[jnp.clip(rank, 0, act.shape[0] - 1)], act.shape[0])
    # 6. shrink oversized dynamic Gaussians (before inserting the new ones)
    means = scene["mean"] if deformed_means is None else deformed_means
    ls = scene["log_scale"] if deformed_log_scale is None else deformed_log_scale
    cov_l = cholesky_factor(ls, scene["offdiag"])
    lam_max = jnp.linalg.eigvalsh(cov_l @ jnp.swapaxes(cov_l, -1, -2))[:, -1]
    radius = 3.0 * jnp.sqrt(lam_max)
    ri = jnp.clip(jnp.round(means[:, 1]).astype(jnp.int32), 0, _h - 1)
    ci = jnp.clip(jnp.round(means[:, 0]).astype(jnp.int32), 0, _w - 1)
    in_dyn = dyn[ri, ci] & (means[:, 0] > -0.5) & (means[:, 0] < _w - 0.5) & (means[:, 1] > -0.5) & (means[:, 1] < _h - 0.5)
    shrink_m = act & in_dyn & (radius > max_radius)
    new = dict(scene)
    new["log_scale"] = scene["log_scale"] + jnp.log(shrink) * shrink_m[:, None]
    new["offdiag"] = jnp.where(shrink_m, scene["offdiag"] * shrink, scene["offdiag"])
    src = {
        "mean": mu0,
        "log_scale": jnp.log(sc)[:, None] * jnp.ones((1, 2), dt),
        "offdiag": jnp.zeros_like(sc),
        "color_logit": jnp.log(colr) - jnp.log1p(-colr),
        "opacity_logit": jnp.full_like(sc, jnp.log(spawn_opacity) - jnp.log1p(-spawn_opacity)),
        "depth": rendered["depth"].reshape(-1)[idx].astype(scene["depth"].dtype),
        "active": jnp.ones_like(want_k),
    }
    new = _scatter(new, slot, src)
    changed = shrink_m | jnp.zeros_like(act).at[slot].set(True, mode="drop")
    spawn_xy = jnp.where(ok[:, None], px, -1.0)
    return new, {"spawn_xy": spawn_xy, "num_added": jnp.sum(ok), "num_shrunk": jnp.sum(shrink_m),
                 "changed": changed, "dynamic_mask": dyn}
