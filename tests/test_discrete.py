"""Discrete flow matching: mixture-path marginals, loss minimiser and jump sampler by exact enumeration."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowjax import discrete as dfm
from flowjax.losses import discrete_fm
from flowjax.losses.discrete import mixture_loss_terms

V, L = 3, 2
P1 = np.array([0.30, 0.05, 0.10, 0.02, 0.20, 0.08, 0.15, 0.04, 0.06])  # data over V^L (row-major)
SCHED = dfm.polynomial_scheduler(1.0)


def setup(source, length=L, p1=P1):
    S = dfm.num_states(V, source)
    states = list(itertools.product(range(S), repeat=length))
    data = list(itertools.product(range(V), repeat=length))
    if source == "mask":
        p0 = {tuple([V] * length): 1.0}
    else:
        p0 = {x: V ** (-length) for x in data}
    return S, states, data, p0


def joint(source, t, length=L, p1=P1):
    """Exact p_t(x_t, x1) over the enumerated state space: dict (x_t, x1) -> prob."""
    S, states, data, p0 = setup(source, length, p1)
    k = t
    out = {}
    for x0, w0 in p0.items():
        for x1, w1 in zip(data, p1):
            for xt in states:
                w = 1.0
                for i in range(length):
                    w *= (1 - k) * (xt[i] == x0[i]) + k * (xt[i] == x1[i])
                if w:
                    out[(xt, x1)] = out.get((xt, x1), 0.0) + w0 * w1 * w
    return out


def marginal(source, t, length=L, p1=P1):
    m = {}
    for (xt, _), w in joint(source, t, length, p1).items():
        m[xt] = m.get(xt, 0.0) + w
    return m


def posterior_table(source, t, length=L, p1=P1):
    """Exact p_{1|t}^i(y | x_t) as an array (S^L, L, S) indexed by the flat state of x_t."""
    S, states, _, _ = setup(source, length, p1)
    tab = np.zeros((len(states), length, S))
    for (xt, x1), w in joint(source, t, length, p1).items():
        for i in range(length):
            tab[states.index(xt), i, x1[i]] += w
    z = tab.sum(-1, keepdims=True)
    return np.where(z > 0, tab / np.maximum(z, 1e-300), 1.0 / S)


def flat(x, S):
    return sum(x[..., i] * S ** (x.shape[-1] - 1 - i) for i in range(x.shape[-1]))


@pytest.mark.parametrize("source", dfm.SOURCES)
def test_mixture_path_marginals_match_closed_form(source):
    S, states, data, _ = setup(source)
    n = 40000
    p1 = jnp.asarray(P1)
    for j, t in enumerate((0.2, 0.5, 0.8)):
        k1, k0, kp = jax.random.split(jax.random.key(j), 3)
        x1 = jnp.asarray(np.array(data))[jax.random.choice(k1, len(data), (n,), p=p1)]
        x0 = dfm.source_sample(k0, x1.shape, vocab_size=V, source=source)
        xt = dfm.sample_path(kp, x0, x1, jnp.full((n,), t), scheduler=SCHED)
        emp = np.bincount(np.asarray(flat(xt, S)), minlength=S**L) / n
        exact = np.zeros(S**L)
        for x, w in marginal(source, t).items():
            exact[states.index(x)] = w
        tol = 5 * np.sqrt(exact * (1 - exact) / n) + 1e-3
        assert np.all(np.abs(emp - exact) <= tol), (t, emp, exact)
        # per-position closed form (1 - kappa) p0 + kappa p1
        for i in range(L):
            pos = np.bincount(np.asarray(xt[:, i]), minlength=S) / n
            p1_i = np.zeros(S)
            for x, w in zip(data, P1):
                p1_i[x[i]] += w
            p0_i = np.eye(S)[V] if source == "mask" else np.r_[np.full(V, 1 / V), np.zeros(S - V)]
            np.testing.assert_allclose(pos, (1 - t) * p0_i + t * p1_i, atol=0.015)


@pytest.mark.parametrize("source", dfm.SOURCES)
@pytest.mark.parametrize("kind", ["cross_entropy", "generalized_kl"])
def test_losses_minimised_by_exact_posterior(source, kind):
    S, states, _, _ = setup(source)
    t = 0.4
    pairs = joint(source, t)
    xt = jnp.asarray([states.index(a) for (a, _) in pairs])
    xt_tok = jnp.asarray([a for (a, _) in pairs])
    x1_tok = jnp.asarray([b for (_, b) in pairs])
    w = jnp.asarray(list(pairs.values()))
    tt = jnp.full((len(pairs),), t)

    def expected_loss(table_logits):
        per = mixture_loss_terms(table_logits[xt], xt_tok, x1_tok, tt, scheduler=SCHED, kind=kind)
        return jnp.sum(w * per)

    post = posterior_table(source, t)
    logits = jnp.log(jnp.maximum(jnp.asarray(post), 1e-30))
    g = jax.grad(expected_loss)(logits)
    assert float(jnp.max(jnp.abs(g))) < 1e-8
    pert = logits + 0.3 * jax.random.normal(jax.random.key(0), logits.shape)
    assert float(expected_loss(pert)) > float(expected_loss(logits)) + 1e-4
    if kind == "generalized_kl":
        # pointwise >= 0 and 0 at the point-mass prediction p = delta_{x1}
        per = mixture_loss_terms(jnp.log(jax.nn.one_hot(x1_tok, S) + 1e-30), xt_tok, x1_tok, tt, scheduler=SCHED, kind=kind)
        np.testing.assert_allclose(per, 0.0, atol=1e-10)


def euler_chain_exact(source, steps, length=L, p1=P1):
    """Exact output distribution of the factorised discrete Euler sampler with the exact posterior."""
    S, states, data, p0 = setup(source, length, p1)
    dist = np.zeros(len(states))
    for x0, w0 in p0.items():
        dist[states.index(x0)] += w0
    h = 1.0 / steps
    for k in range(steps):
        t = k * h
        pj = min(1.0, h / (1 - t))
        post = posterior_table(source, t, length, p1)
        if source == "mask":
            post[..., V] = 0.0
            post = post / post.sum(-1, keepdims=True)
        T = np.zeros((len(states), len(states)))
        for a, xa in enumerate(states):
            for b, xb in enumerate(states):
                pr = 1.0
                for i in range(length):
                    pr *= (1 - pj) * (xa[i] == xb[i]) + pj * post[a, i, xb[i]]
                T[a, b] = pr
        dist = dist @ T
    target = np.zeros(len(states))
    for x, w in zip(data, p1):
        target[states.index(x)] = w
    return dist, target


@pytest.mark.parametrize("source", dfm.SOURCES)
def test_euler_sampler_with_exact_posterior(source):
    # One position: linear kappa makes p_t linear in t, so Euler with the exact rate is exact.
    p1_single = np.array([0.6, 0.1, 0.3])
    d, target = euler_chain_exact(source, 3, length=1, p1=p1_single)
    np.testing.assert_allclose(d, target, atol=1e-12)
    # Two positions: simultaneous factorised jumps err at O(h); the error vanishes as steps grow.
    tvs = [0.5 * np.abs(np.subtract(*euler_chain_exact(source, s))).sum() for s in (4, 16, 64)]
    assert tvs[2] < tvs[1] < tvs[0] and tvs[2] < 0.02, tvs

    # The implemented sampler follows that exact chain (Monte Carlo, steps = 4).
    S, states, _, _ = setup(source)
    steps, n = 4, 40000
    tables = {k: jnp.log(jnp.maximum(jnp.asarray(posterior_table(source, k / steps)), 1e-30)) for k in range(steps)}
    stacked = jnp.stack([tables[k] for k in range(steps)])

    def logits_fn(x, t):
        k = jnp.round(t * steps).astype(jnp.int32)
        return stacked[k, flat(x, S)]

    x0 = dfm.source_sample(jax.random.key(1), (n, L), vocab_size=V, source=source)
    out = dfm.euler_sample(logits_fn, jax.random.key(2), x0, scheduler=SCHED, steps=steps,
                           mask_id=V if source == "mask" else None)
    emp = np.bincount(np.asarray(flat(out, S)), minlength=S**L) / n
    exact, _ = euler_chain_exact(source, steps)
    tol = 5 * np.sqrt(exact * (1 - exact) / n) + 1e-3
    assert np.all(np.abs(emp - exact) <= tol)
    if source == "mask":
        assert not bool(jnp.any(out == V))


def test_discrete_fm_loss_contract():
    x1 = jax.random.randint(jax.random.key(0), (8, 5), 0, V)
    for source in dfm.SOURCES:
        S = dfm.num_states(V, source)
        fn = lambda x, t: jax.nn.one_hot(x, S) * t[:, None, None]
        for kind in ("cross_entropy", "generalized_kl"):
            loss, aux = jax.jit(lambda k: discrete_fm(fn, k, x1, vocab_size=V, source=source, kind=kind))(jax.random.key(1))
            assert np.isfinite(float(loss)) and set(aux) == {"loss", "x1_accuracy"}
    with pytest.raises(ValueError, match="logits_fn"):
        discrete_fm(lambda x, t: jnp.zeros((8, 5, V)), jax.random.key(0), x1, vocab_size=V, source="mask")
    with pytest.raises(TypeError, match="x1"):
        discrete_fm(lambda x, t: x, jax.random.key(0), x1.astype(jnp.float32), vocab_size=V)
    with pytest.raises(ValueError, match="source"):
        dfm.source_sample(jax.random.key(0), (2, 2), vocab_size=V, source="gauss")


@pytest.mark.parametrize("sched", [dfm.polynomial_scheduler(1.0), dfm.polynomial_scheduler(2.0), dfm.cosine_scheduler()])
def test_schedulers_endpoints_and_derivative(sched):
    assert float(sched.kappa(jnp.asarray(0.0))) == pytest.approx(0.0, abs=1e-12)
    assert float(sched.kappa(jnp.asarray(1.0))) == pytest.approx(1.0, abs=1e-12)
    for t in (0.1, 0.5, 0.9):
        assert float(sched.d_kappa(jnp.asarray(t))) == pytest.approx(float(jax.grad(sched.kappa)(jnp.asarray(t))), rel=1e-9)


# ----------------------------------------------------------------------------- corrector and guidance
def exact_transition(source, t, h, alpha, beta, length=L, p1=P1):
    """Exact joint transition matrix of one factorised Euler step (euler_step_probs) with the exact posterior."""
    S, states, _, _ = setup(source, length, p1)
    post = posterior_table(source, t, length, p1)
    if source == "mask":
        post[..., V] = 0.0
        post = post / post.sum(-1, keepdims=True)
    xs = jnp.asarray(np.array(states), jnp.int32)
    probs = np.asarray(dfm.euler_step_probs(jnp.asarray(post), xs, jnp.full((len(states),), t), h, scheduler=SCHED,
                                            alpha=alpha, beta=beta, mask_id=V if source == "mask" else None))
    T = np.ones((len(states), len(states)))
    for b, xb in enumerate(states):
        for i in range(length):
            T[:, b] *= probs[:, i, xb[i]]
    return T, states


def marginal_vec(source, t, states, length=L, p1=P1):
    v = np.zeros(len(states))
    for x, w in marginal(source, t, length, p1).items():
        v[states.index(x)] = w
    return v


def exact_generator(source, t, alpha, beta, length=L, p1=P1):
    """The CTMC generator Q of the factorised velocity: one position changes at a time, at the per-position
    rate (the off-diagonal step probabilities of euler_step_probs are h * rate when unclipped)."""
    h = 1e-3
    S, states, _, _ = setup(source, length, p1)
    post = posterior_table(source, t, length, p1)
    if source == "mask":
        post[..., V] = 0.0
        post = post / post.sum(-1, keepdims=True)
    xs = jnp.asarray(np.array(states), jnp.int32)
    probs = np.asarray(dfm.euler_step_probs(jnp.asarray(post), xs, jnp.full((len(states),), t), h, scheduler=SCHED,
                                            alpha=alpha, beta=beta, mask_id=V if source == "mask" else None))
    Q = np.zeros((len(states), len(states)))
    for a, xa in enumerate(states):
        for b, xb in enumerate(states):
            diff = [i for i in range(length) if xa[i] != xb[i]]
            if len(diff) == 1:
                Q[a, b] = probs[a, diff[0], xb[diff[0]]] / h
        Q[a, a] = -Q[a].sum()
    return Q, states


@pytest.mark.parametrize("t", [0.3, 0.7])
def test_corrector_keeps_exact_marginal(t):
    # alpha = beta: the pure corrector velocity alpha (uhat - ucheck) leaves p_t invariant: p_t Q = 0 exactly
    # on the enumerated 2-token state space (posteriors conditioned on the whole sequence).
    Q, states = exact_generator("mask", t, alpha=0.8, beta=0.8)
    assert np.abs(Q).max() > 0.1  # it does move mass (re-masks and redraws)
    pt = marginal_vec("mask", t, states)
    np.testing.assert_allclose(pt @ Q, 0.0, atol=1e-10)
    # predictor + corrector (alpha - beta = 1) generates the path: p_t Q = dp_t/dt for any beta
    d = 1e-5
    pdot = (marginal_vec("mask", t + d, states) - marginal_vec("mask", t - d, states)) / (2 * d)
    for beta in (0.0, 1.5):
        Q, _ = exact_generator("mask", t, alpha=1.0 + beta, beta=beta)
        np.testing.assert_allclose(pt @ Q, pdot, atol=1e-8)
    # Euler step of the pure corrector: exact (I + hQ) for one token; for two tokens the factorised step
    # adds simultaneous jumps, an O(h^2) drift of the marginal
    T, st1 = exact_transition("mask", t, 0.05, 0.8, 0.8, length=1, p1=np.array([0.6, 0.1, 0.3]))
    p1t = marginal_vec("mask", t, st1, length=1, p1=np.array([0.6, 0.1, 0.3]))
    np.testing.assert_allclose(p1t @ T, p1t, atol=1e-12)
    errs = []
    for h in (0.04, 0.02):
        T, _ = exact_transition("mask", t, h, alpha=0.8, beta=0.8)
        errs.append(np.abs(pt @ T - pt).max())
    assert 3.5 < errs[0] / errs[1] < 4.5, errs


def test_corrector_sampler_exact_on_one_token():
    # One position, kappa = t: p_t is linear in t, so every unclipped Euler step is exact and the
    # predictor-corrector chain ends at the data distribution; the implemented sampler follows it.
    p1_single = np.array([0.6, 0.1, 0.3])
    steps = 4
    beta_fn = lambda t: jnp.where(t < 0.7, 0.5, 0.0)  # noqa: E731  (no corrector on the last, clipped step)
    S, states, _, _ = setup("mask", 1, p1_single)
    dist = np.zeros(len(states))
    dist[states.index((V,))] = 1.0
    for k in range(steps):
        t = k / steps
        b = float(beta_fn(jnp.asarray(t)))
        T, _ = exact_transition("mask", t, 1.0 / steps, 1.0 + b, b, length=1, p1=p1_single)
        dist = dist @ T
    np.testing.assert_allclose(dist, np.r_[p1_single, 0.0], atol=1e-12)

    tables = jnp.stack([jnp.log(jnp.maximum(jnp.asarray(posterior_table("mask", k / steps, 1, p1_single)), 1e-30))
                        for k in range(steps)])

    def logits_fn(x, t):
        return tables[jnp.round(t * steps).astype(jnp.int32), x[:, 0]]

    n = 20000
    x0 = dfm.source_sample(jax.random.key(0), (n, 1), vocab_size=V, source="mask")
    out = dfm.euler_sample(logits_fn, jax.random.key(1), x0, scheduler=SCHED, steps=steps, mask_id=V, corrector=beta_fn)
    emp = np.bincount(np.asarray(out[:, 0]), minlength=S) / n
    np.testing.assert_allclose(emp, np.r_[p1_single, 0.0], atol=5 * np.sqrt(0.25 / n))
    # the trajectory does re-mask (the corrector is active)
    traj = dfm.euler_sample(logits_fn, jax.random.key(1), x0, scheduler=SCHED, steps=steps, mask_id=V, corrector=beta_fn,
                            return_trajectory=True)
    remasked = (traj[1:-1] != V) & (traj[2:] == V)
    assert bool(jnp.any(remasked))
    with pytest.raises(ValueError, match="mask_id"):
        dfm.euler_sample(logits_fn, jax.random.key(1), x0, scheduler=SCHED, steps=steps, corrector=0.5)


def test_guidance_scale_one_is_the_conditional_sampler():
    S = dfm.num_states(V, "mask")
    table = jax.random.normal(jax.random.key(3), (3, L, S))  # logits per condition (2 classes + null) and position

    def logits_fn(x, t, c):
        return table[c] + 0.5 * jax.nn.one_hot(x, S) * t[:, None, None]

    n = 256
    labels = jax.random.randint(jax.random.key(4), (n,), 0, 2)
    null = jnp.full((n,), 2)
    x0 = dfm.source_sample(jax.random.key(5), (n, L), vocab_size=V, source="mask")
    kw = dict(scheduler=SCHED, steps=8, mask_id=V)
    cond = dfm.euler_sample(logits_fn, jax.random.key(6), x0, c=labels, **kw)
    guided1 = dfm.euler_sample(logits_fn, jax.random.key(6), x0, c=labels, guidance_scale=1.0, null_c=null, **kw)
    np.testing.assert_array_equal(np.asarray(guided1), np.asarray(cond))
    uncond = dfm.euler_sample(logits_fn, jax.random.key(6), x0, c=null, **kw)
    guided0 = dfm.euler_sample(logits_fn, jax.random.key(6), x0, c=labels, guidance_scale=0.0, null_c=null, **kw)
    np.testing.assert_array_equal(np.asarray(guided0), np.asarray(uncond))
    # w = 3 differs and sharpens towards the conditional mode
    guided3 = dfm.euler_sample(logits_fn, jax.random.key(6), x0, c=labels, guidance_scale=3.0, null_c=null, **kw)
    assert not np.array_equal(np.asarray(guided3), np.asarray(cond))
    with pytest.raises(ValueError, match="null_c"):
        dfm.euler_sample(logits_fn, jax.random.key(6), x0, c=labels, guidance_scale=2.0, **kw)
