"""Smoke runs of the structured-generation experiments (default suite) and their cpu claims (slow)."""

import math

import pytest

from experiments.run import run_experiment

SLUGS = ["fmpose3d", "scoop", "pufm", "action-fm"]


def _check_results(result, out):
    for key in ("experiment", "preset", "claim", "passed", "metrics", "seconds", "versions"):
        assert key in result
    assert result["metrics"] and all(math.isfinite(v) for v in result["metrics"].values())
    assert (out / "results.json").exists()
    for plot in result["plots"]:
        assert (out / plot).exists()


@pytest.mark.parametrize("slug", SLUGS)
def test_smoke(slug, tmp_path):
    result = run_experiment(slug, "smoke", out_dir=tmp_path)
    _check_results(result, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("slug", SLUGS)
def test_cpu_claim(slug, tmp_path):
    result = run_experiment(slug, "cpu", out_dir=tmp_path)
    _check_results(result, tmp_path)
    assert result["passed"], result["metrics"]
