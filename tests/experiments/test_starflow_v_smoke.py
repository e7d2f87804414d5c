import json
import math
from pathlib import Path

import pytest

from experiments.run import run_experiment


def test_starflow_v_smoke(tmp_path):
    res = run_experiment("starflow-v", "smoke", out_dir=tmp_path)
    assert {"claim", "passed", "metrics", "plots", "notes"} <= set(res)
    for k in ("test_nll_per_dim_nats", "roundtrip_max_abs_err", "logdet_vs_jacfwd_max_abs_err", "jacobi_speedup_sequential_steps",
              "video_init_iter_ratio", "mse_none", "mse_self_denoise", "mse_fsm", "fsm_frame1_change"):
        assert math.isfinite(res["metrics"][k]), k
    # exactness and causality hold at any training length
    assert res["metrics"]["roundtrip_max_abs_err"] < 1e-4
    assert res["metrics"]["jacobi_noearlystop_max_abs_err"] < 1e-4
    assert res["metrics"]["fsm_frame1_change"] == 0.0
    for p in res["plots"]:
        assert (Path(tmp_path) / p).exists()
    assert json.loads((Path(tmp_path) / "results.json").read_text())["metrics"]


@pytest.mark.slow
def test_starflow_v_cpu_claim(tmp_path):
    res = run_experiment("starflow-v", "cpu", out_dir=tmp_path)
    assert res["passed"], (res["metrics"], res.get("checks"))
