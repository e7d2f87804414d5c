"""Couplings: valid permutations, optimality, uniform plan marginals, labels, per-shard use."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from flowjax import couplings


def _cost(x0, x1, i0, i1):
    return float(jnp.sum((x0[i0] - x1[i1]) ** 2))


def test_exact_ot_is_optimal_by_brute_force():
    x0 = jax.random.normal(jax.random.key(0), (6, 2))
    x1 = jax.random.normal(jax.random.key(1), (6, 2)) + 1.0
    i0, i1 = couplings.ot_exact()(jax.random.key(2), x0, x1)
    assert sorted(np.asarray(i0).tolist()) == list(range(6))
    best = min(_cost(x0, x1, jnp.array(p), jnp.arange(6)) for p in itertools.permutations(range(6)))
    np.testing.assert_allclose(_cost(x0, x1, i0, i1), best, rtol=1e-5)
    indep = couplings.independent()(jax.random.key(2), x0, x1)
    assert _cost(x0, x1, *indep) >= best


def test_sinkhorn_plan_has_uniform_marginals_and_approaches_exact():
    x0 = jax.random.normal(jax.random.key(3), (32, 2))
    x1 = jax.random.normal(jax.random.key(4), (32, 2)) * 0.5 + 2.0
    plan = couplings.sinkhorn_plan(x0, x1, epsilon=0.01)
    np.testing.assert_allclose(plan.sum(0), np.full(32, 1 / 32), atol=1e-4)
    np.testing.assert_allclose(plan.sum(1), np.full(32, 1 / 32), atol=1e-4)
    i0, _ = couplings.ot_sinkhorn(0.001, sample=False)(jax.random.key(5), x0, x1)
    j0, _ = couplings.ot_exact()(jax.random.key(5), x0, x1)
    assert _cost(x0, x1, i0, jnp.arange(32)) <= 1.02 * _cost(x0, x1, j0, jnp.arange(32))


def test_sampled_plan_indices_are_valid():
    x0 = jax.random.normal(jax.random.key(6), (16, 3))
    x1 = jax.random.normal(jax.random.key(7), (16, 3))
    i0, i1 = jax.jit(couplings.ot_sinkhorn(0.1))(jax.random.key(8), x0, x1)
    assert i0.shape == (16,) and bool(jnp.all((i0 >= 0) & (i0 < 16)))
    np.testing.assert_array_equal(i1, np.arange(16))


def test_class_conditional_pairs_within_labels():
    x0 = jax.random.normal(jax.random.key(9), (12, 2))
    x1 = jax.random.normal(jax.random.key(10), (12, 2))
    labels = jnp.arange(12) % 3
    i0, i1 = couplings.class_conditional()(jax.random.key(11), x0, x1, labels=labels)
    np.testing.assert_array_equal(labels[i0], labels[i1])
    with pytest.raises(ValueError, match="labels"):
        couplings.class_conditional()(jax.random.key(11), x0, x1)


def test_ot_per_data_shard():
    """Under data parallelism each shard pairs its own samples (a local permutation per shard)."""
    assert len(jax.devices()) == 8
    mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Explicit,))
    x0 = jax.random.normal(jax.random.key(12), (64, 2))
    x1 = jax.random.normal(jax.random.key(13), (64, 2)) + 2.0
    sharding = jax.sharding.NamedSharding(mesh, P("data"))
    x0s, x1s = jax.device_put(x0, sharding), jax.device_put(x1, sharding)
    couple = couplings.ot_exact()
    i0, i1 = map(np.asarray, jax.jit(couplings.per_shard(couple, mesh))(jax.random.key(0), x0s, x1s))
    np.testing.assert_array_equal(i1, np.arange(64))
    for s in range(8):
        sl = slice(8 * s, 8 * s + 8)
        local0, _ = couple(jax.random.key(0), x0[sl], x1[sl])
        np.testing.assert_array_equal(i0[sl], np.asarray(local0) + 8 * s)


@pytest.mark.parametrize("make", [couplings.ot_exact, lambda: couplings.ot_sinkhorn(0.1, sample=True)])
def test_shard_local_equals_per_shard(make):
    """The mesh-free blockwise pairing and the shard_map one are the same plan (same keys per block)."""
    mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Explicit,))
    x0 = jax.random.normal(jax.random.key(14), (64, 2))
    x1 = jax.random.normal(jax.random.key(15), (64, 2)) + 1.0
    sharding = jax.sharding.NamedSharding(mesh, P("data"))
    x0s, x1s = jax.device_put(x0, sharding), jax.device_put(x1, sharding)
    a = jax.jit(couplings.per_shard(make(), mesh))(jax.random.key(3), x0s, x1s)
    b = jax.jit(couplings.shard_local(make(), 8))(jax.random.key(3), x0, x1)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="same shape"):
        couplings.ot_exact()(jax.random.key(0), jnp.ones((4, 2)), jnp.ones((5, 2)))
    with pytest.raises(ValueError, match="epsilon"):
        couplings.ot_sinkhorn(0.0)


# --- ot_exact solvers: scipy (host callback) and ott (on device) --------------------------------


def _brute_force(x0, x1):
    n = x0.shape[0]
    return min(_cost(x0, x1, jnp.array(p), jnp.arange(n)) for p in itertools.permutations(range(n)))


def _needs(solver):
    if solver == "pot":
        pytest.importorskip("ot", reason="POT (optional) is not installed")


@pytest.mark.parametrize("n", [1, 2, 5, 6])
@pytest.mark.parametrize("solver", ["scipy", "ott", "auto", "pot"])
def test_ot_exact_solvers_match_brute_force(solver, n):
    _needs(solver)
    x0 = jax.random.normal(jax.random.key(20 + n), (n, 3))
    x1 = jax.random.normal(jax.random.key(40 + n), (n, 3)) * 0.7 + 0.5
    i0, i1 = couplings.ot_exact(solver=solver)(jax.random.key(0), x0, x1)
    assert sorted(np.asarray(i0).tolist()) == list(range(n))
    np.testing.assert_array_equal(i1, np.arange(n))
    np.testing.assert_allclose(_cost(x0, x1, i0, i1), _brute_force(x0, x1), rtol=1e-6)


def test_ot_exact_auto_is_pot_else_scipy_on_cpu(monkeypatch):
    assert jax.default_backend() == "cpu"
    assert couplings._resolve_solver("auto") == ("pot" if couplings._pot_available() else "scipy")
    monkeypatch.setattr(couplings, "_pot_available", lambda: False)
    assert couplings._resolve_solver("auto") == "scipy"
    assert couplings._resolve_solver("ott") == "ott"


@pytest.mark.parametrize("solver", ["scipy", "pot"])
def test_ot_exact_host_solvers_and_ott_give_the_same_plan_at_larger_n(solver):
    _needs(solver)
    x0 = jax.random.normal(jax.random.key(50), (96, 2))
    x1 = jax.random.normal(jax.random.key(51), (96, 2)) + 1.0
    a0, a1 = jax.jit(couplings.ot_exact(solver=solver))(jax.random.key(0), x0, x1)
    b0, b1 = jax.jit(couplings.ot_exact(solver="ott"))(jax.random.key(0), x0, x1)
    assert sorted(np.asarray(a0).tolist()) == list(range(96))
    assert a0.dtype == b0.dtype == a1.dtype
    np.testing.assert_allclose(_cost(x0, x1, a0, a1), _cost(x0, x1, b0, b1), rtol=1e-6)
    # continuous random data has no ties, so the optimal permutation is unique
    np.testing.assert_array_equal(np.asarray(a0), np.asarray(b0))


def test_ot_exact_scipy_under_vmap_and_jit():
    """vmap sends the whole stack of cost matrices to the host in one callback; each is solved alone."""
    x0 = jax.random.normal(jax.random.key(52), (4, 6, 2))
    x1 = jax.random.normal(jax.random.key(53), (4, 6, 2)) - 0.5
    keys = jax.random.split(jax.random.key(54), 4)
    couple = couplings.ot_exact(solver="scipy")
    i0, i1 = jax.jit(jax.vmap(couple))(keys, x0, x1)
    assert i0.shape == i1.shape == (4, 6)
    for b in range(4):
        assert sorted(np.asarray(i0[b]).tolist()) == list(range(6))
        np.testing.assert_allclose(_cost(x0[b], x1[b], i0[b], i1[b]), _brute_force(x0[b], x1[b]), rtol=1e-6)
    # nested vmap (two leading axes on the host)
    j0, _ = jax.vmap(jax.vmap(couple))(keys.reshape(2, 2), x0.reshape(2, 2, 6, 2), x1.reshape(2, 2, 6, 2))
    np.testing.assert_array_equal(np.asarray(j0).reshape(4, 6), np.asarray(i0))


@pytest.mark.parametrize("solver", ["scipy", "ott", "pot"])
def test_ot_exact_labels_pairs_within_class_and_is_optimal_per_class(solver):
    _needs(solver)
    x0 = jax.random.normal(jax.random.key(55), (12, 2))
    x1 = jax.random.normal(jax.random.key(56), (12, 2)) + 0.3
    labels = jnp.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 1, 0, 2])
    i0, i1 = jax.jit(couplings.class_conditional(couplings.ot_exact(solver=solver)))(
        jax.random.key(0), x0, x1, labels=labels)
    np.testing.assert_array_equal(labels[i0], labels[i1])
    total = 0.0
    for c in range(3):
        idx = np.flatnonzero(np.asarray(labels) == c)
        total += _brute_force(x0[idx], x1[idx])
    np.testing.assert_allclose(_cost(x0, x1, i0, i1), total, rtol=1e-6)


@pytest.mark.parametrize("solver", ["scipy", "pot"])
def test_ot_exact_host_nonfinite_cost_returns_identity_not_crash(solver):
    _needs(solver)
    x0 = jnp.ones((4, 2)).at[1, 0].set(jnp.nan)
    i0, _ = jax.jit(couplings.ot_exact(solver=solver))(jax.random.key(0), x0, jnp.zeros((4, 2)))
    np.testing.assert_array_equal(np.asarray(i0), np.arange(4))


def test_ot_exact_scipy_per_shard_matches_unsharded_blocks():
    mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Explicit,))
    x0 = jax.random.normal(jax.random.key(57), (64, 2))
    x1 = jax.random.normal(jax.random.key(58), (64, 2)) + 2.0
    sharding = jax.sharding.NamedSharding(mesh, P("data"))
    x0s, x1s = jax.device_put(x0, sharding), jax.device_put(x1, sharding)
    a = jax.jit(couplings.per_shard(couplings.ot_exact(solver="scipy"), mesh))(jax.random.key(0), x0s, x1s)
    b = jax.jit(couplings.shard_local(couplings.ot_exact(solver="ott"), 8))(jax.random.key(0), x0, x1)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


def test_ot_exact_bad_inputs():
    with pytest.raises(ValueError, match="solver"):
        couplings.ot_exact(solver="hungarian")
    with pytest.raises(TypeError):
        couplings.ot_exact("scipy")  # keyword-only
    couple = couplings.ot_exact(solver="scipy")
    with pytest.raises(ValueError, match="same shape"):
        couple(jax.random.key(0), jnp.ones((4, 2)), jnp.ones((4, 3)))
    with pytest.raises(ValueError, match="labels"):
        couple(jax.random.key(0), jnp.ones((4, 2)), jnp.ones((4, 2)), labels=jnp.zeros((3,), jnp.int32))
    assert couplings.coupling_by_name("ot", solver="ott") is not None


def test_ot_exact_pot_without_pot_installed_says_so(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ot", None)  # makes `import ot` raise ImportError
    with pytest.raises(ImportError, match="pip install pot"):
        couplings.ot_exact(solver="pot")


def test_host_assign_pot_falls_back_to_scipy_when_the_simplex_stops_early(monkeypatch):
    ot = pytest.importorskip("ot")
    rng = np.random.default_rng(0)
    cost = rng.random((2, 5, 5))
    want = couplings._host_assign(cost, dtype=np.int64, method="scipy")
    # a non-permutation plan, and a permutation the simplex did not prove optimal (result_code 3 =
    # iteration cap reached): both must be replaced by scipy's optimum
    for fake in (lambda a, b, m, **kw: (np.ones_like(m), {"result_code": 1}),
                 lambda a, b, m, **kw: (np.eye(m.shape[0]), {"result_code": 3})):
        monkeypatch.setattr(ot, "emd", fake)
        got = couplings._host_assign(cost, dtype=np.int64, method="pot")
        np.testing.assert_array_equal(got, want)
    assert not np.array_equal(want[0], np.arange(5)) or not np.array_equal(want[1], np.arange(5))


# ---- exact OT solved on the host, in the data pipeline (ot_exact_host, ot_paired_batch_fn) ----


@pytest.mark.parametrize("n", [1, 2, 5, 6])
@pytest.mark.parametrize("solver", ["scipy", "pot", "auto"])
def test_ot_exact_host_matches_brute_force(solver, n):
    _needs(solver)
    x0 = np.asarray(jax.random.normal(jax.random.key(60 + n), (n, 2, 2)))
    x1 = np.asarray(jax.random.normal(jax.random.key(70 + n), (n, 2, 2))) * 0.5 - 1.0
    i0 = couplings.ot_exact_host(x0, x1, solver=solver)
    assert sorted(i0.tolist()) == list(range(n))
    np.testing.assert_allclose(_cost(x0, x1, i0, np.arange(n)), _brute_force(x0, x1), rtol=1e-6)


def test_ot_exact_host_equals_the_in_step_solvers_and_pairs_within_labels():
    x0 = jax.random.normal(jax.random.key(80), (96, 3))
    x1 = jax.random.normal(jax.random.key(81), (96, 3)) + 1.0
    ref, _ = jax.jit(couplings.ot_exact(solver="ott"))(jax.random.key(0), x0, x1)
    # continuous random data: the optimal permutation is unique
    np.testing.assert_array_equal(couplings.ot_exact_host(x0, x1, solver="scipy"), np.asarray(ref))
    labels = np.arange(96) % 3
    i0 = couplings.ot_exact_host(x0, x1, labels, solver="scipy")
    ref, _ = couplings.ot_exact(solver="scipy")(jax.random.key(0), x0, x1, labels=jnp.asarray(labels))
    np.testing.assert_array_equal(labels[i0], labels)
    np.testing.assert_array_equal(i0, np.asarray(ref))


def test_ot_exact_host_rejects_bad_input_before_solving(monkeypatch):
    monkeypatch.setattr(couplings, "_host_assign", lambda *a, **k: pytest.fail("solved bad input"))
    x = np.zeros((4, 2))
    with pytest.raises(ValueError, match="same shape"):
        couplings.ot_exact_host(x, np.zeros((5, 2)))
    with pytest.raises(ValueError, match="finite"):
        couplings.ot_exact_host(x, np.full((4, 2), np.inf))
    with pytest.raises(ValueError, match="labels"):
        couplings.ot_exact_host(x, x, np.zeros(3, int))
    with pytest.raises(ValueError, match="labels"):
        couplings.ot_exact_host(x, x, np.zeros(4))
    with pytest.raises(ValueError, match="solver"):
        couplings.ot_exact_host(x, x, solver="ott")
    monkeypatch.setattr(couplings, "_pot_available", lambda: False)
    with pytest.raises(ImportError, match="POT"):
        couplings.ot_exact_host(x, x, solver="pot")


def _data(step):
    rng = np.random.default_rng(step)
    return {"x1": rng.normal(size=(48, 2)).astype(np.float32) * 0.5 + 2.0, "c": rng.integers(0, 3, 48)}


def test_ot_paired_batch_fn_pairs_the_step_source_draw_optimally_and_keeps_the_data():
    from flowjax import keystreams

    paired = couplings.ot_paired_batch_fn(_data, seed=5, solver="scipy")
    for step in (0, 7):
        out, data = paired(step), _data(step)
        assert set(out) == {"x0", "x1", "c"}
        np.testing.assert_array_equal(out["x1"], data["x1"])
        np.testing.assert_array_equal(out["c"], data["c"])
        draw = np.asarray(jax.random.normal(keystreams.source_key(5, step), (48, 2), jnp.float32))
        assert out["x0"].dtype == np.float32
        # x0 is a permutation of the source draw of this step, and the optimal one
        i0 = couplings.ot_exact_host(draw, data["x1"], solver="scipy")
        np.testing.assert_array_equal(out["x0"], draw[i0])
        assert _cost(out["x0"], data["x1"], np.arange(48), np.arange(48)) < _cost(draw, data["x1"], np.arange(48), np.arange(48))
    np.testing.assert_array_equal(paired(3)["x0"], paired(3)["x0"])  # a pure function of the step
    assert not np.array_equal(paired(3)["x0"], paired(4)["x0"])
    # the source stream is not the data stream of the same seed
    assert not np.array_equal(keystreams.source_key(5, 0), keystreams.data_key(5, 0))


def test_ot_paired_batch_fn_labels_custom_source_and_plain_array_batches():
    from flowjax import keystreams

    out = couplings.ot_paired_batch_fn(_data, seed=0, labels="c", solver="scipy")(2)
    draw = np.asarray(jax.random.normal(keystreams.source_key(0, 2), (48, 2), jnp.float32))
    i0 = couplings.ot_exact_host(draw, out["x1"], out["c"], solver="scipy")
    np.testing.assert_array_equal(out["x0"], draw[i0])
    np.testing.assert_array_equal(out["c"][i0], out["c"])  # source slot i carries label c[i]: no pair crosses a class
    assert not np.array_equal(i0, couplings.ot_exact_host(draw, out["x1"], solver="scipy"))
    shifted = couplings.ot_paired_batch_fn(
        lambda s: _data(s)["x1"], seed=0, source=lambda k, shape, dtype: jax.random.normal(k, shape, dtype) + 2.0)
    out = shifted(1)
    assert set(out) == {"x0", "x1"}
    assert abs(float(out["x0"].mean()) - 2.0) < 0.3


def test_ot_paired_batch_fn_bad_arguments():
    with pytest.raises(TypeError, match="callable"):
        couplings.ot_paired_batch_fn(None, seed=0)
    with pytest.raises(TypeError, match="seed"):
        couplings.ot_paired_batch_fn(_data, seed=0.5)
    with pytest.raises(ValueError, match="solver"):
        couplings.ot_paired_batch_fn(_data, seed=0, solver="sinkhorn")
    with pytest.raises(KeyError, match="x1"):
        couplings.ot_paired_batch_fn(lambda s: {"x": np.zeros((4, 2))}, seed=0)(0)
    with pytest.raises(ValueError, match="already has an 'x0'"):
        couplings.ot_paired_batch_fn(lambda s: {"x1": np.zeros((4, 2)), "x0": np.zeros((4, 2))}, seed=0)(0)
    with pytest.raises(KeyError, match="labels"):
        couplings.ot_paired_batch_fn(_data, seed=0, labels="y")(0)
    with pytest.raises(ValueError, match="source"):
        couplings.ot_paired_batch_fn(_data, seed=0, source=lambda k, s, d: np.zeros((3, 2)))(0)


def test_otcfm_training_on_prefetched_pairs_equals_the_serial_pipeline():
    """fit on prefetched OT pairs gives the state that fit on the same pairs made one by one gives."""
    from flowjax import losses, train
    from flowjax.data import prefetch

    w = {"a": jnp.zeros((2, 2)), "b": jnp.zeros(2)}

    def loss_fn(p, key, batch):
        v = lambda x, t: x @ p["a"] + p["b"][None, :] + 0.0 * t[:, None]
        return losses.cfm(v, key, batch["x1"], x0=batch["x0"])

    kw = dict(steps=6, key=jax.random.key(1), log_every=3, learning_rate=0.05, ema_decay=None)
    serial, h_serial = train.fit(loss_fn, w, batch_fn=couplings.ot_paired_batch_fn(_data, seed=2), **kw)
    with prefetch(couplings.ot_paired_batch_fn(_data, seed=2), workers=2) as batches:
        fetched, h_fetched = train.fit(loss_fn, w, batch_fn=batches, **kw)
    assert h_serial == h_fetched
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), serial.params, fetched.params)
