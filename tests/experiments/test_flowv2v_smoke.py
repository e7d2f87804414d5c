import json
import math
from pathlib import Path

import pytest

from experiments.run import run_experiment


def test_flowv2v_smoke(tmp_path):
    res = run_experiment("flowv2v", "smoke", out_dir=tmp_path)
    assert {"claim", "passed", "metrics", "plots", "notes"} <= set(res)
    for run in ("a_source_flow", "b_imp_pseudo_flow", "c_mask_control", "d_oracle_flow"):
        assert math.isfinite(res["metrics"][f"psnr_{run}"]) and math.isfinite(res["metrics"][f"ewarp_{run}"])
    for k in ("iou_b_imp_pseudo_flow", "static_clip_psnr", "ewarp_target_video"):
        assert math.isfinite(res["metrics"][k])
    for p in res["plots"]:
        assert (Path(tmp_path) / p).exists()
    assert json.loads((Path(tmp_path) / "results.json").read_text())["metrics"]


@pytest.mark.slow
def test_flowv2v_cpu_claim(tmp_path):
    res = run_experiment("flowv2v", "cpu", out_dir=tmp_path)
    assert res["passed"], res["metrics"]
