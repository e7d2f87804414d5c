"""The experiment runner and the paper-set runner: config validation, results, report counts, resume."""

import json

import pytest

from experiments import paperset
from experiments import run as runner


def test_discovery_lists_foundation_experiments():
    found = runner.discover()
    assert "cfm" in found and found["ot-cfm"] == "ot_cfm"


def test_unknown_preset_and_experiment_fail_with_suggestions():
    with pytest.raises(ValueError, match="unknown preset"):
        runner.load_config("cfm", "laptop")
    with pytest.raises(ValueError, match="Did you mean ot-cfm"):
        runner.resolve("ot-cmf")


def test_set_overrides_are_validated():
    cfg = runner.load_config("ot-cfm", "smoke", ["steps=7", "learning_rate=0.01", "seeds=(3, 4)"])
    assert cfg.steps == 7 and cfg.learning_rate == 0.01 and tuple(cfg.seeds) == (3, 4)
    with pytest.raises(ValueError, match="Did you mean steps"):
        runner.load_config("ot-cfm", "smoke", ["stepz=7"])
    with pytest.raises(ValueError, match="expected a value of type int"):
        runner.load_config("ot-cfm", "smoke", ["steps=fast"])
    with pytest.raises(ValueError, match="key=value"):
        runner.load_config("ot-cfm", "smoke", ["steps"])
    cfg = runner.load_config("cfm", "smoke", ["toy.steps=5"])
    assert cfg.toy.steps == 5
    with pytest.raises(ValueError, match="unknown key"):
        runner.load_config("cfm", "smoke", ["toy.stepz=5"])


def test_cli_reports_bad_set_without_traceback(capsys):
    assert runner.main(["ot-cfm", "--preset", "smoke", "--set", "bogus=1"]) == 2
    assert "unknown key 'bogus'" in capsys.readouterr().err


def test_unwritable_output_dir_is_detected_before_work(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OSError):
        runner.check_output_dir(blocker / "sub")


def _fake_result(path, passed):
    path.mkdir(parents=True, exist_ok=True)
    payload = {"experiment": path.name, "preset": "cpu", "claim": "c", "passed": passed, "metrics": {"m": 1.0}, "seconds": 1.0, "plots": []}
    (path / "results.json").write_text(json.dumps(payload))


def test_paperset_counts_failures_and_resumes(tmp_path):
    _fake_result(tmp_path / "cfm", True)
    _fake_result(tmp_path / "ot-cfm", False)
    # Both have results: nothing is rerun (resume), even with a bad override that would fail.
    results = paperset.collect(["cfm", "ot-cfm"], "cpu", tmp_path, force=False, timeout=60, progress=False, overrides=["bogus=1"])
    assert not (tmp_path / "cfm" / "log.txt").exists()
    report = paperset.write_report(tmp_path, "cpu", results, set(runner.discover()))
    s = report["summary"]
    assert (s["passed"], s["failed"], s["errors"]) == (1, 1, 0)
    assert s["not_implemented"] == s["experiments"] - s["ran"] - s["not_run"]
    # A failing run (here: a bad override makes the subprocess exit with an error) is recorded, not raised.
    results = paperset.collect(["ot-cfm"], "cpu", tmp_path, force=True, timeout=120, progress=False, overrides=["bogus=1"])
    assert results["ot-cfm"]["status"] == "error" and "bogus" in results["ot-cfm"]["log_tail"]
    assert results["ot-cfm"]["cpu_seconds"] > 0  # the child's CPU time (python start-up at least)
    results["cfm"] = json.loads((tmp_path / "cfm" / "results.json").read_text())
    report = paperset.write_report(tmp_path, "cpu", results, set(runner.discover()))
    assert (report["summary"]["passed"], report["summary"]["errors"]) == (1, 1)
    text = (tmp_path / "report.md").read_text()
    assert "ot-cfm`: error" in text and (tmp_path / "report.html").exists()
    assert "CPU time" in text


