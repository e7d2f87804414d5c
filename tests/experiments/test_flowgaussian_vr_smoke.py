import json
import math
from pathlib import Path

import pytest

from experiments.run import run_experiment


def test_flowgaussian_vr_smoke(tmp_path):
    res = run_experiment("flowgaussian-vr", "smoke", out_dir=tmp_path)
    assert {"claim", "passed", "metrics", "plots", "notes"} <= set(res)
    for run in ("a_rgb", "b_vfr", "c_vfr_fad"):
        for k in ("psnr_test", "psnr_train", "epe_blobs", "gaussians_in_dynamic", "traj_rmse_material_point"):
            assert math.isfinite(res["metrics"][f"{k}_{run}"])
    for p in res["plots"]:
        assert (Path(tmp_path) / p).exists()
    assert json.loads((Path(tmp_path) / "results.json").read_text())["metrics"]


@pytest.mark.slow
def test_flowgaussian_vr_cpu_claim(tmp_path):
    res = run_experiment("flowgaussian-vr", "cpu", out_dir=tmp_path)
    assert res["passed"], res["metrics"]
