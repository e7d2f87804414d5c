"""Synthetic moving-blob videos with analytic optical flow (spec flowgaussian-vr.md §5; generator code is ours).

A 40x40 RGB video of 16 frames (``tau_k = k/15``): a static background (colour gradient plus a
low-frequency texture) and 3 soft elliptical blobs, each on a circle (radius 6-10 px) or a
figure-eight, travelling 1.5-3 px per frame, rotating and with its scale oscillating by +-20 %.
Blob ``b`` at time ``tau`` maps its local coordinates ``u`` to ``p = c_b(tau) + s_b(tau) R(theta_b(tau)) u``,
so the exact flow of a blob pixel from ``tau`` to ``tau'`` is ``c' + (s'/s) R(theta' - theta) (p - c) - p``
(of the top-most blob with opacity > 0.5; 0 on the background).
"RAFT substitute" (our reading of the spec): exact flow + N(0, 0.3^2) noise everywhere, and inside the
dilated blob mask each pixel's flow is dropped to 0 with probability 0.1 (outliers).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from flowjax.physical import dilate, smooth_texture


def _rot(a):
    c, s = jnp.cos(a), jnp.sin(a)
    return jnp.stack([jnp.stack([c, -s], -1), jnp.stack([s, c], -1)], -2)


def blob_params(key, *, num_blobs=3, size=40, num_frames=16):
    ks = jax.random.split(key, 9)
    dt = jnp.float32
    nb = num_blobs
    axes = jax.random.uniform(ks[0], (nb, 2), dt, 3.0, 5.0)
    colors = jax.random.uniform(ks[1], (nb, 3), dt, 0.0, 1.0)
    colors = jnp.where(colors > 0.5, 0.75 + 0.25 * colors, 0.25 * colors)  # saturated
    radius = jax.random.uniform(ks[2], (nb,), dt, 6.0, 10.0)
    speed = jax.random.uniform(ks[3], (nb,), dt, 1.5, 3.0)  # px per frame
    eight = jax.random.bernoulli(ks[4], 0.5, (nb,))
    phase = jax.random.uniform(ks[5], (nb,), dt, 0.0, 2 * jnp.pi)
    spin = jax.random.uniform(ks[6], (nb,), dt, -2.0, 2.0)  # rad over the video
    centre0 = jax.random.uniform(ks[7], (nb, 2), dt, 0.5 * size - 4.0, 0.5 * size + 4.0)
    sphase = jax.random.uniform(ks[8], (nb,), dt, 0.0, 2 * jnp.pi)
    # angular speed so that |dc/dframe| ~ speed (circle: R w / (F-1); eight: comparable)
    omega = speed * (num_frames - 1) / radius
    return dict(axes=axes, colors=colors, radius=radius, omega=omega, eight=eight, phase=phase, spin=spin,
                centre0=centre0, sphase=sphase)


def blob_state(bp, tau):
    """Centres (B, 2), scales (B,), angles (B,) at video time tau (scalar)."""
    a = bp["omega"] * tau + bp["phase"]
    circ = jnp.stack([jnp.cos(a), jnp.sin(a)], -1)
    eight = jnp.stack([jnp.sin(a), 0.5 * jnp.sin(2 * a)], -1)
    off = jnp.where(bp["eight"][:, None], eight, circ) * bp["radius"][:, None]
    c = bp["centre0"] + off
    s = 1.0 + 0.2 * jnp.sin(2 * jnp.pi * tau + bp["sphase"])
    th = bp["spin"] * tau
    return c, s, th


def _grid(size):
    rows, cols = jnp.meshgrid(jnp.arange(size, dtype=jnp.float32), jnp.arange(size, dtype=jnp.float32), indexing="ij")
    return jnp.stack([cols, rows], -1)  # (H, W, 2) as (x, y)


def blob_alphas(bp, tau, size):
    c, s, th = blob_state(bp, tau)
    p = _grid(size)
    d = p[None] - c[:, None, None, :]  # (B, H, W, 2)
    rinv = _rot(-th)  # (B, 2, 2)
    u = jnp.einsum("bij,bhwj->bhwi", rinv, d) / s[:, None, None, None]
    r = jnp.sqrt(jnp.sum((u / bp["axes"][:, None, None, :]) ** 2, -1))
    return jax.nn.sigmoid(3.0 * (1.0 - r) * jnp.mean(bp["axes"], -1)[:, None, None])  # soft ~1px edge


def background(key, size):
    k1, k2 = jax.random.split(key)
    p = _grid(size) / size
    coef = jax.random.uniform(k1, (3, 3), jnp.float32, 0.15, 0.6)
    grad = coef[None, None, :, 0] + 0.3 * coef[None, None, :, 1] * p[..., :1] + 0.3 * coef[None, None, :, 2] * p[..., 1:]
    tex = jnp.stack([smooth_texture(jax.random.fold_in(k2, i), size, sigma=5.0, contrast=0.25, mean=0.0) for i in range(3)], -1)
    return jnp.clip(grad + tex.astype(jnp.float32), 0.0, 1.0)


def frame(bp, bg, tau):
    al = blob_alphas(bp, tau, bg.shape[0])
    img = bg
    for b in range(al.shape[0]):  # blob 0 at the back
        img = img * (1.0 - al[b][..., None]) + al[b][..., None] * bp["colors"][b][None, None, :]
    return img, al


def exact_flow(bp, tau, tau2, size):
    """Flow of the top-most blob (alpha > 0.5) from tau to tau2, 0 elsewhere; and the blob mask at tau."""
    c, s, th = blob_state(bp, tau)
    c2, s2, th2 = blob_state(bp, tau2)
    al = blob_alphas(bp, tau, size)
    p = _grid(size)
    flow = jnp.zeros((size, size, 2), jnp.float32)
    for b in range(al.shape[0]):
        rel = _rot(th2[b] - th[b]) * (s2[b] / s[b])
        p2 = c2[b][None, None, :] + jnp.einsum("ij,hwj->hwi", rel, p - c[b][None, None, :])
        flow = jnp.where(al[b][..., None] > 0.5, p2 - p, flow)
    mask = (jnp.max(al, 0) > 0.5).astype(jnp.float32)
    return flow, mask


def make_video(key, *, size=40, num_frames=16, num_blobs=3, noise_std=0.3, drop_prob=0.1, step=2):
    """Frames (F, H, W, 3), blob masks (F, H, W), exact 1-frame flows (F-1, H, W, 2), and noisy forward/backward
    flows between consecutive frames ``k -> k+step`` (F-step, H, W, 2) (the RAFT substitute), plus blob params."""
    kb, kg, kn = jax.random.split(key, 3)
    bp = blob_params(kb, num_blobs=num_blobs, size=size, num_frames=num_frames)
    bg = background(kg, size)
    taus = jnp.arange(num_frames, dtype=jnp.float32) / (num_frames - 1)
    frames, masks = [], []
    for t in taus:
        im, al = frame(bp, bg, t)
        frames.append(im)
        masks.append((jnp.max(al, 0) > 0.5).astype(jnp.float32))
    gt1 = jnp.stack([exact_flow(bp, taus[k], taus[k + 1], size)[0] for k in range(num_frames - 1)])
    fw, bw = [], []
    for k in range(num_frames - step):
        f, m = exact_flow(bp, taus[k], taus[k + step], size)
        b, m2 = exact_flow(bp, taus[k + step], taus[k], size)
        kk = jax.random.fold_in(kn, k)
        k1, k2, k3, k4 = jax.random.split(kk, 4)
        def noisy(fl, mk, ka, kb_):
            fl = fl + noise_std * jax.random.normal(ka, fl.shape)
            drop = jax.random.bernoulli(kb_, drop_prob, mk.shape) & (dilate(mk, 5) > 0.5)
            return jnp.where(drop[..., None], 0.0, fl)
        fw.append(noisy(f, m, k1, k2))
        bw.append(noisy(b, m2, k3, k4))
    return dict(frames=jnp.stack(frames), masks=jnp.stack(masks), flow1=gt1, flow_fwd=jnp.stack(fw),
                flow_bwd=jnp.stack(bw), taus=taus, blobs=bp)
