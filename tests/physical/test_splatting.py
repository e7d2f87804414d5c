"""Tests for flowjax.physical.splatting (FlowGaussian-VR, spec flowgaussian-vr.md §6): exact identities."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowjax.physical import splatting as S

H, W = 9, 11


def _gaussians(key, n=6, k=3):
    ks = jax.random.split(jax.random.key(key), 6)
    means = jax.random.uniform(ks[0], (n, 2)) * jnp.array([[W - 1.0, H - 1.0]])
    ls = jnp.log(1.0 + 1.5 * jax.random.uniform(ks[1], (n, 2)))
    off = 0.5 * jax.random.normal(ks[2], (n,))
    op = 0.2 + 0.7 * jax.random.uniform(ks[3], (n,))
    feats = jax.random.uniform(ks[4], (n, k))
    depth = jax.random.uniform(ks[5], (n,))
    return means, S.cholesky_factor(ls, off), op, feats, depth, ls, off


def test_single_gaussian_closed_form():
    m = jnp.array([[4.3, 3.6]])
    ls, off = jnp.array([[0.4, 0.1]]), jnp.array([0.7])
    l = S.cholesky_factor(ls, off)
    c = jnp.array([[0.2, 0.5, 0.9]])
    o = jnp.array([0.8])
    out, acc = S.render(m, l, o, c, jnp.zeros(1), height=H, width=W, alpha_min=0.0)
    sig = l[0] @ l[0].T
    a, b, d = sig[0, 0], sig[0, 1], sig[1, 1]
    inv = jnp.array([[d, -b], [-b, a]]) / (a * d - b * b)
    rows, cols = jnp.meshgrid(jnp.arange(H, dtype=float), jnp.arange(W, dtype=float), indexing="ij")
    dx, dy = cols - m[0, 0], rows - m[0, 1]
    alpha = 0.8 * jnp.exp(-0.5 * (inv[0, 0] * dx**2 + 2 * inv[0, 1] * dx * dy + inv[1, 1] * dy**2))
    np.testing.assert_allclose(acc, alpha, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(out, alpha[..., None] * c[0][None, None, :], rtol=1e-12, atol=1e-15)


def test_weights_sum_and_two_layer_composite():
    means, l, op, f, depth, *_ = _gaussians(0, n=7)
    out, acc = S.render(means, l, op, f, depth, height=H, width=W, alpha_min=0.0)
    # A = sum_i T_i alpha_i = 1 - prod_i (1 - alpha_i) exactly, and <= 1
    single = jnp.stack([S.render(means[i:i + 1], l[i:i + 1], op[i:i + 1], f[i:i + 1], depth[i:i + 1],
                                 height=H, width=W, alpha_min=0.0)[1] for i in range(7)])
    np.testing.assert_allclose(acc, 1.0 - jnp.prod(1.0 - single, 0), atol=1e-13)
    assert float(acc.max()) <= 1.0
    # two Gaussians: front one by depth occludes: C = a_f c_f + (1 - a_f) a_b c_b
    o2, _ = S.render(means[:2], l[:2], op[:2], f[:2], jnp.array([0.9, 0.1]), height=H, width=W, alpha_min=0.0)
    af, ab = single[1], single[0]
    np.testing.assert_allclose(o2, af[..., None] * f[1][None, None, :] + ((1 - af) * ab)[..., None] * f[0][None, None, :], atol=1e-13)


def test_velocity_rendering_linear_and_shared_velocity():
    means, l, op, f, depth, *_ = _gaussians(1, n=5, k=2)
    v0 = jnp.array([1.3, -0.4])
    out, acc = S.render(means, l, op, jnp.broadcast_to(v0, (5, 2)), depth, height=H, width=W)
    np.testing.assert_allclose(out, acc[..., None] * v0[None, None, :], atol=1e-13)  # V = A v
    g = jax.random.normal(jax.random.key(3), (5, 2))
    r = lambda v: S.render(means, l, op, v, depth, height=H, width=W)[0]
    np.testing.assert_allclose(r(2.0 * f - 3.0 * g), 2.0 * r(f) - 3.0 * r(g), atol=1e-12)


def test_sort_invariance():
    means, l, op, f, depth, *_ = _gaussians(2, n=8, k=4)
    perm = jax.random.permutation(jax.random.key(9), 8)
    a = S.render(means, l, op, f, depth, height=H, width=W)
    b = S.render(means[perm], l[perm], op[perm], f[perm], depth[perm], height=H, width=W)
    np.testing.assert_allclose(a[0], b[0], atol=1e-13)
    np.testing.assert_allclose(a[1], b[1], atol=1e-13)
    # and the depth order matters (the test can fail): reversing depths changes the image
    c = S.render(means, l, op, f, -depth, height=H, width=W)
    assert float(jnp.max(jnp.abs(c[0] - a[0]))) > 1e-3


def test_renderer_gradients_match_finite_differences():
    means, _, op, f, depth, ls, off = _gaussians(4, n=4, k=3)
    target = jax.random.uniform(jax.random.key(8), (H, W, 3))

    def loss(theta):
        m, s, o_, c = theta
        out, acc = S.render(m, S.cholesky_factor(s, o_), op, c, depth, height=H, width=W, alpha_min=0.0, alpha_max=1.0)
        return jnp.sum((out - target) ** 2) + jnp.sum(acc**2)

    theta = (means, ls, off, f)
    g = jax.grad(loss)(theta)
    key = jax.random.key(11)
    for j, leaf in enumerate(theta):
        for r in range(3):
            key, sub = jax.random.split(key)
            d = jax.random.normal(sub, leaf.shape)
            eps = 1e-6
            tp = tuple(x + eps * d if i == j else x for i, x in enumerate(theta))
            tm = tuple(x - eps * d if i == j else x for i, x in enumerate(theta))
            fd = (loss(tp) - loss(tm)) / (2 * eps)
            np.testing.assert_allclose(jnp.sum(g[j] * d), fd, rtol=1e-6, atol=1e-8)


def test_finite_difference_velocity_translation_and_rotation():
    mu0 = jax.random.uniform(jax.random.key(0), (10, 2)) * 10
    d = jnp.array([2.0, -1.5])
    dtau = 1.0 / 15
    v = S.finite_difference_velocity(lambda t: mu0 + t * d[None, :], 0.3, dtau)
    np.testing.assert_allclose(v, jnp.broadcast_to(dtau * d, v.shape), atol=1e-13)
    c, om = jnp.array([5.0, 4.0]), 2.0

    def rot(t):
        a = om * t
        r = jnp.array([[jnp.cos(a), -jnp.sin(a)], [jnp.sin(a), jnp.cos(a)]])
        return c[None, :] + (mu0 - c[None, :]) @ r.T

    v = S.finite_difference_velocity(rot, 0.2, dtau)
    np.testing.assert_allclose(v, rot(0.2 + dtau) - rot(0.2), atol=1e-13)
    # analytic: (R(om dtau) - I)(mu(t) - c)
    a = om * dtau
    ra = jnp.array([[jnp.cos(a) - 1, -jnp.sin(a)], [jnp.sin(a), jnp.cos(a) - 1]])
    np.testing.assert_allclose(v, (rot(0.2) - c[None, :]) @ ra.T, atol=1e-12)


def _translating_scene(n=6, dtype=jnp.float64):
    means, l, op, f, depth, ls, off = _gaussians(5, n=n)
    scene = {"mean": means, "log_scale": ls, "offdiag": off, "color_logit": jnp.log(f / (1 - f)),
             "opacity_logit": jnp.log(op / (1 - op)), "depth": depth, "active": jnp.ones(n, bool)}
    return scene


def test_flow_loss_zero_at_truth_and_gradient_paths():
    """Gaussians translating with the reference flow d: V/A = d, L_flow = 0, and dL/dtheta = 0 (l2)."""
    scene = _translating_scene()
    d = jnp.array([1.25, -0.75])
    params = {"w": jnp.array(1.0)}  # D(mu0, tau) = w * tau * d * 15 (one-frame displacement d)

    def flow_l(scene_, p, penalty, normalize=True, flow=None):
        pos = lambda t: scene_["mean"] + p["w"] * t * 15.0 * d[None, :]
        v = S.finite_difference_velocity(pos, 0.2, 1.0 / 15)
        r = S.render_scene(scene_, height=H, width=W, velocity=v, means=pos(0.2))
        ref = jnp.broadcast_to(d, (H, W, 2)) if flow is None else flow
        return S.flow_loss(r["velocity"], r["alpha"], ref, normalize=normalize, alpha_threshold=0.05, penalty=penalty)

    assert float(flow_l(scene, params, "l1")) < 1e-12
    g_s, g_p = jax.grad(flow_l, argnums=(0, 1), allow_int=True)(scene, params, "l2")
    assert float(jnp.abs(g_p["w"])) < 1e-12
    assert float(jnp.max(jnp.abs(g_s["mean"]))) < 1e-12
    # away from the truth the gradients reach mu0 and the deformation parameters
    g_s, g_p = jax.grad(flow_l, argnums=(0, 1), allow_int=True)(scene, params, "l1", False, jnp.zeros((H, W, 2)))
    assert float(jnp.abs(g_p["w"])) > 1e-3 and float(jnp.max(jnp.abs(g_s["mean"]))) > 1e-4
    assert float(jnp.max(jnp.abs(g_s["opacity_logit"]))) > 1e-4  # through alpha_i and T_i
    # the unnormalised V with a wrong flow is positive (the test can fail)
    assert float(flow_l(scene, params, "l1", True, jnp.zeros((H, W, 2)))) > 1.0


def test_flow_weight_zero_gives_photometric_gradients():
    scene = _translating_scene()
    target = jax.random.uniform(jax.random.key(1), (H, W, 3))
    flow = jax.random.normal(jax.random.key(2), (H, W, 2))

    def total(sc, lam):
        v = jnp.ones((6, 2))
        r = S.render_scene(sc, height=H, width=W, velocity=v)
        return S.photometric_loss(r["color"], target, lambda_ssim=0.0) + lam * S.flow_loss(r["velocity"], r["alpha"], flow)

    g0 = jax.grad(total, allow_int=True)(scene, 0.0)
    gb = jax.grad(lambda sc: S.photometric_loss(S.render_scene(sc, height=H, width=W)["color"], target, lambda_ssim=0.0),
                  allow_int=True)(scene)
    for k in S.TRAINABLE:
        np.testing.assert_allclose(g0[k], gb[k], rtol=1e-12, atol=1e-15)


def test_forward_backward_mask():
    f = jnp.broadcast_to(jnp.array([1.0, 0.5]), (H, W, 2))
    m = S.forward_backward_mask(f, -f)
    assert float(m[:-1, :-1].min()) == 1.0  # exact inverse: consistent wherever p + F stays in the image
    bad = S.forward_backward_mask(f, f)
    assert float(bad.max()) == 0.0


def test_canonical_inverse_and_fad():
    key = jax.random.key(0)
    # smooth deformation: dmu(mu0) = 0.3 sin(mu0 / 5)
    dmu = lambda mu0: 0.3 * jnp.sin(mu0 / 5.0) + jnp.array([[1.0, -0.5]])
    x = jax.random.uniform(key, (20, 2)) * 20
    mu0 = S.canonical_inverse(x, dmu, iters=2)
    assert float(jnp.max(jnp.linalg.norm(mu0 + dmu(mu0) - x, axis=-1))) < 0.1
    # FAD on a tiny frame: a moving square that the scene does not render
    h, w = 12, 12
    img = jnp.full((h, w, 3), 0.2).at[3:7, 4:9].set(jnp.broadcast_to(jnp.array([0.9, 0.1, 0.1]), (4, 5, 3)))
    flow = jnp.zeros((h, w, 2)).at[3:7, 4:9].set(jnp.broadcast_to(jnp.array([2.0, 0.0]), (4, 5, 2)))
    scene = S.init_scene(key, img, num=5, capacity=12)
    scene["color_logit"] = jnp.full_like(scene["color_logit"], -1.386)  # colour 0.2 (background)
    r = S.render_scene(scene, height=h, width=w)
    max_add = 4
    new, info = S.flow_assisted_densify(jax.random.key(3), scene, image=img, rendered=r, flow=flow, dmu=dmu,
                                        max_add=max_add, error_threshold=0.3)
    added = int(new["active"].sum() - scene["active"].sum())
    assert 0 < added <= max_add and added == int(info["num_added"])
    err = jnp.sum(jnp.abs(r["color"] - img), -1)
    for xy in np.asarray(info["spawn_xy"]):
        if xy[0] < 0:
            continue
        c_, r_ = int(xy[0]), int(xy[1])
        assert float(jnp.linalg.norm(flow[r_, c_])) > 1.0 and float(err[r_, c_]) > 0.3
    # spawned Gaussians sit at the canonical inverse of their pixel, scale footprint / (1 + |F|/tau_f) = 1/3
    newslots = np.nonzero(np.asarray(new["active"] & ~scene["active"]))[0]
    pos = new["mean"][newslots]
    np.testing.assert_allclose(pos + dmu(pos), np.asarray(info["spawn_xy"])[np.asarray(info["spawn_xy"])[:, 0] >= 0],
                               atol=0.1)
    np.testing.assert_allclose(jnp.exp(new["log_scale"][newslots]), 1.0 / 3.0, rtol=1e-6)
    np.testing.assert_allclose(jax.nn.sigmoid(new["opacity_logit"][newslots]), 0.1, rtol=1e-5)
    # capacity is respected: with only 2 free slots at most 2 are added
    scene2 = dict(scene, active=jnp.arange(12) < 10)
    new2, info2 = S.flow_assisted_densify(jax.random.key(3), scene2, image=img, rendered=r, flow=flow, dmu=dmu,
                                          max_add=max_add, error_threshold=0.3)
    assert int(new2["active"].sum()) <= 12 and int(info2["num_added"]) <= 2


def test_gradient_densify_clone_split_prune():
    img = jnp.full((8, 8, 3), 0.5)
    scene = S.init_scene(jax.random.key(0), img, num=4, capacity=8)
    scene["log_scale"] = scene["log_scale"].at[1].set(jnp.log(jnp.array([3.0, 3.0])))
    scene["log_scale"] = scene["log_scale"].at[0].set(jnp.log(jnp.array([0.5, 0.5])))
    scene["opacity_logit"] = scene["opacity_logit"].at[3].set(-10.0)  # opacity < 0.005: pruned
    g = jnp.array([1.0, 1.0, 0.0, 0.0, 0, 0, 0, 0])
    new, changed = S.gradient_densify(jax.random.key(1), scene, g, grad_threshold=0.5, scale_threshold=1.0)
    assert int(new["active"].sum()) == 4 + 2 - 1
    assert bool(new["active"][4]) and bool(new["active"][5]) and not bool(new["active"][3])
    np.testing.assert_array_equal(new["mean"][4], scene["mean"][0])  # clone = copy
    np.testing.assert_allclose(jnp.exp(new["log_scale"][1]), 3.0 / 1.6, rtol=1e-12)  # split shrinks both
    np.testing.assert_allclose(jnp.exp(new["log_scale"][5]), 3.0 / 1.6, rtol=1e-12)
    assert bool(changed[1]) and bool(changed[4]) and bool(changed[5]) and not bool(changed[2])


def test_validation():
    with pytest.raises(ValueError, match="chol"):
        S.render(jnp.zeros((2, 2)), jnp.zeros((3, 2, 2)), jnp.ones(2), jnp.ones((2, 1)), jnp.zeros(2), height=4, width=4)
    with pytest.raises(ValueError, match="penalty"):
        S.flow_loss(jnp.zeros((4, 4, 2)), jnp.ones((4, 4)), jnp.zeros((4, 4, 2)), penalty="l3")
