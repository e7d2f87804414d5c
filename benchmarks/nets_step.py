"""Image training steps: a UNet CFM step on 8x8 digits and a DiT CFM step on 28x28, batch 128.

- UNet: :class:`flowjax.nets.UNet` (``channels=32``, the digits setting of ``experiments/cfm``),
  class-conditional, real digits from :func:`flowjax.data.load_digits_arrays`.
- DiT: :class:`flowjax.nets.DiT` on 28x28x1 inputs, patch 4 (49 tokens), width 192, 3 heads,
  depth 6 (``--quick``: depth 2), 10 classes; inputs are Gaussian noise of the right shape
  (speed does not depend on the pixels, and no data set is downloaded).

Both use :func:`flowjax.losses.cfm` and :func:`flowjax.train.make_train_step` with Adam (no EMA,
no clipping), jitted with the state donated. There is no PyTorch peer for these networks in the
issue; the rows give compile time (target < 5 s), step time, XLA's FLOP count and the fraction of
the machine's matmul peak.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from benchmarks import _common as C
from flowjax import losses
from flowjax.experiment import bind
from flowjax.nets import UNet, count_params, init_params
from flowjax.nets.dit import DiT
from flowjax.train import make_train_step
from flowjax.train.state import create_train_state

NAME = "nets_step"
DESCRIPTION = "UNet CFM step on 8x8 digits, DiT CFM step on 28x28 (batch 128; flowjax only)"


def _step(net, x1, labels):
    params = init_params(net, jax.random.key(0), x1[:2], c=labels[:2])

    def loss_fn(p, key, batch):
        x, c = batch
        return losses.cfm(bind(net, p), key, x, c=c)

    opt = optax.adam(1e-3)
    step = make_train_step(loss_fn, opt, ema_decay=None, nonfinite="apply")
    run = jax.jit(step, donate_argnums=0)
    state = [create_train_state(params, opt, jax.random.key(2))]
    compiled, compile_s = C.aot_compile(run, state[0], (x1, labels))

    def call():
        state[0], m = run(state[0], (x1, labels))
        return m["loss"]

    return call, compiled, compile_s, count_params(params)


def run(ctx: C.Context) -> dict:
    from flowjax.data import load_digits_arrays

    batch = 128
    cases = []
    images, labels = load_digits_arrays("train")
    x1 = jnp.asarray(images[:batch], jnp.float32)
    y = jnp.asarray(labels[:batch], jnp.int32)
    depth = 2 if ctx.quick else 6
    for impl, net, xb in (
        ("flowjax UNet(32)", UNet(channels=32, num_classes=10), x1),
        (f"flowjax DiT p4 d192 L{depth}", DiT(patch_size=4, dim=192, depth=depth, heads=3, num_classes=10, attention_impl="xla"),
         jax.random.normal(jax.random.key(3), (batch, 28, 28, 1), jnp.float32)),
    ):
        call, compiled, compile_s, nparams = _step(net, xb, y)
        cfg = f"batch={batch} {'x'.join(map(str, xb.shape[1:]))}"
        row = {"impl": impl, "config": cfg, "params": nparams, **C.time_calls(call, C.jax_sync, ctx), **C.xla_memory(compiled)}
        row = C.with_aot_compile(row, compile_s)
        xf = C.xla_flops(compiled)
        cases.append(C.with_flops(row, xf / 1e9 if xf else None, ctx))
        ctx.log(C.fmt_row(cases[-1]))
    headline = {r["impl"]: {"ms": r["median_ms"], "compile_s": r["compile_s"], "fraction_of_peak": r.get("fraction_of_peak")}
                for r in cases if "median_ms" in r}
    headline["target_compile_lt_5s"] = all(r["compile_s"] < 5.0 for r in cases if "compile_s" in r)
    return {"name": NAME, "description": DESCRIPTION, "cases": cases, "ratios": {}, "headline": headline,
            "notes": ["GFLOP from XLA's cost analysis of the compiled step", "no PyTorch peer for these networks",
                      "compile_s is the trace + lowering + XLA compile of the step (ahead of time); first_call_s the first call after it"]}
