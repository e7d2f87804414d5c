"""Reflow, k-step distillation, Rectified Diffusion and the pair dataset, against exact answers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowjax.data.pairs import PairDataset, generate_pairs, write_pairs
from flowjax.losses.distill import (
    k_step_distillation,
    pseudo_huber,
    rectified_diffusion,
    rectify,
    reflow,
)
from flowjax.paths import cosine_path, linear_path, vp_path
from flowjax.samplers.first_order import first_order
from flowjax.testing import GaussianMixtureFlow, gaussian_flow


def ring(n_modes=8, radius=2.0, std=0.1):
    ang = 2 * np.pi * np.arange(n_modes) / n_modes
    means = radius * np.stack([np.cos(ang), np.sin(ang)], 1)
    return GaussianMixtureFlow(jnp.asarray(means), jnp.full((n_modes,), std), jnp.ones((n_modes,)))


def normal_source(d):
    return lambda key, n: jax.random.normal(key, (n, d), jnp.float64)


def test_pairs_rk4_converged_and_match_oracle_flow_map():
    flow = ring(std=0.3)
    key = jax.random.key(0)
    x0, x1 = generate_pairs(flow.velocity, key, 64, sample_source=normal_source(2), batch_size=32, steps=100)
    _, x1_fine = generate_pairs(flow.velocity, key, 64, sample_source=normal_source(2), batch_size=32, steps=200)
    assert float(jnp.max(jnp.abs(x1 - x1_fine))) < 1e-4
    exact = flow.flow_map(x0, 0.0, 1.0)
    assert float(jnp.max(jnp.abs(x1_fine - exact))) < 1e-4


def test_pairs_sharded_equal_unsharded():
    flow = ring(std=0.3)
    mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    key = jax.random.key(1)
    a0, a1 = generate_pairs(flow.velocity, key, 40, sample_source=normal_source(2), batch_size=16, steps=20)
    b0, b1 = generate_pairs(flow.velocity, key, 40, sample_source=normal_source(2), batch_size=16, steps=20, mesh=mesh)
    assert a0.shape == (40, 2)
    np.testing.assert_allclose(np.asarray(a0), np.asarray(b0))
    np.testing.assert_allclose(np.asarray(a1), np.asarray(b1), atol=1e-12)
    with pytest.raises(ValueError, match="divisible"):
        generate_pairs(flow.velocity, key, 40, sample_source=normal_source(2), batch_size=12, mesh=mesh)


def test_write_and_stream_pairs(tmp_path):
    flow = ring(std=0.3)
    key = jax.random.key(2)
    kw = dict(sample_source=normal_source(2), batch_size=16, steps=10)
    ds = write_pairs(tmp_path / "p", flow.velocity, key, 100, shard_size=32, **kw)
    x0, x1 = generate_pairs(flow.velocity, key, 100, **kw)
    assert len(ds) == 100 and ds.num_shards == 4
    l0, l1 = PairDataset(tmp_path / "p").load()
    np.testing.assert_allclose(l0, np.asarray(x0))
    np.testing.assert_allclose(l1, np.asarray(x1))
    # One epoch with a batch dividing the full shards visits each of their rows exactly once.
    seen = np.concatenate([b["x0"] for b in ds.iterate(8, seed=3)])
    assert seen.shape == (96, 2)
    full = np.asarray(x0[:96])
    assert sorted(map(tuple, seen.round(12))) == sorted(map(tuple, full.round(12)))
    # Pairs stay matched while streaming; processes partition each batch.
    lookup = {tuple(a.round(12)): b for a, b in zip(np.asarray(x0), np.asarray(x1))}
    for b in ds.iterate(8, seed=3):
        for a, c in zip(b["x0"], b["x1"]):
            np.testing.assert_allclose(lookup[tuple(a.round(12))], c)
    p0 = next(ds.iterate(8, seed=5, process_index=0, process_count=2))["x0"]
    p1 = next(ds.iterate(8, seed=5, process_index=1, process_count=2))["x0"]
    whole = next(ds.iterate(8, seed=5))["x0"]
    assert sorted(map(tuple, np.concatenate([p0, p1]))) == sorted(map(tuple, whole))
    with pytest.raises(FileExistsError):
        write_pairs(tmp_path / "p", flow.velocity, key, 10, shard_size=16, **kw)
    with pytest.raises(FileNotFoundError):
        PairDataset(tmp_path / "missing")


def test_one_step_distillation_on_exact_pairs_recovers_flow_map():
    """Gaussian data: the flow map is affine; the least-squares 1-step map on exact pairs equals it."""
    flow = gaussian_flow(jnp.array([1.0, -2.0]), jnp.array([0.5, 2.0]))
    x0, x1 = generate_pairs(flow.velocity, jax.random.key(3), 256, sample_source=normal_source(2), steps=200)
    # Minimiser of |x1 - (x0 + v(x0, 0))|^2 over affine v: least squares x1 ~ [x0, 1] W.
    design = jnp.concatenate([x0, jnp.ones((256, 1))], 1)
    w, *_ = jnp.linalg.lstsq(design, x1)
    test = jax.random.normal(jax.random.key(4), (32, 2), jnp.float64)
    one_step = jnp.concatenate([test, jnp.ones((32, 1))], 1) @ w
    # Linear path, N(m, diag(s^2)) data: X_{0,1}(x0) = m + s x0 in closed form.
    exact = jnp.array([1.0, -2.0])[None] + jnp.array([0.5, 2.0])[None] * test
    np.testing.assert_allclose(np.asarray(one_step), np.asarray(exact), atol=1e-7)


def test_k_step_distillation_minimum_at_pair_map():
    # Any deterministic pair map: the minimum sits at v(x0, 0) = x1(x0) - x0.
    x0 = jax.random.normal(jax.random.key(5), (64, 2), jnp.float64)
    x1 = x0 + jnp.sin(2 * x0) + 0.3
    lookup_v = x1 - x0  # v(x0, 0) of the exact one-step map on these points

    def v_fn(eps):
        return lambda x, t: lookup_v + eps * jnp.sin(x)

    loss0, _ = k_step_distillation(v_fn(0.0), jax.random.key(0), x1, x0=x0, k=1)
    assert float(loss0) < 1e-20
    grad = jax.grad(lambda e: k_step_distillation(v_fn(e), jax.random.key(0), x1, x0=x0, k=1)[0])(0.0)
    assert abs(float(grad)) < 1e-10
    assert float(k_step_distillation(v_fn(0.1), jax.random.key(0), x1, x0=x0, k=1)[0]) > 1e-4


def affine_coupling(path, prediction):
    """Deterministic coupling x1 = A x0 + b (A SPD) and its exact rectified model."""
    a_mat = jnp.array([[1.5, 0.4], [0.4, 0.8]])
    b = jnp.array([0.5, -1.0])

    def posterior(x, t):
        a, s = path.alpha(t)[:, None, None], path.sigma(t)[:, None, None]
        m = a * a_mat[None] + s * jnp.eye(2)[None]
        x0 = jnp.linalg.solve(m, (x - path.alpha(t)[:, None] * b[None])[..., None])[..., 0]
        return x0 @ a_mat.T + b[None], x0

    def model(x, t):
        x1, x0 = posterior(x, t)
        if prediction == "data":
            return x1
        if prediction == "noise":
            return x0
        return path.d_alpha(t)[:, None] * x1 + path.d_sigma(t)[:, None] * x0

    return a_mat, b, model


@pytest.mark.parametrize(
    "path,prediction",
    [(linear_path(), "velocity"), (cosine_path(), "data"), (cosine_path(), "noise"), (vp_path(), "data"), (vp_path(), "velocity")],
    ids=["linear-v", "cosine-x1", "cosine-eps", "vp-x1", "vp-v"],
)
def test_first_order_exact_on_rectified_coupling(path, prediction):
    a_mat, b, model = affine_coupling(path, prediction)
    x0 = jax.random.normal(jax.random.key(6), (16, 2), jnp.float64)
    x1 = x0 @ a_mat.T + b[None]
    t0 = 0.0 if prediction != "noise" else 0.05  # eps -> x1 divides by alpha_0 = 0 on the VP/cosine paths
    start = path.alpha(jnp.asarray(t0)) * x1 + path.sigma(jnp.asarray(t0)) * x0
    one = first_order(model, start, path=path, prediction=prediction, steps=1, t0=t0)
    np.testing.assert_allclose(np.asarray(one), np.asarray(x1), atol=1e-9)
    # x1_hat is constant along the trajectory (the "first-order ODE" property).
    _, preds = first_order(model, start, path=path, prediction=prediction, steps=8, t0=t0, return_predictions=True)
    assert float(jnp.max(jnp.abs(preds - x1[None]))) < 1e-9
    # The Rectified-Diffusion loss is zero at the exact rectified model.
    for huber in (1e-3, None):
        loss, aux = rectified_diffusion(model, jax.random.key(7), x1, x0=x0, path=path, prediction=prediction,
                                        huber_c=huber, time_sampler=lambda k, n: jax.random.uniform(k, (n,), minval=0.05, maxval=0.95))
        assert float(aux["x1_mse"]) < 1e-18


def test_rectified_diffusion_and_reflow_share_minimiser_on_linear_path():
    path = linear_path()
    a_mat, b, data_model = affine_coupling(path, "data")
    v_model = lambda x, t: (data_model(x, t) - x) / (1 - t)[:, None]
    x0 = jax.random.normal(jax.random.key(8), (32, 2), jnp.float64)
    x1 = x0 @ a_mat.T + b[None]
    ts = lambda k, n: jax.random.uniform(k, (n,), minval=0.0, maxval=0.99)
    l_rf, _ = reflow(v_model, jax.random.key(9), x1, x0=x0, time_sampler=ts)
    l_rd, _ = rectified_diffusion(v_model, jax.random.key(9), x1, x0=x0, path=path, prediction="velocity", huber_c=None, time_sampler=ts)
    assert float(l_rf) < 1e-18 and float(l_rd) < 1e-18
    # Gradient with respect to a perturbation of the field vanishes at the minimiser, for both.
    for loss in (lambda e: reflow(lambda x, t: v_model(x, t) + e * jnp.cos(x), jax.random.key(9), x1, x0=x0, time_sampler=ts)[0],
                 lambda e: rectified_diffusion(lambda x, t: data_model(x, t) + e * jnp.cos(x), jax.random.key(9), x1, x0=x0,
                                               path=path, prediction="data", huber_c=None, time_sampler=ts)[0]):
        assert abs(float(jax.grad(loss)(0.0))) < 1e-10


def test_reflow_uses_the_given_pair_noise():
    x1 = jnp.ones((4, 2))
    x0 = jnp.zeros((4, 2))
    loss, _ = reflow(lambda x, t: jnp.ones_like(x), jax.random.key(0), x1, x0=x0)
    assert float(loss) == 0.0  # target x1 - x0 = 1 exactly: no fresh noise is drawn
    with pytest.raises(ValueError, match="x0"):
        reflow(lambda x, t: x, jax.random.key(0), x1, x0=jnp.zeros((3, 2)))


def test_pseudo_huber_limits_and_bounded_gradient():
    c = 1e-3
    small = jnp.array(1e-6)
    np.testing.assert_allclose(float(pseudo_huber(small, c)), 0.5 * 1e-12 / c, rtol=1e-5)
    big = jnp.array(10.0)
    np.testing.assert_allclose(float(pseudo_huber(big, c)), 10.0, rtol=1e-3)
    g = jax.vmap(jax.grad(lambda r: pseudo_huber(r, c)))(jnp.linspace(-100, 100, 1001))
    assert float(jnp.max(jnp.abs(g))) <= 1.0


def test_rectify_loop_regenerates_pairs_with_current_model():
    calls = []

    def train(r, x0, x1):
        calls.append((x0, x1))
        shift = float(r + 1)
        return lambda x, t: jnp.full_like(x, shift)

    models = rectify(lambda x, t: jnp.zeros_like(x), train, jax.random.key(0), rounds=2, num_pairs=8,
                     sample_source=normal_source(2), steps=4, batch_size=8)
    assert len(models) == 3
    np.testing.assert_allclose(np.asarray(calls[0][1]), np.asarray(calls[0][0]))          # v = 0: x1 = x0
    np.testing.assert_allclose(np.asarray(calls[1][1]), np.asarray(calls[1][0]) + 1.0)    # v = 1: x1 = x0 + 1
