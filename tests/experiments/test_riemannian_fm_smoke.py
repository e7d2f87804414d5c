import math

import pytest

from experiments.run import run_experiment


def _check(res, tmp_path):
    for key in ("claim", "passed", "metrics", "plots"):
        assert key in res
    assert all(math.isfinite(v) for v in res["metrics"].values())
    for p in res["plots"]:
        assert (tmp_path / p).exists()
    # the exp-map sampler keeps every sample on the sphere at any preset
    assert res["metrics"]["max_norm_error"] < 1e-5


def test_riemannian_fm_smoke(tmp_path):
    res = run_experiment("riemannian-fm", "smoke", out_dir=tmp_path)
    _check(res, tmp_path)


@pytest.mark.slow
def test_riemannian_fm_cpu(tmp_path):
    res = run_experiment("riemannian-fm", "cpu", out_dir=tmp_path)
    _check(res, tmp_path)
    assert res["passed"]
