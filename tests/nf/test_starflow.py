"""Tests for the autoregressive normalizing flows (flowjax.nf): exactness, Jacobi, denoisers.

Shapes are tiny (N <= 8 tokens, D <= 32) and every function under test is jitted once per flow,
so the file runs in well under a minute on 2 cores.
"""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowjax import nf
from flowjax.testing import gaussian_flow

# D = 32: C=4 channels, S=4 tokens per frame, F=2 frames (spec test: jacfwd log-det on a D=32 variant).
C, S, F = 4, 4, 2


def _perturb(params, key, scale=0.2):
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(tree, [l + scale * jax.random.normal(k, l.shape, l.dtype) for l, k in zip(leaves, keys)])


@pytest.fixture(scope="module")
def sv():
    flow = nf.starflow_v(C, S, F, shallow_blocks=2, shallow_depth=1, deep_depth=1, dim=16, heads=2)
    params = _perturb(nf.init_flow(flow, jax.random.key(0)), jax.random.key(1))
    fwd = jax.jit(partial(nf.flow_forward, flow))
    return flow, params, fwd


@pytest.fixture(scope="module")
def xdata():
    return jax.random.normal(jax.random.key(2), (3, F * S, C), jnp.float32)


def test_zero_init_is_identity(xdata):
    flow = nf.starflow_v(C, S, F, shallow_blocks=2, deep_depth=1, dim=16, heads=2)
    params = nf.init_flow(flow, jax.random.key(0))
    z, logdet = jax.jit(partial(nf.flow_forward, flow))(params, xdata)
    np.testing.assert_array_equal(np.asarray(z), np.asarray(xdata))
    np.testing.assert_array_equal(np.asarray(logdet), 0.0)
    loss, aux = jax.jit(lambda p, v: nf.nf_loss_value(lambda u: nf.flow_forward(flow, p, u), v))(params, xdata)
    np.testing.assert_allclose(loss, 0.5 * jnp.mean(xdata**2), rtol=1e-6)


def test_logdet_equals_bruteforce_jacobian(sv, xdata):
    flow, params, fwd = sv
    z, logdet = fwd(params, xdata)
    # one compiled Jacobian for both samples (eager jacfwd dispatches the flow op by op: ~100 s)
    jac_fn = jax.jit(jax.jacfwd(lambda v: nf.flow_forward(flow, params, v[None])[0][0].reshape(-1)))
    for b in range(2):
        jac = jac_fn(xdata[b]).reshape(F * S * C, F * S * C)
        sign, ld = np.linalg.slogdet(np.asarray(jac, np.float64))
        assert sign != 0
        np.testing.assert_allclose(logdet[b], ld, atol=1e-4, rtol=1e-5)
    # exact log-likelihood: change of variables with the same determinant
    lp = nf.flow_log_prob(flow, params, xdata)
    ref = -0.5 * jnp.sum(z.reshape(3, -1) ** 2, -1) - 0.5 * F * S * C * np.log(2 * np.pi) + logdet
    np.testing.assert_allclose(lp, ref, rtol=1e-6)


def test_block_jacobians_triangular_and_global_local(sv, xdata):
    flow, params, _ = sv
    x0 = xdata[0]
    for i, spec in enumerate(flow.blocks):
        fn = lambda v: nf.af_block_forward(flow, i, params[i], v[None])[0][0]  # noqa: E731
        jac = np.asarray(jax.jacfwd(fn)(x0))  # (N, C, N, C)
        tok = np.abs(jac).sum(axis=(1, 3))  # token dependency (N, N)
        if spec.scope == "frame":
            for f in range(F):
                for g in range(F):
                    if f != g:  # local: no cross-frame dependency
                        assert tok[f * S:(f + 1) * S, g * S:(g + 1) * S].max() == 0.0
            order = np.concatenate([np.arange(f * S, (f + 1) * S)[::-1] if spec.flip else np.arange(f * S, (f + 1) * S) for f in range(F)])
        else:
            order = np.arange(F * S)[::-1] if spec.flip else np.arange(F * S)
        # triangular in the block's order: z_(k) does not depend on x_(j), j > k (diagonal blocks: a^-1 I)
        for f in range(F):
            seg = order[f * S:(f + 1) * S] if spec.scope == "frame" else order
            for a, ia in enumerate(seg):
                for ib in seg[a + 1:]:
                    assert tok[ia, ib] == 0.0
        _, ld = nf.af_block_forward(flow, i, params[i], x0[None])
        np.testing.assert_allclose(ld[0], np.linalg.slogdet(jac.reshape(F * S * C, -1))[1], atol=1e-4)
    # whole stack: frame-causal (deep block global in time order, shallow blocks local)
    jac = np.abs(np.asarray(jax.jacfwd(lambda v: nf.flow_forward(flow, params, v[None])[0][0])(x0))).sum(axis=(1, 3))
    assert jac[:S, S:].max() == 0.0  # frame 1 of z ignores frame 2 of x
    assert jac[S:, :S].max() > 0.0


