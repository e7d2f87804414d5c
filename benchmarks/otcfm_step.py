"""OT-CFM training step with exact minibatch OT, batch 512 and 2048 (2D, MLP 3x256, Adam).

- ``flowjax ot_exact(solver=...)``: :func:`flowjax.losses.cfm` with
  :func:`flowjax.couplings.ot_exact`, jitted with the step, for each solver: ``"ott"`` (ott-jax's
  Hungarian solver, compiled into the step), ``"scipy"`` (``scipy.optimize.linear_sum_assignment``
  through ``jax.pure_callback``) and ``"pot"`` (POT's ``ot.emd`` through the same callback; what
  ``solver="auto"``, the default, picks on CPU, with scipy as its fallback).
- ``flowjax ot_sinkhorn(0.05)``: entropic OT via ott-jax (not exact; for reference).
- ``torchcfm exact (POT)``: ``ExactOptimalTransportConditionalFlowMatcher(sigma=0)`` (``ot.emd``
  on the host, then pairs drawn from the plan), same-shape PyTorch network, eager.
- Pipelined (training-loop throughput, ``PIPELINE_STEPS`` steps per timed call): the exact OT pairs
  of the next steps are solved on ``PIPELINE_WORKERS`` host threads while the current step runs
  (:func:`flowjax.data.prefetch`). ``flowjax ot_paired_batch_fn + prefetch``: pairs from
  :func:`flowjax.couplings.ot_paired_batch_fn` (POT), step ``losses.cfm(..., x0=paired)``. For
  transparency the same pipeline is given to the peer: ``torchcfm pairs + prefetch`` makes
  torchcfm's own ``OTPlanSampler.sample_plan`` pairs on the same threads and trains with
  ``ConditionalFlowMatcher(sigma=0)``. Both are per-step times of a loop, not of a single step.

ott's Hungarian solver is slow at 2048, so that case runs with fewer repetitions
(``iters_slow``); the row records how many.
"""

from __future__ import annotations

import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks import _common as C
from flowjax import losses
from flowjax.couplings import ot_exact, ot_paired_batch_fn, ot_sinkhorn
from flowjax.data import prefetch, sample_toy2d
from flowjax.experiment import bind
from flowjax.nets import MLP, init_params
from flowjax.train import make_train_step
from flowjax.train.state import create_train_state

NAME = "otcfm_step"
OURS = {
    "ott": "flowjax ot_exact(solver='ott')",
    "scipy": "flowjax ot_exact(solver='scipy')",
    "pot": "flowjax ot_exact(solver='pot') [auto on CPU]",
}
DESCRIPTION = "OT-CFM train step, exact minibatch OT, batch 512/2048 (flowjax/ott-jax vs torchcfm/POT)"
PIPELINED = "flowjax ot_paired_batch_fn + prefetch [pipelined loop]"
PEER_PIPELINED = "torchcfm pairs + prefetch [pipelined loop]"
HIDDEN, DEPTH, TIME_DIM, DIM = 256, 3, 64, 2
PIPELINE_WORKERS = 2  # host threads solving the next steps' OT problems (the machine's cores here)
PIPELINE_STEPS = 8  # training steps per timed call of the pipelined cases


def _time_pipelined(step_once, prefetched, ctx):
    """Per-step time of a loop of PIPELINE_STEPS steps fed by `prefetched` (a throughput)."""
    counter = itertools.count()

    def call():
        out = None
        for _ in range(PIPELINE_STEPS):
            out = step_once(prefetched(next(counter)))
        return out

    try:
        return C.time_calls(call, C.jax_sync, ctx, per_call=PIPELINE_STEPS)
    finally:
        prefetched.close()


