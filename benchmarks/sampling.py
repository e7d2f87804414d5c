"""Sampling 10k points: Euler 100 steps and Heun 50 steps (100 NFE each), MLP 3x256 SiLU.

flowjax: :func:`flowjax.samplers.ode` (jitted) vs ``flow_matching``'s ``ODESolver.sample`` (which
calls torchdiffeq) and torchdiffeq's ``odeint`` called directly (``method="euler"`` /
``"heun2"``, fixed ``step_size``), both under ``torch.no_grad`` with the same-shape PyTorch
network. The weights are random (speed does not depend on them). GFLOP counts the dense layers'
matmuls of all network evaluations.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import _common as C
from flowjax.experiment import bind
from flowjax.nets import MLP, init_params
from flowjax.samplers import ode

NAME = "sampling"
DESCRIPTION = "sampling 10k points, Euler 100 / Heun 50 (flowjax vs flow_matching ODESolver, torchdiffeq)"
HIDDEN, DEPTH, TIME_DIM = 256, 3, 64
SOLVERS = (("euler", 100, "euler"), ("heun", 50, "heun2"))  # (flowjax name, steps, torchdiffeq name)


def run(ctx: C.Context) -> dict:
    n = 2000 if ctx.quick else 10_000
    d = 2
    net = MLP(hidden=HIDDEN, depth=DEPTH, time_dim=TIME_DIM)
    params = init_params(net, jax.random.key(0), jnp.zeros((2, d), jnp.float32))
    v = bind(net, params)
    x0 = jax.random.normal(jax.random.key(1), (n, d), jnp.float32)
    x0_np = np.asarray(x0)
    per_nfe = C.mlp_step_gflop(n, C.mlp_dims(d, HIDDEN, DEPTH, TIME_DIM), backward=False)
    cases = []
    torch = C.peer("torch", ctx)
    fm = C.peer("flow_matching", ctx) if torch is not None else None
    tdq = C.peer("torchdiffeq", ctx) if torch is not None else None
    if torch is not None:
        from benchmarks._torch_nets import MirrorMLP

        C.torch_setup(torch)
        torch.manual_seed(0)
        model = MirrorMLP(d, HIDDEN, DEPTH, TIME_DIM).eval()
        xt0 = torch.from_numpy(x0_np.copy())
    for name, steps, tname in SOLVERS:
        cfg = f"n={n} {name} {steps}"
        gflop = per_nfe * 100
        fn = jax.jit(lambda x, name=name, steps=steps: ode(v, x, solver=name, steps=steps))
        compiled, compile_s = C.aot_compile(fn, x0)
        row = {"impl": "flowjax", "config": cfg, **C.time_calls(lambda: fn(x0), C.jax_sync, ctx), **C.xla_memory(compiled)}
        row = C.with_aot_compile(row, compile_s)
        cases.append(C.with_flops(row, gflop, ctx))
        ctx.log(C.fmt_row(cases[-1]))
        if torch is None:
            cases.append(C.skipped("pytorch peers", cfg, C.missing_reason("torch")))
            continue
        if fm is not None:
            from flow_matching.solver import ODESolver
            from flow_matching.utils import ModelWrapper

            class Wrapped(ModelWrapper):
                def forward(self, x, t, **extras):
                    return self.model(x, t)

            solver = ODESolver(velocity_model=Wrapped(model))
            grid = torch.tensor([0.0, 1.0])

            def fm_call(tname=tname, steps=steps):
                return solver.sample(x_init=xt0, step_size=1.0 / steps, method=tname, time_grid=grid)

            row = {"impl": "flow_matching ODESolver", "config": cfg, **C.time_calls(fm_call, C.no_sync, ctx)}
            cases.append(C.with_flops(row, gflop, ctx))
            ctx.log(C.fmt_row(cases[-1]))
        else:
            cases.append(C.skipped("flow_matching ODESolver", cfg, C.missing_reason("flow_matching")))
        if tdq is not None:
            grid = torch.tensor([0.0, 1.0])

            def td_call(tname=tname, steps=steps):
                with torch.no_grad():
                    return tdq.odeint(lambda t, x: model(x, t), xt0, grid, method=tname, options={"step_size": 1.0 / steps})[-1]

            row = {"impl": "torchdiffeq odeint", "config": cfg, **C.time_calls(td_call, C.no_sync, ctx)}
            cases.append(C.with_flops(row, gflop, ctx))
            ctx.log(C.fmt_row(cases[-1]))
        else:
            cases.append(C.skipped("torchdiffeq odeint", cfg, C.missing_reason("torchdiffeq")))
    rat = {}
    headline = {}
    for name, steps, _ in SOLVERS:
        cfg = f"n={n} {name} {steps}"
        for k, val in C.ratios(cases, "flowjax", cfg).items():
            rat[f"{cfg}: {k} / flowjax"] = val
            if k == "flow_matching ODESolver":
                headline[f"{name}{steps}_speedup_vs_ODESolver"] = val
    if headline:
        headline["target_1.5x"] = all(v >= 1.5 for v in headline.values())
    return {"name": NAME, "description": DESCRIPTION, "cases": cases, "ratios": rat, "headline": headline,
            "notes": ["100 network evaluations per sample in both configurations; random weights"]}
