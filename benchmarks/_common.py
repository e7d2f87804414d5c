"""Shared pieces of ``python -m benchmarks.run``: timing, memory, FLOPs, peers, result rows.

Conventions (every benchmark module follows them):

- ``run(ctx) -> dict`` returns ``{"name", "description", "cases": [row, ...], "ratios": {...},
  "notes": [...]}``. A row is one implementation of one configuration: ``impl`` (``"flowjax"``,
  ``"flow_matching eager"``, ...), ``config``, ``median_ms`` (median over ``ctx.iters`` timed
  calls after ``ctx.warmup`` untimed ones), ``iqr_ms``, ``compile_s`` (the first call: tracing,
  compilation and one run; for eager PyTorch just the first call), ``peak_rss_mb`` (the peak
  resident-set growth of the process during the case, see :func:`measure_peak_rss`), optionally
  ``xla_temp_mb`` (XLA's own buffer plan from ``compiled.memory_analysis()``), ``gflop`` per call
  and ``gflops`` achieved, or ``skipped`` with the reason.
- Ratios are ``peer median / flowjax median`` from the same process run (> 1: flowjax faster).
- Peers are imported lazily with :func:`peer`; a missing one gives a skipped row and a message.
"""

from __future__ import annotations

import dataclasses
import gc
import importlib
import os
import statistics
import time
from typing import Any, Callable

import jax
import numpy as np


@dataclasses.dataclass
class Context:
    """What a benchmark module gets from the runner."""

    quick: bool = False
    warmup: int = 2
    iters: int = 10
    peers: bool = True  # False: skip all PyTorch peers (e.g. in tests)
    torch_compile: bool = True  # False: skip torch.compile variants (their compile takes 10-30 s)
    peak_gflops: float | None = None  # the machine's measured f32 matmul peak, when known
    max_case_s: float | None = None  # cap on one case's time: fewer repetitions when the first call is slow
    log: Callable[[str], None] = print


# ----------------------------------------------------------------------------------- peers
_MISSING: dict[str, str] = {}


def peer(module: str, ctx: Context) -> Any | None:
    """Import a peer package, or return None (and log once) when it is missing or disabled."""
    if not ctx.peers:
        _MISSING.setdefault(module, "peers disabled (--no-peers)")
        return None
    try:
        return importlib.import_module(module)
    except Exception as e:  # noqa: BLE001 - any import failure means "peer not available"
        if module not in _MISSING:
            ctx.log(f"  [skip] peer {module!r} not available ({type(e).__name__}: {e}); install the `bench` extra")
        _MISSING[module] = f"{type(e).__name__}: {e}"
        return None


def skipped(impl: str, config: str, reason: str) -> dict:
    return {"impl": impl, "config": config, "skipped": reason}


def missing_reason(module: str) -> str:
    return f"peer {module} not available ({_MISSING.get(module, 'not installed')})"


def torch_setup(torch: Any) -> None:
    """Same thread count for both frameworks: all cores of the process's CPU set."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    torch.set_num_threads(n)


# ---------------------------------------------------------------------------------- memory
def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS watermark (VmHWM) of this process (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


class measure_peak_rss:
    """Context manager: ``.mb`` = peak resident set during the block minus the RSS at its start.

    Uses the Linux VmHWM watermark reset through ``/proc/self/clear_refs``; where that is not
    available it falls back to ``resource.getrusage`` (a process-lifetime maximum, so later cases
    can only report growth beyond earlier peaks) and sets ``.method`` accordingly.
    """

    def __enter__(self):
        gc.collect()
        self.method = "vmhwm" if _reset_peak_rss() and _status_kb("VmHWM") is not None else "ru_maxrss"
        self.start_kb = _status_kb("VmRSS") or 0
        if self.method == "ru_maxrss":
            import resource

            self.start_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return self

    def __exit__(self, *exc):
        if self.method == "vmhwm":
            peak = _status_kb("VmHWM") or 0
        else:
            import resource

            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        self.mb = max(0.0, (peak - self.start_kb) / 1024.0)
        return False


def aot_compile(fn: Any, *args: Any) -> tuple[Any, float]:
    """``fn.lower(*args).compile()`` and its wall time in seconds (trace, lowering, XLA compile).

    A jitted function called after this reuses the executable, so :func:`time_calls`' first call
    then measures no compilation: record this time with :func:`with_aot_compile`.
    """
    t0 = time.perf_counter()
    compiled = fn.lower(*args).compile()
    return compiled, time.perf_counter() - t0


def with_aot_compile(row: dict, compile_s: float) -> dict:
    """``row`` with ``compile_s`` the ahead-of-time compile time; the first call's time moves to ``first_call_s``."""
    row = dict(row)
    row["first_call_s"] = row.get("compile_s")
    row["compile_s"] = compile_s
    return row