@pytest.mark.parametrize("kind", ["starflow_v", "tarflow"])
def test_inverse_of_forward_is_identity(kind, sv, xdata):
    if kind == "starflow_v":
        flow, params, fwd = sv
    else:
        flow = nf.tarflow(C, F * S, num_blocks=2, depth=1, dim=16, heads=2)
        params = _perturb(nf.init_flow(flow, jax.random.key(5)), jax.random.key(6), 0.1)
        fwd = jax.jit(partial(nf.flow_forward, flow))
    z, _ = fwd(params, xdata)
    inv = jax.jit(partial(nf.flow_inverse, flow, method="sequential"))
    x_rec, info = inv(params, z)
    assert float(jnp.max(jnp.abs(x_rec - xdata))) < 1e-4
    # sequential: one call per token per block (frame-scoped blocks run frames in parallel)
    expected = sum(S if b.scope == "frame" else F * S for b in flow.blocks)
    assert int(info["calls"]) == expected


def test_jacobi_prefix_exact_after_k_iterations(sv, xdata):
    flow, params, fwd = sv
    i = len(flow.blocks) - 1  # the deep global block
    z, _ = nf.af_block_forward(flow, i, params[i], xdata)
    seq, _ = jax.jit(partial(nf.af_block_inverse, flow, i, method="sequential"))(params[i], z)
    n = F * S
    jac = jax.jit(partial(nf.af_block_inverse, flow, i, method="jacobi", tol=0.0, video_init=False), static_argnames="max_iter")
    for k in (1, 3, n):
        xk, iters = jac(params[i], z, max_iter=k)
        assert iters.tolist() == [k]
        np.testing.assert_allclose(xk[:, :k], seq[:, :k], atol=1e-5)
        if k < n:  # later tokens are not yet solved (the initial guess is z)
            assert float(jnp.max(jnp.abs(xk[:, k:] - seq[:, k:]))) > 1e-3
    np.testing.assert_allclose(xk, seq, atol=1e-5)


def test_blockwise_jacobi_equals_sequential_and_counts(sv, xdata):
    flow, params, fwd = sv
    z, _ = fwd(params, xdata)
    seq, _ = jax.jit(partial(nf.flow_inverse, flow, method="sequential"))(params, z)
    # exact: max_iter = chunk length, early stopping off
    exact, info = jax.jit(partial(nf.flow_inverse, flow, method="jacobi", chunk_sizes=S, tol=0.0, max_iter=S))(params, z)
    np.testing.assert_allclose(exact, seq, atol=1e-5)
    assert [it.tolist() for it in info["iterations"]] == [[S]] * (len(flow.blocks) - 1) + [[S] * F]
    # with a convergence test the iteration count is reported, capped, and never above L + 1
    approx, info = jax.jit(partial(nf.flow_inverse, flow, method="jacobi", chunk_sizes=S, tol=1e-6, max_iter=32))(params, z)
    for it in info["iterations"]:
        assert np.all(np.asarray(it) >= 1) and np.all(np.asarray(it) <= S + 1)
    rel = jnp.sqrt(jnp.mean((approx - seq) ** 2) / jnp.mean(seq**2))
    assert float(rel) < 1e-2
    assert int(info["calls"]) == sum(int(jnp.sum(it)) for it in info["iterations"])
    capped, info = jax.jit(partial(nf.flow_inverse, flow, method="jacobi", chunk_sizes=S, tol=0.0, max_iter=2))(params, z)
    assert all(np.all(np.asarray(it) == 2) for it in info["iterations"])


