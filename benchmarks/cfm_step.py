"""CFM training step: 2D data, batch 4096, MLP 3x256 SiLU, Adam.

Implementations (same network shape and FLOPs, see :mod:`benchmarks._torch_nets`; same batch):

- ``flowjax jit``: :func:`flowjax.losses.cfm` + :func:`flowjax.train.make_train_step` with
  ``optax.adam`` (no clipping, no EMA, like the peers), one jitted step per call, state donated.
- ``flowjax scan xK``: the same step, K steps per dispatch under ``jax.lax.scan`` (what
  :func:`flowjax.train.fit` does); time per step.
- ``flowjax jit, resident host buffers``: ``flowjax jit`` after
  :func:`flowjax.train.keep_host_buffers_resident` (glibc ``mallopt``: the step's temporary arena
  is reused from call to call instead of being mmap'd and page-faulted afresh); glibc's defaults
  are restored before the peers run.
- ``flowjax fit defaults``: the step :func:`flowjax.train.fit` builds by default (global-norm
  clipping, EMA 0.999, non-finite skip), one per call.
- ``flow_matching eager``: ``AffineProbPath(CondOTScheduler())`` loss, eager PyTorch.
- ``flow_matching torch.compile``: the whole step (loss, backward, ``opt.step``) under
  ``torch.compile`` (skipped with ``--quick``/``--no-compile``).
- ``torchcfm eager``: ``ConditionalFlowMatcher(sigma=0)`` loss.

The noise and times are drawn inside every step on both sides. GFLOP per step counts the dense
layers' matmuls (forward + 2x for backward).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks import _common as C
from flowjax import losses
from flowjax.data import sample_toy2d
from flowjax.experiment import bind
from flowjax.nets import MLP, count_params, init_params
from flowjax.train import keep_host_buffers_resident, make_optimizer, make_train_step
from flowjax.train.state import create_train_state

NAME = "cfm_step"
DESCRIPTION = "CFM train step, 2D, batch 4096, MLP 3x256 SiLU, Adam (flowjax vs flow_matching eager/compiled, torchcfm)"
HIDDEN, DEPTH, TIME_DIM, DIM = 256, 3, 64, 2
RESIDENT = "flowjax jit, resident host buffers"


def flowjax_step(batch: int, *, scan: int = 1, defaults: bool = False, lr: float = 1e-3):
    """Return ``(call, compiled, compile_s, num_params, x1)`` timing the flowjax step on a fixed batch."""
    net = MLP(hidden=HIDDEN, depth=DEPTH, time_dim=TIME_DIM)
    params = init_params(net, jax.random.key(0), jnp.zeros((2, DIM), jnp.float32))

    def loss_fn(p, key, x1):
        return losses.cfm(bind(net, p), key, x1)

    if defaults:
        opt = make_optimizer(lr)
        step = make_train_step(loss_fn, opt)
    else:
        opt = optax.adam(lr)
        step = make_train_step(loss_fn, opt, ema_decay=None, nonfinite="apply")
    x1 = sample_toy2d("8gaussians", jax.random.key(1), batch).astype(jnp.float32)
    if scan == 1:
        run = jax.jit(step, donate_argnums=0)
    else:
        run = jax.jit(lambda s, b: jax.lax.scan(lambda c, _: step(c, b), s, None, length=scan), donate_argnums=0)
    state = [create_train_state(params, opt, jax.random.key(2))]
    compiled, compile_s = C.aot_compile(run, state[0], x1)

    def call():
        state[0], metrics = run(state[0], x1)
        return metrics["loss"]

    return call, compiled, compile_s, count_params(params), np.asarray(x1)


def run(ctx: C.Context) -> dict:
    batch = 4096
    cfg = f"batch={batch}"
    gflop = C.mlp_step_gflop(batch, C.mlp_dims(DIM, HIDDEN, DEPTH, TIME_DIM), backward=True)
    cases, notes = [], []
    scan_k = 8 if ctx.quick else 16
    nparams = None
    x1_np = None
    for impl, kw, per in (
        ("flowjax jit", {}, 1),
        (f"flowjax scan x{scan_k}", {"scan": scan_k}, scan_k),
        ("flowjax fit defaults", {"defaults": True}, 1),
        (RESIDENT, {}, 1),
    ):
        resident = impl == RESIDENT and keep_host_buffers_resident()
        if impl == RESIDENT and not resident:
            cases.append(C.skipped(impl, cfg, "glibc mallopt unavailable on this platform"))
            continue
        try:
            call, compiled, compile_s, nparams, x1_np = flowjax_step(batch, **kw)
            row = {"impl": impl, "config": cfg, **C.time_calls(call, C.jax_sync, ctx, per_call=per), **C.xla_memory(compiled)}
            row = C.with_aot_compile(row, compile_s)
        finally:
            if resident:
                keep_host_buffers_resident(False)
        xf = C.xla_flops(compiled)
        if xf:
            row["xla_gflop"] = xf / 1e9 / per
        cases.append(C.with_flops(row, gflop, ctx))
        ctx.log(C.fmt_row(cases[-1]))

    torch = C.peer("torch", ctx)
    fm = C.peer("flow_matching", ctx) if torch is not None else None
    tcfm = C.peer("torchcfm", ctx) if torch is not None else None
    if torch is None:
        cases.append(C.skipped("pytorch peers", cfg, C.missing_reason("torch")))
    else:
        from benchmarks._torch_nets import MirrorMLP, count_params as tcount

        C.torch_setup(torch)
        x1 = torch.from_numpy(x1_np.copy())

        def make(loss_kind: str):
            torch.manual_seed(0)
            model = MirrorMLP(DIM, HIDDEN, DEPTH, TIME_DIM)
            assert tcount(model) == nparams, (tcount(model), nparams)
            opt = torch.optim.Adam(model.parameters(), lr=1e-3)
            if loss_kind == "flow_matching":
                from flow_matching.path import AffineProbPath
                from flow_matching.path.scheduler import CondOTScheduler

                path = AffineProbPath(scheduler=CondOTScheduler())

                def loss_fn(xb):
                    x0 = torch.randn_like(xb)
                    t = torch.rand(xb.shape[0])
                    ps = path.sample(t=t, x_0=x0, x_1=xb)
                    return torch.pow(model(ps.x_t, ps.t) - ps.dx_t, 2).mean()
            else:
                from torchcfm.conditional_flow_matching import ConditionalFlowMatcher

                matcher = ConditionalFlowMatcher(sigma=0.0)

                def loss_fn(xb):
                    x0 = torch.randn_like(xb)
                    t, xt, ut = matcher.sample_location_and_conditional_flow(x0, xb)
                    return torch.pow(model(xt, t) - ut, 2).mean()

            def step(xb):
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(xb)
                loss.backward()
                opt.step()
                return loss.detach()

            return step

        variants = []
        if fm is not None:
            variants.append(("flow_matching eager", "flow_matching", False))
            if ctx.torch_compile:
                variants.append(("flow_matching torch.compile", "flow_matching", True))
            else:
                cases.append(C.skipped("flow_matching torch.compile", cfg, "torch.compile skipped (--quick/--no-compile)"))
        else:
            cases.append(C.skipped("flow_matching", cfg, C.missing_reason("flow_matching")))
        if tcfm is not None:
            variants.append(("torchcfm eager", "torchcfm", False))
        else:
            cases.append(C.skipped("torchcfm", cfg, C.missing_reason("torchcfm")))
        for impl, kind, compiled in variants:
            step = make(kind)
            if compiled:
                step = torch.compile(step)
            row = {"impl": impl, "config": cfg, **C.time_calls(lambda: step(x1), C.no_sync, ctx)}
            cases.append(C.with_flops(row, gflop, ctx))
            ctx.log(C.fmt_row(cases[-1]))

    rat = {}
    for ours in ("flowjax jit", f"flowjax scan x{scan_k}", RESIDENT):
        for k, v in C.ratios(cases, ours).items():
            if not k.startswith("flowjax"):
                rat[f"{k} / {ours}"] = v
    headline = {}
    ok = [r for r in cases if "median_ms" in r]
    best_ours = min((r for r in ok if r["impl"].startswith("flowjax") and "defaults" not in r["impl"]), key=lambda r: r["median_ms"])
    peers_ok = [r for r in ok if not r["impl"].startswith("flowjax")]
    headline["flowjax_best"] = best_ours["impl"]
    headline["flowjax_ms"] = best_ours["median_ms"]
    headline["flowjax_fraction_of_peak"] = best_ours.get("fraction_of_peak")
    if peers_ok:
        best_peer = min(peers_ok, key=lambda r: r["median_ms"])
        headline["fastest_peer"] = best_peer["impl"]
        headline["fastest_peer_ms"] = best_peer["median_ms"]
        headline["speedup_vs_fastest_peer"] = best_peer["median_ms"] / best_ours["median_ms"]
        headline["target_1.25x"] = headline["speedup_vs_fastest_peer"] >= 1.25
    if headline.get("flowjax_fraction_of_peak") is not None:
        headline["target_70pct_of_peak"] = headline["flowjax_fraction_of_peak"] >= 0.70
    notes.append("network: flowjax.nets.MLP(hidden=256, depth=3, time_dim=64) and its PyTorch mirror "
                 f"({nparams} parameters each); batch from flowjax.data 8gaussians, fixed across steps")
    return {"name": NAME, "description": DESCRIPTION, "cases": cases, "ratios": rat, "headline": headline, "notes": notes}
