"""Benchmark: fused Pallas rollout vs the unfused XLA scan vs the plain flowmap sampler (MLP field).

    python -m benchmarks.rollout [--batch 65536] [--hidden 256] [--depth 4] [--steps 1 2 4 8] [--out FILE]

Times K flow-map steps of a :class:`flowjax.nets.MLP` average velocity (forward only) for each
implementation available on the current backend ("pallas" only on GPU/TPU; "interpret" is skipped
as it is a correctness tool) and writes a JSON table (median of ``--reps`` runs, compile excluded).
On CPU only the XLA paths run; GPU numbers need a device.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp

from flowjax.experiment import bind
from flowjax.nets import MLP, init_params
from flowjax.samplers import flowmap
from pallas_kernels.rollout import MLPSpec, default_implementation, rollout


def _time(fn, *args, reps: int) -> float:
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--dim", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--steps", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    dtype = jnp.dtype(args.dtype)
    net = MLP(hidden=args.hidden, depth=args.depth, time_dim=64, two_times=True)
    params = init_params(net, jax.random.key(0), jnp.zeros((2, args.dim), dtype))
    spec = MLPSpec.from_net(net)
    x = jax.random.normal(jax.random.key(1), (args.batch, args.dim), dtype)
    impls = ["xla"] + (["pallas"] if default_implementation() == "pallas" else [])
    rows = []
    for k in args.steps:
        grid = jnp.linspace(0.0, 1.0, k + 1)
        row = {"steps": k}
        row["flowmap_sampler_s"] = _time(jax.jit(lambda xx: flowmap(bind(net, params), xx, grid)), x, reps=args.reps)
        for impl in impls:
            fn = jax.jit(lambda xx, impl=impl: rollout(params, spec, xx, grid, implementation=impl))
            row[f"{impl}_s"] = _time(fn, x, reps=args.reps)
        rows.append(row)
        print(row, flush=True)
    result = {"backend": jax.default_backend(), "device": str(jax.devices()[0].device_kind), "args": vars(args), "rows": rows}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