def _flowjax_call(batch: int, coupling):
    net = MLP(hidden=HIDDEN, depth=DEPTH, time_dim=TIME_DIM)
    params = init_params(net, jax.random.key(0), jnp.zeros((2, DIM), jnp.float32))

    def loss_fn(p, key, x1):
        return losses.cfm(bind(net, p), key, x1, coupling=coupling)

    opt = optax.adam(1e-3)
    step = make_train_step(loss_fn, opt, ema_decay=None, nonfinite="apply")
    x1 = sample_toy2d("moons", jax.random.key(1), batch).astype(jnp.float32)
    run = jax.jit(step, donate_argnums=0)
    state = [create_train_state(params, opt, jax.random.key(2))]

    def call():
        state[0], m = run(state[0], x1)
        return m["loss"]

    return call, np.asarray(x1)


def _flowjax_pipelined_step(batch: int):
    """One OT-CFM step on pairs made outside it (``x0`` given), and the fixed data batch."""
    net = MLP(hidden=HIDDEN, depth=DEPTH, time_dim=TIME_DIM)
    params = init_params(net, jax.random.key(0), jnp.zeros((2, DIM), jnp.float32))

    def loss_fn(p, key, pair):
        return losses.cfm(bind(net, p), key, pair["x1"], x0=pair["x0"])

    opt = optax.adam(1e-3)
    run = jax.jit(make_train_step(loss_fn, opt, ema_decay=None, nonfinite="apply"), donate_argnums=0)
    state = [create_train_state(params, opt, jax.random.key(2))]

    def step_once(pair):
        state[0], m = run(state[0], pair)
        return m["loss"]

    return step_once, np.asarray(sample_toy2d("moons", jax.random.key(1), batch).astype(jnp.float32))


