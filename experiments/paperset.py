"""Run the whole paper set and write a report.

    python -m experiments.paperset [--preset smoke|cpu|gpu|tpu] [--only SLUG,...] [--out DIR]
                                   [--force] [--timeout SECONDS]

Every experiment runs in its own process (``python -m experiments.run``) with a time limit; a
failure or a time-out is recorded and the run continues. Finished experiments (a ``results.json``
in their folder) are skipped unless ``--force``, so an interrupted run resumes where it stopped.
Writes ``DIR/report.md``, ``DIR/report.html`` and ``DIR/report.json``: a summary table, the
environment, and one section per paper with its claim, the measured numbers, pass/fail, wall time
and plots. At the ``smoke`` preset experiments only run end to end: their claims are checked at
``cpu`` and larger presets.
"""

from __future__ import annotations

import argparse
import datetime as dt
import html
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from experiments import run as runner
from experiments.headlines import failed_criteria, headline_names
from experiments.papers import PAPERS, Paper

DEFAULT_TIMEOUTS = {"smoke": 600, "cpu": 1800, "gpu": 4 * 3600, "tpu": 4 * 3600}
CLAIM_PRESETS = ("cpu", "gpu", "tpu")


def _tail(text: str, n: int = 40) -> str:
    return "\n".join(text.strip().splitlines()[-n:])


