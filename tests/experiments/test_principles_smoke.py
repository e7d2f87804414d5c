"""principles experiment: smoke preset in the default suite, the cpu-preset claim in the slow suite."""

import math

import pytest

from experiments.run import run_experiment


def _check(result, out):
    for key in ("experiment", "preset", "claim", "passed", "metrics", "seconds", "versions"):
        assert key in result
    assert result["metrics"] and all(math.isfinite(v) for v in result["metrics"].values())
    assert (out / "results.json").exists()
    assert result["plots"] and all((out / p).exists() for p in result["plots"])
    assert "error_vs_nfe" in result["tables"]


def test_principles_smoke(tmp_path):
    result = run_experiment("principles", "smoke", out_dir=tmp_path)
    _check(result, tmp_path)
    # the smoke run already measures the first-order solver's order on the exact flow
    assert -1.5 < result["metrics"]["order_linear_euler"] < -0.7


@pytest.mark.slow
def test_principles_cpu_claim(tmp_path):
    result = run_experiment("principles", "cpu", out_dir=tmp_path)
    _check(result, tmp_path)
    assert result["passed"], result["metrics"]
