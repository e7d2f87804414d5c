"""The machine's limit: peak f32 matmul GFLOP/s, measured with XLA (and PyTorch when installed).

Square f32 matmuls ``C = A B`` (``2 n^3`` FLOPs) at n = 512, 1024, 2048 (``--quick``: 512 only); the peak is the best median
over sizes and frameworks. The other benchmarks divide their achieved GFLOP/s by it. The number
reflects the process's CPU share at the time, so on a shared machine it is a lower bound.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from benchmarks import _common as C

NAME = "machine"
DESCRIPTION = "peak f32 matmul GFLOP/s (XLA and PyTorch)"


def run(ctx: C.Context) -> dict:
    sizes = [512] if ctx.quick else [512, 1024, 2048]
    cases = []
    for n in sizes:
        a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
        b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
        mm = jax.jit(jnp.matmul)
        row = {"impl": "jax (XLA)", "config": f"n={n}", **C.time_calls(lambda: mm(a, b), C.jax_sync, ctx)}
        cases.append(C.with_flops(row, 2.0 * n**3 / 1e9, C.Context()))
        ctx.log(C.fmt_row(cases[-1]))
    torch = C.peer("torch", ctx)
    if torch is None:
        cases.append(C.skipped("torch", "all", C.missing_reason("torch")))
    else:
        C.torch_setup(torch)
        for n in sizes:
            a, b = torch.randn(n, n), torch.randn(n, n)
            row = {"impl": "torch", "config": f"n={n}", **C.time_calls(lambda: torch.mm(a, b), C.no_sync, ctx)}
            cases.append(C.with_flops(row, 2.0 * n**3 / 1e9, C.Context()))
            ctx.log(C.fmt_row(cases[-1]))
    peak = max(r["gflops"] for r in cases if "gflops" in r)
    best = max((r for r in cases if "gflops" in r), key=lambda r: r["gflops"])
    return {
        "name": NAME,
        "description": DESCRIPTION,
        "cases": cases,
        "peak_gflops": peak,
        "peak_from": f"{best['impl']} {best['config']}",
        "ratios": {},
        "notes": ["peak = best median over sizes and frameworks; a lower bound on a shared machine"],
    }