def test_video_aware_initial_guess_uses_previous_frame(sv):
    """A static video: the previous frame is the exact answer, so each later chunk stops after 1 iteration."""
    flow, params, _ = sv
    i = len(flow.blocks) - 1
    frame = jax.random.normal(jax.random.key(7), (2, 1, S, C))
    x = jnp.broadcast_to(frame, (2, F, S, C)).reshape(2, F * S, C)
    # a deep block that ignores the past beyond its own frame is not needed: the fixed point is x itself
    z, _ = nf.af_block_forward(flow, i, params[i], x)
    run = jax.jit(partial(nf.af_block_inverse, flow, i, method="jacobi", chunk_sizes=S, tol=1e-10, max_iter=32), static_argnames="video_init")
    xv, it_v = run(params[i], z, video_init=True)
    xz, it_z = run(params[i], z, video_init=False)
    assert int(it_v[1]) == 1 and int(it_z[1]) > 1
    np.testing.assert_allclose(xv, x, atol=1e-5)
    np.testing.assert_allclose(xz, x, atol=1e-4)


def _gaussian_nf(mean, var, n_tokens=2, channels=3):
    """A 1-block flow whose density is exactly N(mean, var I) on every token (constant b, a)."""
    flow = nf.ARFlow(channels, n_tokens, 1, (nf.AFBlockSpec("global", False, 1),), dim=8, heads=2, scale="exp", soft_clip=None)
    params = nf.init_flow(flow, jax.random.key(0))
    bias = jnp.concatenate([jnp.full((channels,), mean), jnp.full((channels,), 0.5 * np.log(var))]).astype(jnp.float32)
    params[0]["net"]["params"]["final"]["out"]["bias"] = bias
    return flow, params


def test_denoisers_on_gaussian_where_the_score_is_exact():
    m, s2, sigma = 0.7, 0.5, 0.3
    var = s2 + sigma**2  # p_sigma = N(m, s^2 + sigma^2)
    flow, params = _gaussian_nf(m, var)
    xt = jax.random.normal(jax.random.key(3), (5, 2, 3)) * np.sqrt(var) + m
    exact = lambda v, c=0.0: sigma * (v - m) / var + c  # noqa: E731  (an exact eps-predictor)

    @jax.jit
    def compute(params, xt):
        logp = lambda v: nf.flow_log_prob(flow, params, v)  # noqa: E731
        target = nf.fsm_target(logp, xt, sigma=sigma)
        g = jax.grad(lambda v: nf.nf_loss_value(lambda u: nf.flow_forward(flow, params, u), v)[0])(xt)
        loss = nf.fsm_loss(exact, None, xt, target=target)[0]
        dloss = jax.grad(lambda c: nf.fsm_loss(lambda v: exact(v, c), None, xt, target=target)[0])(0.0)
        return (logp(xt), nf.self_denoise(logp, xt, sigma=sigma), target, nf.fsm_target_from_loss_grad(g, sigma=sigma),
                nf.fsm_denoise(exact, xt, sigma=sigma), loss, dloss)

    lp, sd, target, target_free, fsm, loss, dloss = compute(params, xt)
    # exact density
    ref_lp = jnp.sum(-0.5 * (xt - m) ** 2 / var - 0.5 * np.log(2 * np.pi * var), axis=(1, 2))
    np.testing.assert_allclose(lp, ref_lp, rtol=1e-5, atol=1e-5)
    post = m + s2 * (xt - m) / var  # E[x | x~] for x ~ N(m, s^2)
    np.testing.assert_allclose(sd, post, atol=1e-5)
    np.testing.assert_allclose(target, sigma * (xt - m) / var, atol=1e-5)
    # the code's free target from the gradient of the batch-mean per-dim loss equals the per-sample score
    np.testing.assert_allclose(target_free, target, atol=1e-5)
    # exact eps-predictor: FSM step = self-denoise = posterior mean; FSM loss 0 with zero gradient
    np.testing.assert_allclose(fsm, post, atol=1e-5)
    assert float(loss) < 1e-10
    assert abs(float(dloss)) < 1e-5
    # project time mapping: x~ = x_t / t with t = 1/(1+sigma); E[x1|x_t] of the oracle = Tweedie posterior mean
    t = float(nf.noise_level_to_time(sigma))
    oracle = gaussian_flow(jnp.full((6,), m), jnp.full((6,), np.sqrt(s2)))
    ex1, ex0 = oracle.posterior_means((t * xt).reshape(5, 6), jnp.full((5,), t))
    np.testing.assert_allclose(ex1, post.reshape(5, 6), atol=1e-5)
    np.testing.assert_allclose(ex0, target.reshape(5, 6), atol=1e-5)  # E[x0 | x_t] = E[eps | x~]


