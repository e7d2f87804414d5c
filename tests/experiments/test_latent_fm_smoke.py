"""latent-fm experiment: smoke preset in the default suite, the cpu-preset claim in the slow suite."""

import math

import pytest

from experiments.run import run_experiment


def _check(result, out):
    for key in ("claim", "passed", "metrics", "plots"):
        assert key in result
    assert all(math.isfinite(v) for v in result["metrics"].values())
    for plot in result["plots"]:
        assert (out / plot).exists()


def test_latent_fm_smoke(tmp_path):
    result = run_experiment("latent-fm", "smoke", out_dir=tmp_path)
    _check(result, tmp_path)
    assert abs(result["metrics"]["latent_std_mean"] - 1.0) < 1e-3


@pytest.mark.slow
def test_latent_fm_cpu_claim(tmp_path):
    result = run_experiment("latent-fm", "cpu", out_dir=tmp_path)
    _check(result, tmp_path)
    assert result["passed"], result["metrics"]
