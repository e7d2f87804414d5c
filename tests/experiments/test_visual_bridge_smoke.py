"""visual-bridge experiment: smoke preset through the runner API; the cpu-preset claim in the slow suite."""

import math

import pytest

from experiments.run import run_experiment


def _check(result, out):
    for key in ("claim", "passed", "metrics", "plots", "notes"):
        assert key in result
    assert all(math.isfinite(v) for v in result["metrics"].values())
    for plot in result["plots"]:
        assert (out / plot).exists()


def test_visual_bridge_smoke(tmp_path):
    result = run_experiment("visual-bridge", "smoke", out_dir=tmp_path)
    _check(result, tmp_path)
    m = result["metrics"]
    # equal-parameter design of the spec: each specialist / regressor has 1/3 (+-10%) of the universal model's parameters
    assert abs(m["params_ratio_specialist"] * 3 - 1) <= 0.1 and abs(m["params_ratio_regressor"] * 3 - 1) <= 0.1
    assert set(result["checks"]) == {"acc_A_ge_0.95x_specialist", "mse_B_le_1.05x_specialist",
                                     "recall1_C_ge_0.95x_specialist", "acc_A_ge_regressor_minus_1pt"}


@pytest.mark.slow
def test_visual_bridge_cpu_claim(tmp_path):
    result = run_experiment("visual-bridge", "cpu", out_dir=tmp_path)
    _check(result, tmp_path)
    assert result["passed"], (result["checks"], result["metrics"])
