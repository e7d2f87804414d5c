"""``python -m benchmarks.run``: the runner's JSON, the shared arithmetic, the memory probe.

The timings themselves are not tested (they depend on the machine); the quick run of the cheap
``machine`` benchmark checks the plumbing end to end. PyTorch peers are used when installed and
reported as skipped otherwise.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import _common as C
from benchmarks import run as bench_run
from flowjax.nets import MLP, init_params


def test_quick_machine_run_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    rc = bench_run.main(["--quick", "--only", "machine", "--iters", "2", "--out", str(out)])
    assert rc == 0
    res = json.loads(out.read_text())
    m = res["benchmarks"]["machine"]
    assert set(res["benchmarks"]) == {"machine"}
    rows = [r for r in m["cases"] if "median_ms" in r]
    assert rows and all(r["median_ms"] > 0 and r["compile_s"] >= 0 and r["peak_rss_mb"] >= 0 for r in rows)
    # GFLOP/s is 2 n^3 / time, and the peak is the best row.
    for r in rows:
        n = int(r["config"].split("=")[1])
        assert np.isclose(r["gflops"], 2 * n**3 / 1e9 / (r["median_ms"] / 1e3))
    assert np.isclose(m["peak_gflops"], max(r["gflops"] for r in rows))
    assert res["summary"]["peak_matmul_gflops"] == m["peak_gflops"]
    try:
        import torch  # noqa: F401
    except Exception:
        assert any("skipped" in r for r in m["cases"])


def test_no_peers_flag_skips_torch(tmp_path):
    from benchmarks import machine

    ctx = C.Context(quick=True, warmup=0, iters=1, peers=False, log=lambda s: None)
    cases = machine.run(ctx)["cases"]
    assert [r["impl"] for r in cases if "skipped" in r] == ["torch"]


def test_unknown_benchmark_is_rejected():
    import pytest

    with pytest.raises(ValueError, match="unknown benchmark"):
        bench_run.run_benchmarks(["nope"], C.Context(log=lambda s: None))


def test_ratios_are_peer_over_ours_within_config():
    cases = [
        {"impl": "flowjax", "config": "a", "median_ms": 2.0},
        {"impl": "peer", "config": "a", "median_ms": 5.0},
        {"impl": "peer", "config": "b", "median_ms": 1.0},
        {"impl": "other", "config": "a", "skipped": "not installed"},
    ]
    assert C.ratios(cases, "flowjax", "a") == {"peer": 2.5}
    assert C.ratios(cases, "missing") == {}


def test_mlp_flop_model_matches_the_network():
    """The analytic FLOP count uses the layer shapes of flowjax.nets.MLP: same parameter count."""
    for d, hidden, depth, tdim in ((2, 256, 3, 64), (64, 32, 2, 16)):
        shapes = jax.eval_shape(lambda: init_params(MLP(hidden=hidden, depth=depth, time_dim=tdim), jax.random.key(0), jnp.zeros((2, d))))
        dims = C.mlp_dims(d, hidden, depth, tdim)
        assert sum(i * o + o for i, o in dims) == sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes))
        assert np.isclose(C.mlp_step_gflop(10, dims, backward=False), 2 * 10 * sum(i * o for i, o in dims) / 1e9)
        assert np.isclose(C.mlp_step_gflop(10, dims, backward=True), 3 * C.mlp_step_gflop(10, dims, backward=False))


def test_peak_rss_sees_a_large_allocation():
    with C.measure_peak_rss() as mem:
        a = np.ones(64 * 2**20 // 8)  # 64 MiB, touched
        a += 1.0
        del a
    assert mem.mb >= 48.0, mem.mb


def test_time_calls_caps_slow_cases_and_divides_per_call():
    import time as _time

    calls = []

    def slow():
        calls.append(1)
        _time.sleep(0.05)

    ctx = C.Context(warmup=2, iters=10, max_case_s=0.12, log=lambda s: None)
    row = C.time_calls(slow, C.no_sync, ctx, per_call=2)
    # first call 0.05 s x 12 calls > 0.12 s: one timed call, no warm-up
    assert (row["iters"], row["warmup"], len(calls)) == (1, 0, 2)
    assert 0.02 <= row["median_ms"] / 1e3 <= 0.2  # 0.05 s / per_call 2, with scheduling slack
    row = C.time_calls(lambda: None, C.no_sync, C.Context(warmup=1, iters=3, log=lambda s: None))
    assert (row["iters"], row["warmup"]) == (3, 1)


def test_aot_compile_time_is_recorded_as_the_compile_time():
    """A jitted call after lower().compile() reuses the executable: its first call is not the compile."""
    compiles = []

    def listener(event, duration, **kw):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(duration)

    fn = jax.jit(lambda x: jnp.tanh(x) @ x.T)
    x = jnp.ones((16, 16))
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        compiled, seconds = C.aot_compile(fn, x)
        n = len(compiles)
        row = C.time_calls(lambda: fn(x), C.jax_sync, C.Context(warmup=0, iters=1, log=lambda s: None))
        assert len(compiles) == n  # the timed first call compiled nothing
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert seconds >= compiles[-1] > 0
    out = C.with_aot_compile(row, seconds)
    assert out["compile_s"] == seconds and out["first_call_s"] == row["compile_s"]
    np.testing.assert_allclose(np.asarray(compiled(x)), np.asarray(fn(x)))
