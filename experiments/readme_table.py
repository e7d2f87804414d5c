"""Regenerate the README's paper table from a paper-set report (never edit that table by hand).

    python -m experiments.readme_table [runs/paperset-cpu/report.json] [--readme README.md]

Status per experiment: ``planned`` (no experiment yet), ``implemented`` (experiment exists, no
cpu-or-larger result in the report), ``claim reproduced (cpu)`` / ``claim not reproduced (cpu)``
with the measured headline numbers, or the run's error.

Runs live in ``runs/`` (ignored by git), so a later session's report may cover only the experiments
it reran. An experiment with no result in the report keeps the row the README already shows for it
(a measured row is never replaced by ``implemented``); pass ``--drop-missing`` to rebuild from the
report alone.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from experiments import run as runner
from experiments.headlines import failed_criteria, headline_names
from experiments.papers import PAPERS

START, END = "<!-- paper-table:start -->", "<!-- paper-table:end -->"


def _numbers(slug: str, result: dict) -> str:
    metrics = result.get("metrics", {})
    names = headline_names(slug, result)
    text = "; ".join(f"{k} {metrics[k]:.3g}" if isinstance(metrics[k], (int, float)) else f"{k} {metrics[k]}" for k in names if k in metrics)
    missed = failed_criteria(result)
    return text + (f"; missed: {', '.join(missed)}" if missed and not result.get("passed") else "")


def existing_rows(readme_text: str) -> dict[str, str]:
    """Rows of the README's current paper table, keyed by experiment slug."""
    rows = {}
    for line in readme_text.splitlines():
        match = re.match(r"^\|[^|]*\|[^|]*\|[^|]*\| `([a-z0-9-]+)` \|", line)
        if match:
            rows[match.group(1)] = line
    return rows


def table(report: dict | None, keep: dict[str, str] | None = None) -> str:
    """The paper table; ``keep`` maps slugs to earlier rows used where the report has no result."""
    available = set(runner.discover())
    results = (report or {}).get("results", {})
    preset = (report or {}).get("preset", "")
    lines = ["| paper | arXiv | family | experiment | status | measured (preset " + (preset or "-") + ") |", "|---|---|---|---|---|---|"]
    for paper in PAPERS:
        for exp in paper.experiments:
            res = results.get(exp)
            earlier = (keep or {}).get(exp, "")
            if exp in available and res is None and "| claim " in earlier:
                lines.append(earlier)
                continue
            if exp not in available:
                status, numbers = "planned", ""
            elif res is None or preset not in ("cpu", "gpu", "tpu"):
                status, numbers = "implemented", ""
            elif "claim" not in res:
                status, numbers = f"run {res.get('status', 'error')}", ""
            else:
                reduced = f", with --set {' '.join(res['overrides'])}" if res.get("overrides") else ""
                status = f"claim {'reproduced' if res.get('passed') else 'not reproduced'} ({preset}{reduced})"
                numbers = _numbers(exp, res).replace("|", "/")
            lines.append(f"| {paper.title} | [{paper.arxiv}](https://arxiv.org/abs/{paper.arxiv}) | {paper.family} | `{exp}` | {status} | {numbers} |")
    return "\n".join(lines)


def update_readme(readme: Path, report: dict | None, *, keep_missing: bool = True) -> None:
    text = readme.read_text()
    if START not in text or END not in text:
        raise ValueError(f"{readme} has no {START} ... {END} markers.")
    keep = existing_rows(text) if keep_missing else None
    new = re.sub(re.escape(START) + r".*?" + re.escape(END), lambda _: START + "\n" + table(report, keep) + "\n" + END, text, flags=re.S)
    readme.write_text(new)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.readme_table")
    parser.add_argument("report", nargs="?", default=None, help="report.json of a paper-set run (cpu preset)")
    parser.add_argument("--readme", default="README.md")
    parser.add_argument("--drop-missing", action="store_true", help="do not keep earlier rows for experiments the report lacks")
    args = parser.parse_args(argv)
    report = json.loads(Path(args.report).read_text()) if args.report else None
    update_readme(Path(args.readme), report, keep_missing=not args.drop_missing)
    return 0


if __name__ == "__main__":
    sys.exit(main())