def _children_cpu_seconds() -> float:
    """User + system CPU seconds of finished child processes: unlike wall time it barely grows when other
    work shares the machine, so ``cpu_seconds / cores`` estimates an idle machine's wall time."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_one(slug: str, preset: str, out: Path, timeout: float, overrides: Sequence[str] = ()) -> dict:
    """Run one experiment in a subprocess; return its results or an error record (never raises)."""
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("results.json", "status.json"):  # a rerun never leaves an old result behind
        (out / stale).unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "experiments.run", slug, "--preset", preset, "--out", str(out)]
    for item in overrides:
        cmd += ["--set", item]
    start = time.perf_counter()
    cpu_start = _children_cpu_seconds()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                              cwd=Path(__file__).resolve().parent.parent)
        log, status = proc.stdout + proc.stderr, ("ok" if proc.returncode == 0 else "error")
    except subprocess.TimeoutExpired as err:
        log = (err.stdout or b"").decode() if isinstance(err.stdout, bytes) else (err.stdout or "")
        log += (err.stderr or b"").decode() if isinstance(err.stderr, bytes) else (err.stderr or "")
        status = "timeout"
    seconds = time.perf_counter() - start
    cpu_seconds = _children_cpu_seconds() - cpu_start
    (out / "log.txt").write_text(log)
    results_file = out / "results.json"
    if status == "ok" and results_file.exists():
        result = json.loads(results_file.read_text())
        result["cpu_seconds"] = cpu_seconds
        results_file.write_text(json.dumps(result, indent=2))
        return result
    if status == "ok":
        status = "error"
    record = {"experiment": slug, "preset": preset, "status": status, "seconds": seconds, "cpu_seconds": cpu_seconds,
              "log_tail": _tail(log)}
    (out / "status.json").write_text(json.dumps(record, indent=2))
    return record


def collect(slugs: Sequence[str], preset: str, out_dir: Path, *, force: bool, timeout: float, progress: bool = True,
            overrides: Sequence[str] = ()) -> dict[str, dict]:
    """Run (or reuse) every experiment in ``slugs``; returns slug -> results or error record."""
    results: dict[str, dict] = {}
    todo = []
    for slug in slugs:
        done = out_dir / slug / "results.json"
        if done.exists() and not force:
            results[slug] = json.loads(done.read_text())
        else:
            todo.append(slug)
    bar = None
    if progress and todo:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc=f"paper set [{preset}]", unit="exp")
    for slug in todo:
        if bar is not None:
            bar.set_postfix_str(slug)
        results[slug] = run_one(slug, preset, out_dir / slug, timeout, overrides)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return {slug: results[slug] for slug in slugs}


def _status(result: dict | None, preset: str) -> str:
    if result is None:
        return "not run"
    if "status" in result and "claim" not in result:
        return result["status"]  # error / timeout
    if preset not in CLAIM_PRESETS:
        return "ran"
    return "passed" if result.get("passed") else "failed"


def headline(result: dict, limit: int = 6, slug: str = "") -> dict[str, float]:
    """The numbers a reader wants first (see :mod:`experiments.headlines`)."""
    metrics = result.get("metrics", {})
    names = headline_names(slug or result.get("experiment", ""), result, limit)
    return {k: metrics[k] for k in names if k in metrics}


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def summarise(results: dict[str, dict], preset: str, available: set[str]) -> dict:
    rows = []
    listed = set()
    for paper in PAPERS:
        statuses = {e: _status(results.get(e), preset) if e in available else "not implemented" for e in paper.experiments}
        listed.update(paper.experiments)
        rows.append({"paper": paper, "statuses": statuses})
    extra = sorted(e for e in available if e not in listed)
    if extra:
        other = Paper("other", "Other experiments", "", tuple(extra), "other")
        rows.append({"paper": other, "statuses": {e: _status(results.get(e), preset) for e in extra}})
    flat = [s for row in rows for s in row["statuses"].values()]
    return {
        "papers": len(PAPERS),
        "experiments": len(flat),
        "ran": sum(s not in ("not implemented", "not run") for s in flat),
        "not_run": sum(s == "not run" for s in flat),
        "claims_checked": sum(s in ("passed", "failed") for s in flat),
        "passed": sum(s == "passed" for s in flat),
        "failed": sum(s == "failed" for s in flat),
        "errors": sum(s in ("error", "timeout") for s in flat),
        "not_implemented": sum(s == "not implemented" for s in flat),
        "rows": rows,
    }


def environment() -> dict:
    from flowjax.experiment import versions

    return versions()


def slowest_compiles(results: dict[str, dict]) -> str:
    """One sentence: the slowest XLA compile of any program and of a training dispatch, and where."""
    worst_any, worst_train = None, None
    for slug, res in results.items():
        comp = res.get("compile") or {}
        if comp.get("slowest"):
            name, secs = comp["slowest"][0]
            if worst_any is None or secs > worst_any[0]:
                worst_any = (secs, slug, name)
        if comp.get("train_dispatch_max_s") is not None:
            if worst_train is None or comp["train_dispatch_max_s"] > worst_train[0]:
                worst_train = (comp["train_dispatch_max_s"], slug)
    if worst_any is None:
        return ""
    text = f"Slowest XLA compile of one program: {worst_any[0]:.1f} s (`{worst_any[1]}`, {worst_any[2]})"
    if worst_train is not None:
        text += f"; of a `flowjax.train` training dispatch: {worst_train[0]:.1f} s (`{worst_train[1]}`)"
    return text + "."


def write_markdown(path: Path, preset: str, summary: dict, results: dict[str, dict], env: dict) -> None:
    lines = [f"# flowjax paper-set report ({preset} preset)", "", f"Generated {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M UTC}.", ""]
    if preset not in CLAIM_PRESETS:
        lines += [f"At the `{preset}` preset experiments run end to end at tiny scale; claims are checked at `cpu` and above.", ""]
    lines += ["| papers | experiments | ran | claims checked | passed | failed | errors | not run | not yet implemented |",
              "|---|---|---|---|---|---|---|---|---|",
              f"| {summary['papers']} | {summary['experiments']} | {summary['ran']} | {summary['claims_checked']} | {summary['passed']} | "
              f"{summary['failed']} | {summary['errors']} | {summary['not_run']} | {summary['not_implemented']} |", ""]
    wall = sum(r.get("seconds") or 0.0 for r in results.values())
    cpu = sum(r.get("cpu_seconds") or 0.0 for r in results.values())
    lines += [f"Total wall time {wall / 60:.1f} min; CPU time {cpu / 60:.1f} min (user + system of the experiment processes, "
              "where recorded). " + slowest_compiles(results), ""]
    lines += ["| paper | arXiv | experiment | status | wall s | CPU s | slowest compile s |", "|---|---|---|---|---|---|---|"]
    for row in summary["rows"]:
        p: Paper = row["paper"]
        for exp, status in row["statuses"].items():
            secs, cpu_s = results.get(exp, {}).get("seconds"), results.get(exp, {}).get("cpu_seconds")
            comp = (results.get(exp, {}).get("compile") or {}).get("max_s")
            lines.append(f"| {p.title} | {p.arxiv} | `{exp}` | {status} | {'' if secs is None else f'{secs:.0f}'} | "
                         f"{'' if cpu_s is None else f'{cpu_s:.0f}'} | {'' if comp is None else f'{comp:.1f}'} |")
    lines += ["", "## Environment", ""] + [f"- {k}: {v}" for k, v in env.items()] + [""]
    for row in summary["rows"]:
        p = row["paper"]
        lines += [f"## {p.title}", ""]
        if p.arxiv:
            lines += [f"arXiv [{p.arxiv}](https://arxiv.org/abs/{p.arxiv}) · family: {p.family}", ""]
        for exp, status in row["statuses"].items():
            res = results.get(exp)
            lines.append(f"### `{exp}`: {status}")
            lines.append("")
            if res is None or status in ("not implemented", "not run"):
                lines += ["Not yet implemented." if status == "not implemented" else "Not run in this report.", ""]
                continue
            if "claim" not in res:
                lines += [f"Run {status} after {res.get('seconds', 0):.0f} s. Last lines of the log:", "", "```", res.get("log_tail", ""), "```", ""]
                continue
            lines += [f"**Claim checked:** {res['claim']}", "", f"Wall time: {res.get('seconds', 0):.1f} s.", ""]
            lines += ["**Measured:** " + ", ".join(f"{k} = {_fmt(v)}" for k, v in headline(res, slug=exp).items()), ""]
            crit = res.get("checks") or res.get("criteria")
            if isinstance(crit, dict) and crit:
                lines += ["Pass criteria: " + ", ".join(f"{k} = {'yes' if v else 'no'}" for k, v in crit.items()), ""]
            lines += ["| metric | value |", "|---|---|"] + [f"| {k} | {_fmt(v)} |" for k, v in res.get("metrics", {}).items()] + [""]
            if res.get("baseline"):
                lines += ["Baseline: " + ", ".join(f"{k} = {_fmt(v)}" for k, v in res["baseline"].items()), ""]
            if res.get("notes"):
                lines += [f"Notes: {res['notes']}", ""]
            for plot in res.get("plots", []):
                lines += [f"![{exp} {plot}]({exp}/{plot})", ""]
    path.write_text("\n".join(lines))


def write_html(path: Path, preset: str, summary: dict, results: dict[str, dict], env: dict) -> None:
    e = html.escape
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>flowjax paper-set report</title>",
             "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:3px 6px;font-size:13px}.passed{color:green}.failed,.error,.timeout{color:#b00}"
             "img{max-width:100%}</style></head><body>",
             f"<h1>flowjax paper-set report ({e(preset)} preset)</h1>"]
    if preset not in CLAIM_PRESETS:
        parts.append(f"<p>At the <code>{e(preset)}</code> preset experiments run end to end at tiny scale; claims are checked at <code>cpu</code> and above.</p>")
    keys = ["papers", "experiments", "ran", "claims_checked", "passed", "failed", "errors", "not_run", "not_implemented"]
    parts.append("<table><tr>" + "".join(f"<th>{k.replace('_', ' ')}</th>" for k in keys) + "</tr><tr>"
                 + "".join(f"<td>{summary[k]}</td>" for k in keys) + "</tr></table>")
    compiles = slowest_compiles(results)
    if compiles:
        parts.append(f"<p>{e(compiles)}</p>")
    parts.append("<h2>Environment</h2><ul>" + "".join(f"<li>{e(k)}: {e(str(v))}</li>" for k, v in env.items()) + "</ul>")
    for row in summary["rows"]:
        p = row["paper"]
        parts.append(f"<h2>{e(p.title)}</h2><p>arXiv <a href='https://arxiv.org/abs/{p.arxiv}'>{p.arxiv}</a> · {e(p.family)}</p>")
        for exp, status in row["statuses"].items():
            res = results.get(exp)
            parts.append(f"<h3><code>{e(exp)}</code>: <span class='{status.replace(' ', '-')}'>{e(status)}</span></h3>")
            if res is None or status in ("not implemented", "not run"):
                parts.append(f"<p>{'Not yet implemented.' if status == 'not implemented' else 'Not run in this report.'}</p>")
                continue
            if "claim" not in res:
                parts.append(f"<pre>{e(res.get('log_tail', ''))}</pre>")
                continue
            parts.append(f"<p><b>Claim checked:</b> {e(res['claim'])}<br>Wall time: {res.get('seconds', 0):.1f} s</p>")
            parts.append("<p><b>Measured:</b> " + e(", ".join(f"{k} = {_fmt(v)}" for k, v in headline(res, slug=exp).items())) + "</p>")
            crit = res.get("checks") or res.get("criteria")
            if isinstance(crit, dict) and crit:
                parts.append("<p>Pass criteria: " + e(", ".join(f"{k} = {'yes' if v else 'no'}" for k, v in crit.items())) + "</p>")
            parts.append("<table>" + "".join(f"<tr><td>{e(k)}</td><td>{e(_fmt(v))}</td></tr>" for k, v in res.get("metrics", {}).items()) + "</table>")
            if res.get("notes"):
                parts.append(f"<p>{e(str(res['notes']))}</p>")
            for plot in res.get("plots", []):
                parts.append(f"<img src='{e(exp)}/{e(plot)}' alt='{e(plot)}'>")
    parts.append("</body></html>")
    path.write_text("\n".join(parts))


def write_report(out_dir: Path, preset: str, results: dict[str, dict], available: set[str]) -> dict:
    from flowjax.experiment import write_json_atomic

    summary = summarise(results, preset, available)
    env = environment()
    write_markdown(out_dir / "report.md", preset, summary, results, env)
    write_html(out_dir / "report.html", preset, summary, results, env)
    payload = {
        "preset": preset,
        "environment": env,
        "summary": {k: v for k, v in summary.items() if k != "rows"},
        "papers": [{"spec": r["paper"].spec, "title": r["paper"].title, "arxiv": r["paper"].arxiv,
                    "family": r["paper"].family, "statuses": r["statuses"]} for r in summary["rows"]],
        "results": results,
    }
    write_json_atomic(out_dir / "report.json", payload)
    return payload


def previous_results(out_dir: Path, slugs: Sequence[str], preset: str) -> dict[str, dict]:
    """Results already in ``out_dir`` for ``slugs`` at ``preset`` (read only, nothing runs)."""
    found = {}
    for slug in slugs:
        path = out_dir / slug / "results.json"
        if path.exists():
            res = json.loads(path.read_text())
            if res.get("preset", preset) == preset:
                found[slug] = res
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.paperset", description="Run every experiment and write a report.")
    parser.add_argument("--preset", default="smoke", choices=runner.PRESETS)
    parser.add_argument("--only", default=None, help="comma-separated experiment slugs")
    parser.add_argument("--out", default=None, help="output directory (default runs/paperset-PRESET)")
    parser.add_argument("--force", action="store_true", help="rerun experiments that already have results")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per experiment")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    available = set(runner.discover())
    slugs = list(available)
    if args.only:
        slugs = [s.strip().replace("_", "-") for s in args.only.split(",") if s.strip()]
        unknown = [s for s in slugs if s not in available]
        if unknown:
            print(f"error: unknown experiment(s) {unknown}; available: {sorted(available)}", file=sys.stderr)
            return 2
    out_dir = Path(args.out or f"runs/paperset-{args.preset}")
    runner.check_output_dir(out_dir)
    timeout = args.timeout or DEFAULT_TIMEOUTS[args.preset]
    results = collect(sorted(slugs), args.preset, out_dir, force=args.force, timeout=timeout, progress=not args.no_progress)
    # `--only` limits what runs, not what is reported: earlier results in the same directory stay in the report.
    results = {**previous_results(out_dir, sorted(available - set(slugs)), args.preset), **results}
    report = write_report(out_dir, args.preset, results, available)
    s = report["summary"]
    print(f"{s['ran']} experiments ran: {s['passed']} passed, {s['failed']} failed, {s['errors']} errors; "
          f"{s['not_implemented']} not yet implemented. Report: {out_dir / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