def test_fsm_denoiser_causal_and_self_denoise_not(sv, xdata):
    flow, params, _ = sv
    den = nf.CausalDenoiser(C, S, dim=16, depth=2, heads=2, lookahead=1)
    dp = _perturb(jax.tree.map(jnp.asarray, den.init(jax.random.key(4), xdata)), jax.random.key(8), 0.3)
    dfn = jax.jit(lambda v: den.apply(dp, v))
    # 4 frames; 2 layers x 1-frame lookahead: frame 1 sees up to frame 3, not frame 4 (spec 3.6 review note)
    x4 = jnp.concatenate([xdata, xdata], axis=1)
    pert = x4.at[:, 3 * S:].add(1.0)
    japply = jax.jit(den.apply)
    out, out_p = japply(dp, x4), japply(dp, pert)
    np.testing.assert_array_equal(np.asarray(out[:, :S]), np.asarray(out_p[:, :S]))
    assert float(jnp.max(jnp.abs(out[:, S:2 * S] - out_p[:, S:2 * S]))) > 1e-4  # frame 2 sees frame 4
    strict = nf.CausalDenoiser(C, S, dim=16, depth=2, heads=2, lookahead=0)
    sapply = jax.jit(strict.apply)
    o, op = sapply(dp, xdata), sapply(dp, xdata.at[:, S:].add(1.0))
    np.testing.assert_array_equal(np.asarray(o[:, :S]), np.asarray(op[:, :S]))
    assert dfn(xdata).shape == xdata.shape
    # the flow's self-denoise on frame 1 depends on frame 2 (non-causal score)
    logp = lambda v: nf.flow_log_prob(flow, params, v)  # noqa: E731
    sd = jax.jit(partial(nf.self_denoise, logp, sigma=0.3))
    d1, d2 = sd(xdata), sd(xdata.at[:, S:].add(1.0))
    assert float(jnp.max(jnp.abs(d1[:, :S] - d2[:, :S]))) > 1e-4


def test_nf_loss_gradients_and_validation(sv, xdata):
    flow, params, _ = sv
    fwd = lambda p: (lambda v: nf.flow_forward(flow, p, v))  # noqa: E731
    g = jax.jit(jax.grad(lambda p: nf.nf_loss(fwd(p), jax.random.key(0), xdata, sigma=0.3)[0]))(params)
    assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(g))
    assert float(sum(jnp.sum(jnp.abs(leaf)) for leaf in jax.tree.leaves(g[-1]["net"]))) > 0
    # FSM target is stop-gradient: no gradient reaches the flow through the FSM loss
    def fsm_of_flow(p):
        target = nf.fsm_target(lambda v: nf.flow_log_prob(flow, p, v), xdata, sigma=0.3)
        return nf.fsm_loss(lambda v: jnp.zeros_like(v), None, xdata, target=target)[0]
    gz = jax.jit(jax.grad(fsm_of_flow))(params)
    assert all(float(jnp.max(jnp.abs(leaf))) == 0.0 for leaf in jax.tree.leaves(gz))
    with pytest.raises(ValueError, match="x"):
        nf.flow_forward(flow, params, xdata[:, :5])
    with pytest.raises(ValueError, match="sigma"):
        nf.self_denoise(lambda v: jnp.zeros(v.shape[0]), xdata, sigma=-1.0)
    with pytest.raises(ValueError, match="chunk_sizes"):
        nf.flow_inverse(flow, params, xdata, method="jacobi", chunk_sizes=(3, 3))
    with pytest.raises(ValueError, match="method"):
        nf.flow_inverse(flow, params, xdata, method="newton")


def test_drifting_digits_and_patchify():
    imgs = jax.random.uniform(jax.random.key(0), (3, 8, 8, 1), minval=-1, maxval=1)
    v = nf.drifting_digits(jax.random.key(1), imgs, num_frames=4, noise=0.0)
    np.testing.assert_array_equal(np.asarray(v[:, 1]), np.asarray(imgs))
    np.testing.assert_array_equal(np.asarray(v[:, 2]), np.asarray(jnp.roll(imgs, 1, axis=2)))
    tok = nf.patchify_video(v, 2)
    assert tok.shape == (3, 64, 4)
    np.testing.assert_array_equal(np.asarray(nf.unpatchify_video(tok, num_frames=4, height=8, width=8, patch=2)), np.asarray(v))
    np.testing.assert_array_equal(np.asarray(tok[:, 0]), np.asarray(v[:, 0, :2, :2, 0].reshape(3, 4)))