def run(ctx: C.Context) -> dict:
    batches = (512,) if ctx.quick else (512, 2048)
    cases = []
    torch = C.peer("torch", ctx)
    tcfm = C.peer("torchcfm", ctx) if torch is not None else None
    ot = C.peer("ot", ctx) if tcfm is not None else None
    pot_for_pipeline = C.peer("ot", ctx)  # the pipelined flowjax row needs POT, not torch
    if torch is not None:
        C.torch_setup(torch)
    slow_ctx = dataclasses.replace(ctx, warmup=0, iters=2 if not ctx.quick else 1)
    for batch in batches:
        cfg = f"batch={batch}"
        gflop = C.mlp_step_gflop(batch, C.mlp_dims(DIM, HIDDEN, DEPTH, TIME_DIM), backward=True)
        x1_np = None
        for impl, make, slow in (
            (OURS["ott"], lambda: ot_exact(solver="ott"), batch > 1024),
            (OURS["scipy"], lambda: ot_exact(solver="scipy"), False),
            (OURS["pot"], lambda: ot_exact(solver="pot"), False),
            ("flowjax ot_sinkhorn(0.05)", lambda: ot_sinkhorn(0.05), False),
        ):
            try:
                coupling = make()
            except ImportError as e:
                cases.append(C.skipped(impl, cfg, str(e)))
                continue
            call, x1_np = _flowjax_call(batch, coupling)
            c = slow_ctx if slow else ctx
            row = {"impl": impl, "config": cfg, **C.time_calls(call, C.jax_sync, c)}
            cases.append(C.with_flops(row, gflop, ctx))
            ctx.log(C.fmt_row(cases[-1]))
        if pot_for_pipeline is not None:
            step_once, x1_fixed = _flowjax_pipelined_step(batch)
            paired = ot_paired_batch_fn(lambda step: x1_fixed, seed=3, solver="pot")
            row = {"impl": PIPELINED, "config": cfg,
                   **_time_pipelined(step_once, prefetch(paired, workers=PIPELINE_WORKERS), ctx)}
            cases.append(C.with_flops(row, gflop, ctx))
            ctx.log(C.fmt_row(cases[-1]))
        if tcfm is None or ot is None:
            cases.append(C.skipped("torchcfm exact (POT)", cfg, C.missing_reason("torchcfm" if torch else "torch")))
            continue
        from torchcfm.conditional_flow_matching import ExactOptimalTransportConditionalFlowMatcher

        from benchmarks._torch_nets import MirrorMLP

        torch.manual_seed(0)
        model = MirrorMLP(DIM, HIDDEN, DEPTH, TIME_DIM)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        matcher = ExactOptimalTransportConditionalFlowMatcher(sigma=0.0)
        xt1 = torch.from_numpy(x1_np.copy())

        def step():
            opt.zero_grad(set_to_none=True)
            x0 = torch.randn_like(xt1)
            t, xt, ut = matcher.sample_location_and_conditional_flow(x0, xt1)
            loss = torch.pow(model(xt, t) - ut, 2).mean()
            loss.backward()
            opt.step()
            return loss.detach()

        row = {"impl": "torchcfm exact (POT)", "config": cfg, **C.time_calls(step, C.no_sync, ctx)}
        cases.append(C.with_flops(row, gflop, ctx))
        ctx.log(C.fmt_row(cases[-1]))

        from torchcfm.conditional_flow_matching import ConditionalFlowMatcher

        plain = ConditionalFlowMatcher(sigma=0.0)

        def peer_pairs(step):  # torchcfm's own exact-OT pairs, made on the prefetch threads
            x0 = torch.randn(xt1.shape, generator=torch.Generator().manual_seed(step))
            return matcher.ot_sampler.sample_plan(x0, xt1)

        def peer_step_once(pair):
            opt.zero_grad(set_to_none=True)
            t, xt, ut = plain.sample_location_and_conditional_flow(*pair)
            loss = torch.pow(model(xt, t) - ut, 2).mean()
            loss.backward()
            opt.step()
            return loss.detach()

        row = {"impl": PEER_PIPELINED, "config": cfg,
               **_time_pipelined(peer_step_once, prefetch(peer_pairs, workers=PIPELINE_WORKERS), ctx)}
        cases.append(C.with_flops(row, gflop, ctx))
        ctx.log(C.fmt_row(cases[-1]))
    rat, headline = {}, {}
    for batch in batches:
        cfg = f"batch={batch}"
        for ours in OURS.values():
            r = C.ratios(cases, ours, cfg).get("torchcfm exact (POT)")
            if r is not None:
                rat[f"{cfg}: torchcfm exact (POT) / {ours}"] = r
                if batch == max(batches):
                    headline[f"speedup_vs_torchcfm_b{batch} [{ours}]"] = r
    if headline:
        best = max(headline.values())
        headline[f"target_1.5x_b{max(batches)} (fastest ot_exact solver)"] = best >= 1.5
    for batch in batches:
        cfg = f"batch={batch}"
        r = C.ratios(cases, PIPELINED, cfg)
        for peer in ("torchcfm exact (POT)", PEER_PIPELINED):
            if peer in r:
                rat[f"{cfg}: {peer} / {PIPELINED}"] = r[peer]
        if batch == max(batches) and "torchcfm exact (POT)" in r:
            headline[f"speedup_vs_torchcfm_b{batch} [{PIPELINED}]"] = r["torchcfm exact (POT)"]
            headline[f"target_1.5x_b{batch} (pipelined loop vs torchcfm's in-loop step)"] = r["torchcfm exact (POT)"] >= 1.5
        if batch == max(batches) and PEER_PIPELINED in r:
            headline[f"pipelined_vs_pipelined_peer_b{batch}"] = r[PEER_PIPELINED]
    return {"name": NAME, "description": DESCRIPTION, "cases": cases, "ratios": rat, "headline": headline,
            "notes": ["data: flowjax.data moons; the coupling solve runs inside every step on both sides "
                      "(except the two [pipelined loop] rows)",
                      f"[pipelined loop] rows: {PIPELINE_WORKERS} host threads solve the next steps' OT problems "
                      f"while the current step runs; per-step time over loops of {PIPELINE_STEPS} steps; their "
                      f"compile_s is the first loop ({PIPELINE_STEPS} steps and the pipeline filling), not a compile",
                      "ot_exact(solver='auto') is 'pot' on the CPU backend ('scipy' without POT) and 'ott' elsewhere",
                      "torchcfm calls ot.emd with POT's default 1e5-iteration cap, which stops short of "
                      "optimality at batch 2048 in 64-D (not in this 2-D case); ot_exact(solver='pot') "
                      "raises the cap and falls back to scipy unless POT reports an optimum"]}
