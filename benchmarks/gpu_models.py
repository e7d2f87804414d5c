"""GPU model benchmarks for ``benchmarks/gpu_check.sh``: DiT-B/2 MFU and a MeanFlow JVP step.

    python -m benchmarks.gpu_models --out gpu_models.json            # on a GPU/TPU
    python -m benchmarks.gpu_models --tiny --out /tmp/t.json          # CPU smoke of the code path

1. DiT-B/2 CFM training step (dim 768, depth 12, 12 heads, patch 2, on 32x32x4 latents = 256
   tokens, batch 64, 1000 classes, activations bf16, parameters f32, Adam), attention by the
   Pallas kernel vs XLA (``jax.nn.dot_product_attention``). MFU = model FLOPs / time / the
   device's dense bf16 peak (H100/H200 SXM 989 TFLOP/s, A100 312; otherwise not reported).
   Model FLOPs per training step = 3 x forward, forward = per token and block
   ``24 d^2 + 4 N d`` (qkv, proj, 4x MLP; QK^T and PV) plus patch embedding and final layer.
   Target (issue 13): >= 45% MFU on an H100/H200.
2. MeanFlow training step (:func:`flowjax.losses.meanflow`, a ``jax.jvp`` through the whole
   DiT-B/2 average-velocity net, ``two_times=True``): the Pallas attention kernel's forward+JVP
   vs the XLA JVP path. Reports the speed-up.

Timings are medians after a warm-up; the first call (compile) is reported separately.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import optax

from flowjax import losses
from flowjax.experiment import bind
from flowjax.nets import count_params, init_params
from flowjax.nets.dit import DiT
from flowjax.train import make_train_step
from flowjax.train.state import create_train_state

PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


def device_peak() -> float | None:
    kind = jax.devices()[0].device_kind
    for k, v in PEAK_BF16.items():
        if k in kind:
            return v
    return None


def dit_forward_flops(batch: int, tokens: int, dim: int, depth: int, patch_dim: int, out_dim: int) -> float:
    per_token_block = 24 * dim * dim + 4 * tokens * dim
    embed = 2 * patch_dim * dim + 2 * dim * out_dim
    return float(batch * tokens * (depth * per_token_block + embed))


def _time(call, iters: int) -> tuple[float, float]:
    t0 = time.perf_counter()
    jax.block_until_ready(call())
    compile_s = time.perf_counter() - t0
    jax.block_until_ready(call())
    ts = []
    for _ in range(iters):
        t0 = time.perf_counter()
        jax.block_until_ready(call())
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts), compile_s


def _train_call(net, loss, x, y, **loss_kw):
    times = (jnp.zeros((2,), x.dtype),) * (2 if net.two_times else 1)
    params = net.init(jax.random.key(0), x[:2], *times, c=y[:2])

    def loss_fn(p, key, batch):
        xb, yb = batch
        return loss(bind(net, p), key, xb, c=yb, **loss_kw)

    opt = optax.adam(1e-4)
    step = jax.jit(make_train_step(loss_fn, opt, ema_decay=None, nonfinite="apply"), donate_argnums=0)
    state = [create_train_state(params, opt, jax.random.key(1))]

    def call():
        state[0], m = step(state[0], (x, y))
        return m["loss"]

    return call, count_params(params)


def run(*, tiny: bool, iters: int, impls: list[str]) -> dict:
    if tiny:
        cfg = dict(dim=64, depth=2, heads=2, patch=2, size=8, ch=4, batch=4, classes=10)
    else:
        cfg = dict(dim=768, depth=12, heads=12, patch=2, size=32, ch=4, batch=64, classes=1000)
    b, s, ch, p = cfg["batch"], cfg["size"], cfg["ch"], cfg["patch"]
    tokens = (s // p) ** 2
    x = jax.random.normal(jax.random.key(2), (b, s, s, ch), jnp.float32)
    y = jax.random.randint(jax.random.key(3), (b,), 0, cfg["classes"])
    peak = device_peak()
    fwd = dit_forward_flops(b, tokens, cfg["dim"], cfg["depth"], p * p * ch, p * p * ch)
    rows = []
    for task in ("dit_cfm_step", "meanflow_step"):
        for impl in impls:
            net = DiT(patch_size=p, dim=cfg["dim"], depth=cfg["depth"], heads=cfg["heads"], num_classes=cfg["classes"],
                      two_times=task == "meanflow_step", time_mode="t_dt", qk_norm=task == "meanflow_step",
                      attention_impl=impl, dtype=jnp.bfloat16)
            row = {"task": task, "attention": impl, **cfg, "tokens": tokens}
            try:
                if task == "dit_cfm_step":
                    call, n = _train_call(net, losses.cfm, x, y)
                    flops = 3 * fwd
                else:
                    call, n = _train_call(net, losses.meanflow, x, y)
                    flops = 5 * fwd  # forward + tangent (JVP) + backward of both: a convention, see docstring
                sec, comp = _time(call, iters)
                row.update(params=n, ms=sec * 1e3, compile_s=comp, model_tflops=flops / sec / 1e12)
                if peak:
                    row["mfu"] = flops / sec / peak
            except Exception as e:  # noqa: BLE001 - record, do not lose the other rows
                row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
            print(json.dumps(row), flush=True)
            rows.append(row)

    def ms(task, impl):
        for r in rows:
            if r["task"] == task and r["attention"] == impl and "ms" in r:
                return r["ms"]
        return None

    summary = {}
    for r in rows:
        if r["task"] == "dit_cfm_step" and "mfu" in r:
            summary[f"dit_b2_mfu_{r['attention']}"] = r["mfu"]
    if "dit_b2_mfu_pallas" in summary:
        summary["target_dit_mfu_ge_0.45"] = summary["dit_b2_mfu_pallas"] >= 0.45
    for task in ("dit_cfm_step", "meanflow_step"):
        if ms(task, "pallas") and ms(task, "xla"):
            summary[f"{task}_pallas_speedup_vs_xla"] = ms(task, "xla") / ms(task, "pallas")
    return {"backend": jax.default_backend(), "device": jax.devices()[0].device_kind, "peak_bf16_flops": peak,
            "flop_convention": "train = 3x forward; meanflow = 5x forward; forward per token-block 24 d^2 + 4 N d",
            "rows": rows, "summary": summary}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="tiny DiT (CPU smoke of the code path)")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--impls", default=None, help="attention implementations (default: pallas,xla on GPU/TPU; xla on CPU)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    accel = jax.default_backend() in ("gpu", "tpu")
    impls = args.impls.split(",") if args.impls else (["pallas", "xla"] if accel else ["xla"])
    res = run(tiny=args.tiny or not accel, iters=args.iters, impls=impls)
    print(json.dumps(res["summary"], indent=1))
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(res, fh, indent=1)
    return 0 if not any("error" in r for r in res["rows"]) else 1


if __name__ == "__main__":
    sys.exit(main())
