import json
import math

import pytest

from experiments.run import run_experiment

SLUG = "conditional-source"


def _check(res, out):
    for key in ("claim", "passed", "metrics", "plots", "notes"):
        assert key in res
    assert res["metrics"] and all(math.isfinite(v) for v in res["metrics"].values())
    assert res["plots"]
    for p in res["plots"]:
        assert (out / p).exists()
    assert json.loads((out / "results.json").read_text())["experiment"] == SLUG


def test_smoke(tmp_path):
    res = run_experiment(SLUG, "smoke", out_dir=tmp_path)
    _check(res, tmp_path)


@pytest.mark.slow
def test_cpu_claim(tmp_path):
    res = run_experiment(SLUG, "cpu", out_dir=tmp_path)
    _check(res, tmp_path)
    assert res["passed"], res["metrics"]
