"""The benchmark's summary arithmetic (the timing itself is not a test)."""

from benchmarks.attention import FLOP_FACTOR, summarize


def test_summary_ratios_and_targets():
    rows = []
    for impl, fwd, jvp in (("pallas", 2.0, 3.0), ("cudnn", 1.9, None), ("xla", 4.0, 12.0)):
        rows.append(dict(seq=1024, head_dim=64, causal=False, impl=impl, mode="fwd", ms=fwd))
        if jvp is not None:
            rows.append(dict(seq=1024, head_dim=64, causal=False, impl=impl, mode="fwd_jvp", ms=jvp))
    rows.append(dict(seq=1024, head_dim=64, causal=False, impl="cudnn", mode="fwd_jvp", error="no JVP"))
    s = summarize(rows)
    assert abs(s["fwd_vs_cudnn_min"] - 1.9 / 2.0) < 1e-12
    assert s["target_fwd_ge_0.9x_cudnn"] is True
    assert abs(s["fwd_jvp_vs_xla_min"] - 4.0) < 1e-12
    assert s["target_fwd_jvp_ge_3x_xla"] is True
    assert FLOP_FACTOR == {"fwd": 1.0, "fwd_bwd": 3.5, "fwd_jvp": 3.0}
