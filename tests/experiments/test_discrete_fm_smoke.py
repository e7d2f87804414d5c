import math

import pytest

from experiments.run import run_experiment


def _check(res, tmp_path):
    for key in ("claim", "passed", "metrics", "plots"):
        assert key in res
    assert all(math.isfinite(v) for v in res["metrics"].values())
    for p in res["plots"]:
        assert (tmp_path / p).exists()


def test_discrete_fm_smoke(tmp_path):
    res = run_experiment("discrete-fm", "smoke", out_dir=tmp_path)
    _check(res, tmp_path)


@pytest.mark.slow
def test_discrete_fm_cpu(tmp_path):
    res = run_experiment("discrete-fm", "cpu", out_dir=tmp_path)
    _check(res, tmp_path)
    assert res["passed"]
