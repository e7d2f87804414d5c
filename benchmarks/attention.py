"""Attention benchmark: forward, forward+backward and forward+JVP, Pallas vs XLA vs cuDNN (vs tokamax).

Not a test. Run on a GPU::

    python -m benchmarks.attention                      # full sweep, seq 1k-16k, d 64/128, bf16
    python -m benchmarks.attention --quick --out r.json # the sweep of benchmarks/gpu_check.sh

FLOP convention (reported TFLOP/s): one forward is ``F = 4 B H N M D`` (two matmuls), halved when
causal. Forward+backward counts ``3.5 F`` (FlashAttention-2's convention: the backward does five
matmuls to the forward's two). Forward+JVP counts ``3 F``: the useful matmuls of a tangent pass
(``Q K^T``, ``dQ K^T``, ``Q dK^T``, ``P V``, ``(P o dS) V``, ``P dV``). Timings are medians of
``--iters`` runs after a warm-up; ratios in the summary compare times, so they do not depend on
the convention. Targets from the issue (H100/H200): forward >= 0.9x cuDNN; forward+JVP >= 3x the
XLA JVP path (``jax.jvp`` through ``jax.nn.dot_product_attention(implementation="xla")``; cuDNN
has no JVP).

On CPU it times the XLA path at small sizes and says that the Pallas path needs an accelerator.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp

from pallas_kernels.attention import BlockSizes, attention

MODES = ("fwd", "fwd_bwd", "fwd_jvp")
FLOP_FACTOR = {"fwd": 1.0, "fwd_bwd": 3.5, "fwd_jvp": 3.0}


def _impl_fn(impl: str, causal: bool, block_sizes: BlockSizes | None) -> Callable | None:
    if impl == "pallas":
        return lambda q, k, v: attention(q, k, v, causal=causal, implementation="pallas", block_sizes=block_sizes)
    if impl in ("xla", "cudnn"):
        return lambda q, k, v: jax.nn.dot_product_attention(q, k, v, is_causal=causal, implementation=impl)
    if impl == "tokamax":
        try:
            import tokamax  # type: ignore
        except Exception:
            return None
        fn = getattr(tokamax, "dot_product_attention", None)
        if fn is None:
            return None
        return lambda q, k, v: fn(q, k, v, is_causal=causal)
    raise ValueError(impl)


def _mode_fn(f: Callable, mode: str) -> Callable:
    if mode == "fwd":
        return jax.jit(f)
    if mode == "fwd_bwd":

        def fb(q, k, v, ct):
            out, vjp = jax.vjp(f, q, k, v)
            return out, vjp(ct)

        return jax.jit(fb)
    if mode == "fwd_jvp":
        return jax.jit(lambda q, k, v, tq, tk, tv: jax.jvp(f, (q, k, v), (tq, tk, tv)))
    raise ValueError(mode)


def _time(fn: Callable, args: tuple, iters: int) -> tuple[float, float]:
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))  # compile + first run
    compile_s = time.perf_counter() - t0
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return statistics.median(times), compile_s


def run(
    *,
    seqs: list[int],
    head_dims: list[int],
    causals: list[bool],
    impls: list[str],
    modes: list[str] = list(MODES),
    dtype: str = "bfloat16",
    tokens: int = 16384,
    model_dim: int = 2048,
    iters: int = 10,
    budget_s: float | None = None,
    block_sizes: BlockSizes | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Time every (seq, head_dim, causal, impl, mode); returns a JSON-able dict of results."""
    start = time.perf_counter()
    dt = jnp.dtype(dtype)
    results = []
    for n in seqs:
        for d in head_dims:
            b = max(1, tokens // n)
            h = max(1, model_dim // d)
            key = jax.random.PRNGKey(0)
            ks = jax.random.split(key, 7)
            shape = (b, n, h, d)
            q, k, v, tq, tk, tv, ct = (jax.random.normal(kk, shape, dt) for kk in ks)
            for causal in causals:
                flops = 4.0 * b * h * n * n * d * (0.5 if causal else 1.0)
                for impl in impls:
                    f = _impl_fn(impl, causal, block_sizes)
                    for mode in modes:
                        row = dict(seq=n, head_dim=d, batch=b, heads=h, causal=causal, impl=impl, mode=mode, dtype=dtype)
                        if budget_s is not None and time.perf_counter() - start > budget_s:
                            row["error"] = "skipped: time budget exhausted"
                            results.append(row)
                            continue
                        if f is None:
                            row["error"] = "not installed"
                            results.append(row)
                            continue
                        args = {"fwd": (q, k, v), "fwd_bwd": (q, k, v, ct), "fwd_jvp": (q, k, v, tq, tk, tv)}[mode]
                        try:
                            sec, comp = _time(_mode_fn(f, mode), args, iters)
                            row.update(ms=sec * 1e3, compile_s=comp, tflops=FLOP_FACTOR[mode] * flops / sec / 1e12)
                            log(f"{impl:8s} {mode:8s} N={n:6d} D={d:4d} causal={causal!s:5s} {sec * 1e3:9.3f} ms {row['tflops']:9.4f} TFLOP/s")
                        except Exception as e:  # noqa: BLE001 - a benchmark records failures
                            row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
                            log(f"{impl:8s} {mode:8s} N={n:6d} D={d:4d} causal={causal!s:5s} ERROR {row['error']}")
                        results.append(row)
    return {
        "device": str(jax.devices()[0]),
        "backend": jax.default_backend(),
        "jax": jax.__version__,
        "flop_convention": "fwd 4BHNMD (x0.5 causal); fwd_bwd 3.5x; fwd_jvp 3x",
        "results": results,
        "summary": summarize(results),
    }


def summarize(results: list[dict]) -> dict[str, Any]:
    """Speed ratios against the issue's targets (time ratios, per configuration)."""

    def ms(impl, mode, key):
        for r in results:
            if (r["impl"], r["mode"], r["seq"], r["head_dim"], r["causal"]) == (impl, mode, *key) and "ms" in r:
                return r["ms"]
        return None

    keys = sorted({(r["seq"], r["head_dim"], r["causal"]) for r in results})
    fwd_vs_cudnn, jvp_vs_xla = [], []
    for key in keys:
        p, c = ms("pallas", "fwd", key), ms("cudnn", "fwd", key)
        if p and c:
            fwd_vs_cudnn.append(dict(seq=key[0], head_dim=key[1], causal=key[2], ratio=c / p))
        pj, xj = ms("pallas", "fwd_jvp", key), ms("xla", "fwd_jvp", key)
        if pj and xj:
            jvp_vs_xla.append(dict(seq=key[0], head_dim=key[1], causal=key[2], speedup=xj / pj))
    out: dict[str, Any] = {"fwd_speed_vs_cudnn": fwd_vs_cudnn, "fwd_jvp_speedup_vs_xla": jvp_vs_xla}
    if fwd_vs_cudnn:
        out["fwd_vs_cudnn_min"] = min(r["ratio"] for r in fwd_vs_cudnn)
        out["target_fwd_ge_0.9x_cudnn"] = out["fwd_vs_cudnn_min"] >= 0.9
    if jvp_vs_xla:
        out["fwd_jvp_vs_xla_min"] = min(r["speedup"] for r in jvp_vs_xla)
        out["target_fwd_jvp_ge_3x_xla"] = out["fwd_jvp_vs_xla_min"] >= 3.0
    return out


def _ints(s: str) -> list[int]:
    return [int(x) for x in s.split(",") if x]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seqs", type=_ints, default=None, help="comma-separated sequence lengths")
    ap.add_argument("--head-dims", type=_ints, default=[64, 128])
    ap.add_argument("--causal", choices=["both", "yes", "no"], default="both")
    ap.add_argument("--impls", default="pallas,xla,cudnn,tokamax")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--tokens", type=int, default=16384, help="batch * seq per configuration")
    ap.add_argument("--model-dim", type=int, default=2048, help="heads * head_dim per configuration")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--budget-s", type=float, default=None, help="skip remaining cases after this many seconds")
    ap.add_argument("--quick", action="store_true", help="seq 1k/4k/16k, 5 iters (the gpu_check sweep)")
    ap.add_argument("--out", default=None, help="write the results JSON here")
    args = ap.parse_args(argv)

    backend = jax.default_backend()
    causals = {"both": [False, True], "yes": [True], "no": [False]}[args.causal]
    impls = [x for x in args.impls.split(",") if x]
    modes = [x for x in args.modes.split(",") if x]
    seqs = args.seqs or ([1024, 4096, 16384] if args.quick else [1024, 2048, 4096, 8192, 16384])
    iters = 5 if args.quick and args.iters == 10 else args.iters
    if backend not in ("gpu", "tpu"):
        print(f"Backend is {backend!r}: the Pallas path needs an accelerator (GPU/TPU); timing the XLA path only, at small sizes.")
        impls = ["xla"]
        seqs = [s for s in (args.seqs or [128, 256]) if s <= 1024]
        args.tokens = min(args.tokens, 256)
        args.model_dim = 256
        args.head_dims = [64]
        args.dtype = "float32"
        iters = min(iters, 3)
    res = run(
        seqs=seqs,
        head_dims=args.head_dims,
        causals=causals,
        impls=impls,
        modes=modes,
        dtype=args.dtype,
        tokens=args.tokens,
        model_dim=args.model_dim,
        iters=iters,
        budget_s=args.budget_s,
    )
    print(json.dumps(res["summary"], indent=1))
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(res, fh, indent=1)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
