"""repa-tora experiment: smoke preset in the default suite, the cpu-preset claim in the slow suite."""

import math

import pytest

from experiments.run import run_experiment


def _check(result, out):
    for key in ("claim", "passed", "metrics", "plots"):
        assert key in result
    assert all(math.isfinite(v) for v in result["metrics"].values())
    for plot in result["plots"]:
        assert (out / plot).exists()


def test_repa_tora_smoke(tmp_path):
    result = run_experiment("repa-tora", "smoke", out_dir=tmp_path)
    _check(result, tmp_path)
    assert set(result["curves"]) == {"none", "cosine", "cka"}


@pytest.mark.slow
def test_repa_tora_cpu_claim(tmp_path):
    result = run_experiment("repa-tora", "cpu", out_dir=tmp_path)
    _check(result, tmp_path)
    assert result["passed"], result["metrics"]
