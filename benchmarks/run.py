"""Benchmarks side by side with the PyTorch peers (issue 13). Not part of the tests.

Usage::

    python -m benchmarks.run                      # everything (about 10-20 min on 2 cores)
    python -m benchmarks.run --quick              # fewer iterations, smaller sizes, no torch.compile
    python -m benchmarks.run --only cfm_step,sampling --out bench.json
    python -m benchmarks.run --list

Each benchmark prints one line per implementation and configuration and the JSON (``--out``)
holds, per row: median ms over repeated calls after warm-up, the first call (compile) separately,
peak resident-memory growth, GFLOP per call, achieved GFLOP/s and its fraction of the machine's
measured f32 matmul peak (benchmark ``machine``, always run first), and per benchmark the ratios
``peer time / flowjax time`` measured in the same process (> 1: flowjax is faster). Peers
(``pip install -e .[bench]``: CPU PyTorch, ``flow_matching``, ``torchcfm``, ``torchdiffeq``,
POT) that are not installed are skipped with a message. Use ``nice -n 0`` on an idle machine:
the numbers are only as good as the machine's load allows.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
from typing import Any

from benchmarks import _common as C

#: Benchmark modules in run order; each has NAME, DESCRIPTION and run(ctx) -> dict.
BENCHMARKS = ("machine", "cfm_step", "otcfm_step", "sampling", "likelihood", "nets_step", "fewstep")


def _module(name: str) -> Any:
    return importlib.import_module(f"benchmarks.{name}")


def _versions() -> dict[str, str]:
    out = {}
    for mod in ("jax", "jaxlib", "flax", "optax", "diffrax", "ott", "torch", "flow_matching", "torchcfm", "torchdiffeq", "ot"):
        try:
            m = importlib.import_module(mod)
            out[mod] = str(getattr(m, "__version__", "?"))
        except Exception:  # noqa: BLE001
            out[mod] = "not installed"
    return out


def run_benchmarks(names: list[str], ctx: C.Context, *, out: str | None = None, budget_s: float | None = None) -> dict:
    """Run the named benchmarks (``machine`` first, always); return and optionally write the JSON.

    With ``budget_s``, benchmarks that would start after that many seconds are recorded as
    skipped (the JSON is rewritten after every benchmark, so a killed run keeps what finished).
    """
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        raise ValueError(f"unknown benchmark(s) {unknown}; choose from {list(BENCHMARKS)}.")
    order = ["machine"] + [n for n in BENCHMARKS if n in names and n != "machine"]
    start = time.perf_counter()
    result: dict[str, Any] = {
        "command": "python -m benchmarks.run " + " ".join(sys.argv[1:]) if sys.argv and sys.argv[0].endswith("run.py") else None,
        "quick": ctx.quick,
        "platform": platform.platform(),
        "processor": platform.processor(),
        "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "loadavg_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "versions": _versions(),
        "benchmarks": {},
    }
    def write():
        if out:
            tmp = out + ".tmp"
            with open(tmp, "w") as fh:
                json.dump(result, fh, indent=1, default=float)
            os.replace(tmp, out)

    for name in order:
        if budget_s is not None and time.perf_counter() - start > budget_s and name != "machine":
            ctx.log(f"== {name}: skipped (time budget of {budget_s:.0f} s exhausted)")
            result["benchmarks"][name] = {"name": name, "skipped": f"time budget of {budget_s:.0f} s exhausted"}
            continue
        mod = _module(name)
        ctx.log(f"== {name}: {mod.DESCRIPTION}")
        t0 = time.perf_counter()
        try:
            res = mod.run(ctx)
        except Exception as e:  # noqa: BLE001 - one failing benchmark must not lose the others
            import traceback

            ctx.log(f"  ERROR {type(e).__name__}: {e}")
            res = {"name": name, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-4000:]}
        res["seconds"] = time.perf_counter() - t0
        if name == "machine" and "peak_gflops" in res:
            ctx.peak_gflops = res["peak_gflops"]
            ctx.log(f"  peak f32 matmul: {ctx.peak_gflops:.1f} GFLOP/s ({res['peak_from']})")
        for k, v in res.get("ratios", {}).items():
            ctx.log(f"  ratio {k}: {v}")
        result["benchmarks"][name] = res
        write()
    result["loadavg_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    result["seconds"] = time.perf_counter() - start
    result["summary"] = summary(result)
    write()
    if out:
        ctx.log(f"wrote {out}")
    return result


def summary(result: dict) -> dict:
    """Headline numbers against the issue's targets (ratios > 1: flowjax faster)."""
    b = result["benchmarks"]
    s: dict[str, Any] = {}
    if "peak_gflops" in b.get("machine", {}):
        s["peak_matmul_gflops"] = b["machine"]["peak_gflops"]
    for name in BENCHMARKS:
        if name in b and b[name].get("headline"):
            s[name] = b[name]["headline"]
    return s


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer iterations and smaller sizes; skips torch.compile")
    ap.add_argument("--only", default=None, help="comma-separated benchmark names (see --list)")
    ap.add_argument("--out", default=None, help="write the JSON results here")
    ap.add_argument("--iters", type=int, default=None, help="timed calls per case (default 10; 3 with --quick)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed calls after the first (default 2; 1 with --quick)")
    ap.add_argument("--budget-s", type=float, default=None, help="skip benchmarks that would start after this many seconds")
    ap.add_argument("--max-case-s", type=float, default=None,
                    help="cap one case's time: fewer repetitions when its first call is slow (loaded machines)")
    ap.add_argument("--no-peers", action="store_true", help="skip the PyTorch peers")
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile variants")
    ap.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = ap.parse_args(argv)
    if args.list:
        for n in BENCHMARKS:
            print(f"{n:12s} {_module(n).DESCRIPTION}")
        return 0
    names = list(BENCHMARKS) if not args.only else [x.strip() for x in args.only.split(",") if x.strip()]
    ctx = C.Context(
        quick=args.quick,
        warmup=args.warmup if args.warmup is not None else (1 if args.quick else 2),
        iters=args.iters or (3 if args.quick else 10),
        peers=not args.no_peers,
        max_case_s=args.max_case_s,
        torch_compile=not (args.no_compile or args.quick),
        log=lambda s: print(s, flush=True),
    )
    try:
        res = run_benchmarks(names, ctx, out=args.out, budget_s=args.budget_s)
    except ValueError as e:
        ap.error(str(e))
    print(json.dumps(res["summary"], indent=1, default=float))
    errors = [n for n, r in res["benchmarks"].items() if "error" in r]
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
