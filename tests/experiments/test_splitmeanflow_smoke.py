"""splitmeanflow experiment: smoke preset through the runner; cpu preset claim in the slow suite."""

import math

import pytest

from experiments.run import run_experiment


def _check(results, out_dir):
    assert {"claim", "passed", "metrics", "plots", "notes"} <= set(results)
    assert results["metrics"] and all(math.isfinite(float(v)) for v in results["metrics"].values())
    for plot in results["plots"]:
        assert (out_dir / plot).exists()


def test_splitmeanflow_smoke(tmp_path):
    results = run_experiment("splitmeanflow", "smoke", out_dir=tmp_path)
    _check(results, tmp_path)


@pytest.mark.slow
def test_splitmeanflow_cpu_claim(tmp_path):
    results = run_experiment("splitmeanflow", "cpu", out_dir=tmp_path)
    _check(results, tmp_path)
    assert results["passed"], results.get("criteria")
