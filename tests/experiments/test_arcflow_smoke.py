import json
import math

import pytest

from experiments.run import run_experiment

SLUG = "arcflow"


def _check(res, tmp_path):
    assert {"claim", "passed", "metrics", "plots"} <= set(res)
    assert res["metrics"] and all(math.isfinite(v) for v in res["metrics"].values())
    for p in res["plots"]:
        assert (tmp_path / p).exists()
    assert json.loads((tmp_path / "results.json").read_text())["experiment"] == SLUG


def test_smoke(tmp_path):
    _check(run_experiment(SLUG, "smoke", out_dir=tmp_path), tmp_path)


@pytest.mark.slow
def test_cpu_claim(tmp_path):
    res = run_experiment(SLUG, "cpu", out_dir=tmp_path)
    _check(res, tmp_path)
    assert res["passed"], res["metrics"]
