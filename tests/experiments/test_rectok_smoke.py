"""rectok experiment: smoke preset through the runner API; the cpu-preset claim in the slow suite."""

import math

import pytest

from experiments.run import run_experiment


def _check(result, out):
    for key in ("claim", "passed", "metrics", "plots", "notes"):
        assert key in result
    assert all(math.isfinite(v) for v in result["metrics"].values())
    for plot in result["plots"]:
        assert (out / plot).exists()


def test_rectok_smoke(tmp_path):
    result = run_experiment("rectok", "smoke", out_dir=tmp_path)
    _check(result, tmp_path)
    for v in ("a_ae", "b_clean_align", "c_fsd", "d_fsd_rad"):
        assert 0.0 <= result["metrics"][f"probe_{v}_c16_tau1"] <= 1.0
    assert (tmp_path / "results.json").exists()


@pytest.mark.slow
def test_rectok_cpu_claim(tmp_path):
    result = run_experiment("rectok", "cpu", out_dir=tmp_path)
    _check(result, tmp_path)
    assert result["passed"], (result["checks"], result["metrics"])
