"""Every experiment, through the runner: the smoke preset runs end to end and writes a well-formed
result; the cpu preset checks the paper's claim (slow; a claim that does not reproduce fails here
and is reported with its numbers in the README table).

Only ``ot-cfm``'s smoke run belongs to the default (CI) run, as the end-to-end check of the runner: the
other smoke presets cost 20-50 s of CPU each (``cfm``'s ~40 s: UNet digits, likelihood, SDE), mostly XLA
compilation, and together would take the default run on a 2-core CI machine past its 20-minute
budget. All of them run under ``pytest -m slow`` and in the paper-set runner
(``python -m experiments.paperset``).
"""

import json
import math

import pytest

from experiments.run import discover, run_experiment

SLUGS = list(discover())
DEFAULT_RUN = ("ot-cfm",)


def check_result(result: dict, out, slug: str) -> None:
    for key in ("experiment", "preset", "claim", "passed", "metrics", "plots", "seconds", "versions"):
        assert key in result, key
    assert isinstance(result["passed"], bool)
    assert result["metrics"], "an experiment must report measured numbers"
    bad = {k: v for k, v in result["metrics"].items() if not math.isfinite(float(v))}
    assert not bad, bad
    for plot in result["plots"]:
        assert (out / plot).exists(), plot
    assert json.loads((out / "results.json").read_text())["experiment"] == slug


def _marks(slug):
    return () if slug in DEFAULT_RUN else (pytest.mark.slow,)


@pytest.mark.parametrize("slug", [pytest.param(s, marks=_marks(s)) for s in SLUGS])
def test_smoke(slug, tmp_path):
    check_result(run_experiment(slug, "smoke", out_dir=tmp_path), tmp_path, slug)


@pytest.mark.slow
@pytest.mark.parametrize("slug", SLUGS)
def test_cpu_claim(slug, tmp_path):
    result = run_experiment(slug, "cpu", out_dir=tmp_path)
    check_result(result, tmp_path, slug)
    assert result["passed"], result["metrics"]
