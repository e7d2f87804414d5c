import json
import math
from pathlib import Path

import pytest

from experiments.run import run_experiment


def test_reynoldsflow_smoke(tmp_path):
    res = run_experiment("reynoldsflow", "smoke", out_dir=tmp_path)
    assert {"claim", "passed", "metrics", "plots", "notes"} <= set(res)
    for k in ("f1_A_raw", "f1_B_hsv_vo", "f1_C_hsv_vr", "f1_D_reynoldsflow_plus", "vr_ms_per_frame_64"):
        assert math.isfinite(res["metrics"][k])
    for p in res["plots"]:
        assert (Path(tmp_path) / p).exists()
    assert json.loads((Path(tmp_path) / "results.json").read_text())["metrics"]


@pytest.mark.slow
def test_reynoldsflow_cpu_claim(tmp_path):
    res = run_experiment("reynoldsflow", "cpu", out_dir=tmp_path)
    assert res["passed"], res["metrics"]
