"""Flow-map self-distillation losses (LSD / ESD / PSD) on the closed-form Gaussian flow."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _fewstep_analytic import AnalyticGaussian

from flowjax.losses import cfm, flowmap_eulerian, flowmap_lagrangian, flowmap_progressive
from flowjax.losses.flowmaps import flow_map_and_time_derivative
from test_meanflow import tiny_model

GAUSS = AnalyticGaussian([1.0, -0.5], [0.5, 0.8])
LOSSES = {
    "lsd": (flowmap_lagrangian, [dict(stopgrad="convex"), dict(stopgrad="none")]),
    "esd": (flowmap_eulerian, [dict(stopgrad="full"), dict(stopgrad="convex"), dict(stopgrad="none")]),
    "psd": (flowmap_progressive, [dict(split="uniform"), dict(split="midpoint")]),
}


@pytest.mark.parametrize("name", list(LOSSES))
def test_offdiagonal_loss_vanishes_at_the_exact_map_and_perturbation_raises_it(name):
    loss_fn, variants = LOSSES[name]
    x1 = GAUSS.sample_data(jax.random.key(0), 256)
    bad = lambda x, s, t: GAUSS.u(x, s, t) + 0.1 * jnp.sin(2 * x) * (t - s)[:, None]  # noqa: E731
    for kw in variants:
        for pairs in ("ordered", "square"):
            loss, _ = loss_fn(GAUSS.u, jax.random.key(1), x1, diag_fraction=0.0, pairs=pairs, **kw)
            assert float(loss) < 1e-18, (kw, pairs, float(loss))
            loss_bad, _ = loss_fn(bad, jax.random.key(1), x1, diag_fraction=0.0, pairs=pairs, **kw)
            assert float(loss_bad) > 1e-5, (kw, pairs)


@pytest.mark.parametrize("name", list(LOSSES))
def test_diagonal_only_is_flow_matching(name):
    loss_fn, variants = LOSSES[name]
    params, apply = tiny_model(jax.random.key(2), 2)
    u_fn = lambda x, s, t: apply(params, x, s, t)  # noqa: E731
    x1 = jax.random.normal(jax.random.key(3), (16, 2), jnp.float64)
    x0 = jax.random.normal(jax.random.key(4), (16, 2), jnp.float64)
    loss, _ = loss_fn(u_fn, jax.random.key(5), x1, x0=x0, diag_fraction=1.0, **variants[0])
    # the diagonal time is U[0, 1] drawn inside; recompute it with the same key path
    from flowjax.losses import _fewstep as fs
    from flowjax.timesteps import uniform

    kt = jax.random.split(jax.random.key(5), 3)[1]
    s, _, _ = fs.draw_times(kt, 16, pair_sampler=fs.sorted_pairs(uniform()), fm_fraction=1.0, fm_sampler=uniform(),
                            dtype=jnp.float64)
    ref, _ = cfm(lambda x, t: u_fn(x, t, t), jax.random.key(0), x1, x0=x0, time_sampler=lambda k, n: s)
    np.testing.assert_allclose(loss, ref, rtol=1e-12)


def test_time_derivative_matches_finite_differences_and_identity_map():
    params, apply = tiny_model(jax.random.key(6), 2)
    u_fn = lambda x, s, t: apply(params, x, s, t)  # noqa: E731
    x = jax.random.normal(jax.random.key(7), (6, 2), jnp.float64)
    s, t = jnp.full((6,), 0.2), jnp.full((6,), 0.7)
    X, dX = flow_map_and_time_derivative(u_fn, x, s, t)
    h = 1e-5
    fd = (flow_map_and_time_derivative(u_fn, x, s, t + h)[0] - flow_map_and_time_derivative(u_fn, x, s, t - h)[0]) / (2 * h)
    np.testing.assert_allclose(dX, fd, rtol=1e-4)
    np.testing.assert_array_equal(flow_map_and_time_derivative(u_fn, x, s, s)[0], x)  # X(x; s, s) == x
    # Lagrangian identity on the exact flow: d_t X = v(X, t)
    X, dX = flow_map_and_time_derivative(GAUSS.u, x, s, t)
    np.testing.assert_allclose(dX, GAUSS.velocity(X, t), atol=1e-10)


def _rows(n=12):
    x1 = jax.random.normal(jax.random.key(8), (n, 2), jnp.float64)
    x0 = jax.random.normal(jax.random.key(9), (n, 2), jnp.float64)
    return x1, x0


def test_lsd_gradient_placement():
    params, apply = tiny_model(jax.random.key(10), 2)
    x1, x0 = _rows()
    key = jax.random.key(11)

    def loss(p_student, p_teacher):
        return flowmap_lagrangian(lambda x, a, b: apply(p_student, x, a, b), key, x1, x0=x0, diag_fraction=0.0,
                                  teacher_fn=lambda x, a, b: apply(p_teacher, x, a, b))[0]

    g_student, g_teacher = jax.grad(loss, argnums=(0, 1))(params, params)
    assert all(float(jnp.max(jnp.abs(v))) == 0.0 for v in jax.tree.leaves(g_teacher))
    # student gradient == that of ||d_t X - C||^2 with C the (constant) teacher output
    from flowjax.losses import _fewstep as fs
    from flowjax.timesteps import uniform

    kt = jax.random.split(key, 3)[1]
    s, t, _ = fs.draw_times(kt, 12, pair_sampler=fs.sorted_pairs(uniform()), fm_fraction=0.0, fm_sampler=uniform(),
                            dtype=jnp.float64)
    xs = (1 - s)[:, None] * x0 + s[:, None] * x1
    X, _ = flow_map_and_time_derivative(lambda x, a, b: apply(params, x, a, b), xs, s, t)
    const = apply(params, X, t, t)

    def ref(p):
        _, dX = flow_map_and_time_derivative(lambda x, a, b: apply(p, x, a, b), xs, s, t)
        return jnp.mean((dX - const) ** 2)

    g_ref = jax.grad(ref)(params)
    for k in g_ref:
        np.testing.assert_allclose(g_student[k], g_ref[k], rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("name", ["esd", "psd"])
def test_teacher_receives_no_gradient(name):
    loss_fn, variants = LOSSES[name]
    params, apply = tiny_model(jax.random.key(12), 2)
    x1, x0 = _rows()

    def loss(p_student, p_teacher):
        return loss_fn(lambda x, a, b: apply(p_student, x, a, b), jax.random.key(13), x1, x0=x0, diag_fraction=0.0,
                       teacher_fn=lambda x, a, b: apply(p_teacher, x, a, b), **variants[0])[0]

    g_student, g_teacher = jax.grad(loss, argnums=(0, 1))(params, params)
    assert all(float(jnp.max(jnp.abs(v))) == 0.0 for v in jax.tree.leaves(g_teacher))
    assert any(float(jnp.max(jnp.abs(v))) > 0.0 for v in jax.tree.leaves(g_student))


def test_esd_convex_differs_from_full_only_in_gradient():
    params, apply = tiny_model(jax.random.key(14), 2)
    x1, x0 = _rows()

    def loss(p, variant):
        return flowmap_eulerian(lambda x, a, b: apply(p, x, a, b), jax.random.key(15), x1, x0=x0, diag_fraction=0.0,
                                stopgrad=variant)[0]

    np.testing.assert_allclose(loss(params, "full"), loss(params, "convex"), rtol=1e-12)
    g_full, g_convex = jax.grad(loss)(params, "full"), jax.grad(loss)(params, "convex")
    assert not np.allclose(g_full["w0"], g_convex["w0"])


def test_learned_weighting_optimum_is_log_loss():
    # exp(-w) l + w is minimised at w = log l
    x1 = GAUSS.sample_data(jax.random.key(16), 64)
    bad = lambda x, s, t: GAUSS.u(x, s, t) + 0.3  # noqa: E731
    base, _ = flowmap_progressive(bad, jax.random.key(17), x1, diag_fraction=0.0)

    def weighted(w):
        return flowmap_progressive(bad, jax.random.key(17), x1, diag_fraction=0.0,
                                   logvar_fn=lambda s, t: jnp.full(s.shape, w))[0]

    w_star = jnp.log(base)
    assert abs(float(jax.grad(weighted)(w_star))) < 1e-10
    assert float(weighted(w_star)) < float(weighted(w_star + 0.5))


def test_validation():
    u = lambda x, s, t: x  # noqa: E731
    with pytest.raises(ValueError, match="stopgrad"):
        flowmap_lagrangian(u, jax.random.key(0), jnp.ones((4, 2)), stopgrad="full")
    with pytest.raises(ValueError, match="pairs"):
        flowmap_progressive(u, jax.random.key(0), jnp.ones((4, 2)), pairs="triangle")
    with pytest.raises(ValueError, match="diag_fraction"):
        flowmap_eulerian(u, jax.random.key(0), jnp.ones((4, 2)), diag_fraction=2.0)