def xla_memory(compiled: Any) -> dict:
    """XLA's buffer plan of a compiled function (argument, output and temporary bytes) in MB."""
    try:
        m = compiled.memory_analysis()
    except Exception:  # noqa: BLE001 - not every backend reports it
        return {}
    if m is None:
        return {}
    out = {}
    for name in ("temp_size_in_bytes", "argument_size_in_bytes", "output_size_in_bytes"):
        v = getattr(m, name, None)
        if v is not None:
            out["xla_" + name.replace("_size_in_bytes", "_mb")] = v / 2**20
    return out


def xla_flops(compiled: Any) -> float | None:
    """FLOPs per call of a compiled function as XLA counts them (None when unavailable)."""
    try:
        ca = compiled.cost_analysis()
    except Exception:  # noqa: BLE001
        return None
    if isinstance(ca, (list, tuple)):
        ca = ca[0] if ca else None
    if not ca or "flops" not in ca:
        return None
    f = float(ca["flops"])
    return f if f > 0 else None


# ---------------------------------------------------------------------------------- timing
def time_calls(call: Callable[[], Any], sync: Callable[[Any], Any], ctx: Context, *, per_call: int = 1) -> dict:
    """Time ``call()``: first call separately (compile), ``ctx.warmup`` untimed, ``ctx.iters`` timed.

    ``sync(out)`` blocks until the result is ready (``jax.block_until_ready``; identity for
    eager PyTorch on CPU). ``per_call`` divides the times when one call runs several steps.
    With ``ctx.max_case_s``, a slow case runs fewer warm-up and timed calls (at least one timed),
    so that the case takes about that long; the row's ``iters`` says how many were timed.
    """
    warmup, iters = ctx.warmup, ctx.iters
    with measure_peak_rss() as mem:
        t0 = time.perf_counter()
        sync(call())
        compile_s = time.perf_counter() - t0
        if ctx.max_case_s is not None and compile_s * (warmup + iters) > ctx.max_case_s:
            iters = max(1, min(iters, int(ctx.max_case_s / max(compile_s, 1e-9)) - 1))
            warmup = 0 if iters < ctx.iters else warmup
        for _ in range(warmup):
            sync(call())
        times = []
        for _ in range(iters):
            t0 = time.perf_counter()
            sync(call())
            times.append((time.perf_counter() - t0) / per_call)
    q = np.percentile(times, [25, 75])
    return {
        "median_ms": statistics.median(times) * 1e3,
        "iqr_ms": float(q[1] - q[0]) * 1e3,
        "min_ms": min(times) * 1e3,
        "compile_s": compile_s,
        "iters": iters,
        "warmup": warmup,
        "peak_rss_mb": mem.mb,
        "rss_method": mem.method,
    }


def jax_sync(out: Any) -> Any:
    return jax.block_until_ready(out)


def no_sync(out: Any) -> Any:
    return out


def with_flops(row: dict, gflop: float | None, ctx: Context) -> dict:
    """Add ``gflop`` per step, achieved ``gflops`` and its fraction of the machine's matmul peak."""
    if gflop is None or "median_ms" not in row:
        return row
    row["gflop"] = gflop
    row["gflops"] = gflop / (row["median_ms"] / 1e3)
    if ctx.peak_gflops:
        row["fraction_of_peak"] = row["gflops"] / ctx.peak_gflops
    return row


def ratios(cases: list[dict], ours: str, config: str | None = None) -> dict[str, float]:
    """``{peer impl: peer median / our median}`` among rows of the same config."""
    rows = [r for r in cases if "median_ms" in r and (config is None or r.get("config") == config)]
    mine = [r for r in rows if r["impl"] == ours]
    if not mine:
        return {}
    base = mine[0]["median_ms"]
    return {r["impl"]: r["median_ms"] / base for r in rows if r["impl"] != ours}


def fmt_row(r: dict) -> str:
    if "skipped" in r:
        return f"  {r['impl']:<34s} {r.get('config', ''):<22s} skipped: {r['skipped']}"
    s = f"  {r['impl']:<34s} {r.get('config', ''):<22s} {r['median_ms']:10.2f} ms  compile {r['compile_s']:6.2f} s  peak +{r['peak_rss_mb']:7.1f} MB"
    if "gflops" in r:
        s += f"  {r['gflops']:7.1f} GFLOP/s"
        if "fraction_of_peak" in r:
            s += f" ({100 * r['fraction_of_peak']:.0f}% peak)"
    return s


def mlp_step_gflop(batch: int, dims: list[tuple[int, int]], *, backward: bool) -> float:
    """Matmul GFLOPs of dense layers ``[(in, out), ...]`` on ``batch`` rows; x3 with backward."""
    f = sum(2.0 * batch * i * o for i, o in dims)
    return (3.0 if backward else 1.0) * f / 1e9


def mlp_dims(d: int, hidden: int, depth: int, time_dim: int) -> list[tuple[int, int]]:
    """Dense layer shapes of :class:`flowjax.nets.MLP` (time projection, hidden layers, output)."""
    dims = [(time_dim, time_dim)]
    width = d
    for _ in range(depth):
        dims.append((width + time_dim, hidden))
        width = hidden
    dims.append((hidden, d))
    return dims
