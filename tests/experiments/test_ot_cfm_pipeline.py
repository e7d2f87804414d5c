"""ot-cfm's `ot_pairing="pipeline"`: OT pairs made ahead on host threads give an OT-coupled model too."""

import pytest

from experiments.run import run_experiment


def test_pipeline_pairing_runs_and_reports_its_training_time(tmp_path):
    # 400 steps (smoke: 100): at 100 the models have barely moved and the curvatures differ by 5 %;
    # at 400 the OT model's is 0.4x (in the step and in the pipeline alike, measured)
    res = run_experiment(
        "ot-cfm", "smoke", out_dir=tmp_path, overrides=["ot_pairing=pipeline", "pairing_workers=2", "steps=400"])
    m = res["metrics"]
    assert res["config"]["ot_pairing"] == "pipeline"
    assert "ahead on 2 host threads" in res["notes"]
    assert m["train_seconds_ot"] > 0 and m["train_seconds_independent"] > 0
    # the straighter-paths effect of OT pairing survives the move into the data pipeline
    assert m["curvature_ot"] < m["curvature_independent"]


def test_bad_pairing_option_raises_before_training(tmp_path):
    with pytest.raises(ValueError, match="ot_pairing"):
        run_experiment("ot-cfm", "smoke", out_dir=tmp_path, overrides=["ot_pairing=host"])