def test_report_keeps_earlier_results_and_shows_headline_numbers(tmp_path):
    import json

    from experiments.headlines import failed_criteria, headline_names
    from experiments.paperset import previous_results

    (tmp_path / "ot-cfm").mkdir()
    (tmp_path / "ot-cfm" / "results.json").write_text(json.dumps({"preset": "cpu", "metrics": {"a": 1.0}}))
    (tmp_path / "cfm").mkdir()
    (tmp_path / "cfm" / "results.json").write_text(json.dumps({"preset": "smoke", "metrics": {"a": 1.0}}))
    assert set(previous_results(tmp_path, ["ot-cfm", "cfm", "wcfm"], "cpu")) == {"ot-cfm"}
    result = {"metrics": {"z": 1.0, "sw2_nfe1_icfm_B256": 2.0, "sw2_nfe1_wcfm_eps1_B256": 1.0},
              "criteria": {"beats baseline": False, "finite": True}}
    assert headline_names("wcfm", result) == ["sw2_nfe1_wcfm_eps1_B256", "sw2_nfe1_icfm_B256"]
    assert headline_names("unknown", result) == ["z", "sw2_nfe1_icfm_B256", "sw2_nfe1_wcfm_eps1_B256"]
    assert headline_names("wcfm", {**result, "headline": ["z"]}) == ["z"]
    assert failed_criteria(result) == ["beats baseline"]


def test_readme_table_keeps_measured_rows_the_report_lacks(tmp_path):
    from experiments import readme_table

    readme = tmp_path / "README.md"
    measured = ("| W-CFM: Weighted Conditional Flow Matching | [x](y) | objectives | `wcfm` | "
                "claim reproduced (cpu) | sw2 0.3 |")
    readme.write_text(f"intro\n{readme_table.START}\n{measured}\n{readme_table.END}\nrest\n")
    report = {"preset": "cpu", "results": {"ot-cfm": {"claim": "c", "passed": True, "metrics": {"m": 1.0}}}}
    readme_table.update_readme(readme, report)
    text = readme.read_text()
    assert measured in text                                          # kept: not in this report
    assert "`ot-cfm` | claim reproduced (cpu)" in text               # new result
    assert "`cfm` | implemented |" in text                           # nothing earlier, nothing now
    readme_table.update_readme(readme, report, keep_missing=False)
    assert measured not in readme.read_text()


def test_smoke_runs_compile_fast_only_on_cpu_only_installs(monkeypatch):
    from experiments import run as runner

    flag = runner.FAST_COMPILE_FLAG
    monkeypatch.setattr(runner, "accelerator_plugin_installed", lambda: False)
    assert runner.smoke_xla_flags("smoke", {}) == flag
    assert runner.smoke_xla_flags("smoke", {"XLA_FLAGS": "--xla_dump_to=/tmp/d"}) == f"--xla_dump_to=/tmp/d {flag}"
    assert runner.smoke_xla_flags("smoke", {"XLA_FLAGS": "--xla_backend_optimization_level=3"}) is None
    for preset in ("cpu", "gpu", "tpu"):
        assert runner.smoke_xla_flags(preset, {}) is None
    monkeypatch.setattr(runner, "accelerator_plugin_installed", lambda: True)
    assert runner.smoke_xla_flags("smoke", {}) is None  # the flag would reach the GPU/TPU compiler
    assert runner.smoke_xla_flags("smoke", {"JAX_PLATFORMS": "cpu"}) == flag


def test_compile_times_name_the_training_dispatch_and_reach_the_report(tmp_path):
    import jax
    import jax.numpy as jnp

    from experiments import run as runner
    from flowjax import train

    with runner.CompileTimes() as compiles:
        jax.jit(lambda x: x * 2.0)(jnp.ones(3))
        train.fit(lambda p, k, b: (jnp.sum((b - p) ** 2), {}), jnp.zeros(()), batch_fn=lambda s: jnp.ones(()),
                  steps=2, key=jax.random.key(0))
    jax.jit(lambda x: x - 1.0)(jnp.ones(3))  # after the listener is gone: not recorded
    summary = compiles.summary()
    assert summary["programs"] >= 2 and summary["train_dispatch_programs"] >= 1
    assert 0 < summary["train_dispatch_max_s"] <= summary["max_s"] and summary["total_s"] >= summary["max_s"]
    assert summary["slowest"][0][1] == summary["max_s"]
    line = paperset.slowest_compiles({"a": {"compile": summary}, "b": {"compile": {**summary, "max_s": 9.0,
                                                                                      "slowest": [["jit(big)", 9.0]]}}})
    assert line.startswith("Slowest XLA compile of one program: 9.0 s (`b`, jit(big))")
    assert "training dispatch" in line
    assert paperset.slowest_compiles({"a": {}}) == ""
