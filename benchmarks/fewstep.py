"""Few-step value: samples per second at equal quality, 1-2 NFE MeanFlow/SplitMeanFlow vs 100-step FM.

A SHORT training first (this is a speed benchmark, not the papers' quality claims; those are the
``meanflow`` and ``splitmeanflow`` experiments): FM (Euler on the diagonal ``u(x, t, t)``),
SplitMeanFlow and MeanFlow with the same average-velocity MLP (hidden 128, depth 4, the
splitmeanflow experiment's net), the same seed and ``steps`` (1500; ``--quick``: 150) on the
8-Gaussian ring, with the experiments' hyperparameters (``experiments/_fewstep_common.py``).

Quality: sliced W2 (the specs' definition) of 10k samples to a stratified data reference.
"Equal quality" means SW2 within 10% of FM with 100 Euler steps (R). Speed: samples/s of each
jitted sampler on 10k points; the peers run the 100-step Euler of the same FM algorithm
(``flow_matching``'s ``ODESolver`` and torchdiffeq) with a same-width PyTorch network (one time
input, slightly cheaper than ours), so their quality is R by construction and only their speed is
measured.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from benchmarks import _common as C

NAME = "fewstep"
DESCRIPTION = "few-step value: samples/s at SW2 within 10% of 100-step FM (short training; MeanFlow/SplitMeanFlow vs peers)"


def run(ctx: C.Context) -> dict:
    from experiments import _fewstep_common as F

    base = ml_collections.ConfigDict(dict(
        hidden=128, depth=4, time_dim=16, batch_size=512, steps=150 if ctx.quick else 1500, learning_rate=1e-3,
        ema_decay=0.99, seed=0, mf_mean=0.4, mf_std=1.0, mf_fm_fraction=0.75, mf_norm_p=1.0, mf_norm_eps=0.01,
        smf_fm_fraction=0.5,
    ))
    n = 2000 if ctx.quick else 10_000
    ds = "8gaussians"
    ref = F.stratified_reference(ds, jax.random.key(10_000), n)
    x0 = jax.random.normal(jax.random.key(20_000), (n, 2), jnp.float32)
    net = F.make_u_net(base.hidden, base.depth, base.time_dim)
    table = F.model_table(base)
    cases, quality, train_s = [], {}, {}
    samplers = {"fm": [100, 1, 2], "splitmeanflow": [1, 2], "meanflow": [1, 2]}
    for name, nfes in samplers.items():
        loss, kw, euler = table[name]
        params, _, secs = F.train(net, loss, dataset=ds, cfg=base, seed=base.seed, **kw)
        train_s[name] = secs
        ctx.log(f"  trained {name}: {base.steps} steps in {secs:.1f} s")
        from flowjax.experiment import bind
        from flowjax.samplers import flowmap, uniform_grid

        u = bind(net, params)
        for k in nfes:
            fn = F.diagonal(u) if euler else u
            run_k = jax.jit(lambda x, fn=fn, k=k: flowmap(fn, x, uniform_grid(k)))
            xs = run_k(x0)
            sw = F.sw2(xs, ref)
            label = f"flowjax {name} {k} NFE" + (" (Euler)" if euler else "")
            quality[label] = sw
            row = {"impl": label, "config": f"n={n}", "sw2": sw, **C.time_calls(lambda: run_k(x0), C.jax_sync, ctx)}
            row["samples_per_s"] = n / (row["median_ms"] / 1e3)
            cases.append(row)
            ctx.log(C.fmt_row(row) + f"  SW2 {sw:.4f}  {row['samples_per_s']:.3g} samples/s")
    r_label = "flowjax fm 100 NFE (Euler)"
    R = quality[r_label]
    floor = F.sw2(F.stratified_reference(ds, jax.random.key(10_001), n), ref)
    for r in cases:
        r["within_10pct_of_R"] = bool(r["sw2"] <= 1.10 * R)

    torch = C.peer("torch", ctx)
    fm = C.peer("flow_matching", ctx) if torch is not None else None
    tdq = C.peer("torchdiffeq", ctx) if torch is not None else None
    if torch is None:
        cases.append(C.skipped("pytorch peers", f"n={n}", C.missing_reason("torch")))
    else:
        from benchmarks._torch_nets import MirrorMLP

        C.torch_setup(torch)
        torch.manual_seed(0)
        model = MirrorMLP(2, base.hidden, base.depth, base.time_dim).eval()
        xt0 = torch.from_numpy(np.asarray(x0).copy())
        grid = torch.tensor([0.0, 1.0])
        peers = []
        if fm is not None:
            from flow_matching.solver import ODESolver
            from flow_matching.utils import ModelWrapper

            class Wrapped(ModelWrapper):
                def forward(self, x, t, **extras):
                    return self.model(x, t)

            solver = ODESolver(velocity_model=Wrapped(model))
            peers.append(("flow_matching ODESolver Euler 100", lambda: solver.sample(x_init=xt0, step_size=0.01, method="euler", time_grid=grid)))
        else:
            cases.append(C.skipped("flow_matching ODESolver Euler 100", f"n={n}", C.missing_reason("flow_matching")))
        if tdq is not None:
            def td():
                with torch.no_grad():
                    return tdq.odeint(lambda t, x: model(x, t), xt0, grid, method="euler", options={"step_size": 0.01})[-1]

            peers.append(("torchdiffeq Euler 100", td))
        else:
            cases.append(C.skipped("torchdiffeq Euler 100", f"n={n}", C.missing_reason("torchdiffeq")))
        for label, call in peers:
            row = {"impl": label, "config": f"n={n}", "sw2_assumed": R, **C.time_calls(call, C.no_sync, ctx)}
            row["samples_per_s"] = n / (row["median_ms"] / 1e3)
            cases.append(row)
            ctx.log(C.fmt_row(row) + f"  {row['samples_per_s']:.3g} samples/s")

    ok = [r for r in cases if r.get("within_10pct_of_R") and "NFE" in r["impl"] and " 100 NFE" not in r["impl"]]
    headline = {"R_fm_euler100_sw2": R, "data_floor_sw2": floor, "train_steps": base.steps, "train_seconds": train_s}
    rat = {}
    if ok:
        best = max(ok, key=lambda r: r["samples_per_s"])
        headline["best_fewstep_at_equal_quality"] = best["impl"]
        headline["best_fewstep_sw2"] = best["sw2"]
        headline["best_fewstep_samples_per_s"] = best["samples_per_s"]
        for r in cases:
            if "samples_per_s" in r and r is not best and ("Euler 100" in r["impl"] or " 100 NFE" in r["impl"]):
                rat[f"{best['impl']} samples/s / {r['impl']}"] = best["samples_per_s"] / r["samples_per_s"]
    else:
        headline["best_fewstep_at_equal_quality"] = None
        headline["note"] = "no 1-2 NFE sampler reached SW2 within 10% of R after this short training"
    headline["speedups"] = rat
    return {"name": NAME, "description": DESCRIPTION, "cases": cases, "ratios": rat, "headline": headline,
            "notes": [f"short training: {base.steps} steps, batch {base.batch_size}, EMA {base.ema_decay}; quality numbers are "
                      "not the papers' claims", "peer quality = R (same 100-step Euler FM algorithm); peers' network is a "
                      "same-width one-time MLP with random weights (timing only)"]}
