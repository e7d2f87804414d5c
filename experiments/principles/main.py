"""principles experiment: solver orders, error vs NFE and the SDE family on the exact 8-mode flow."""

from __future__ import annotations

import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from experiments.principles.config import CLAIM
from flowjax import experiment, metrics, schedules
from flowjax.paths import linear_path, vp_path
from flowjax.samplers import sde_family, solvers
from flowjax.testing import GaussianMixtureFlow

# name -> (solver, kwargs, grid kind); "t": uniform in t, "lam": uniform in lambda, "edm": EDM rho-grid.
SOLVERS = {
    "euler": ("euler", {}, "t"),
    "midpoint": ("midpoint", {}, "t"),
    "heun": ("heun", {}, "t"),
    "rk4": ("rk4", {}, "t"),
    "ddim": ("ddim", {}, "lam"),
    "dpm_solver2": ("dpm_solver2", {}, "lam"),
    "dpm_solver3": ("dpm_solver3", {}, "lam"),
    "dpmpp_2s": ("dpmpp_2s", {}, "lam"),
    "dpmpp_2m": ("dpmpp_2m", {}, "lam"),
    "dpmpp_2m_edm": ("dpmpp_2m", {}, "edm"),
    "dpmpp_3m": ("dpmpp_3m", {}, "lam"),
    "dpmpp_3m_ss": ("dpmpp_3m", {"warmup": "singlestep"}, "lam"),
    "unipc2": ("unipc", {"order": 2}, "lam"),
}
PLOTTED = ("euler", "heun", "rk4", "ddim", "dpmpp_2m", "dpm_solver3", "unipc2")
THEORY = {"euler": 1, "midpoint": 2, "heun": 2, "rk4": 4, "ddim": 1, "dpm_solver2": 2, "dpm_solver3": 3,
          "dpmpp_2s": 2, "dpmpp_2m": 2, "dpmpp_2m_edm": 2, "dpmpp_3m": 2, "dpmpp_3m_ss": 3, "unipc2": 3}


def ring_flow(cfg, path) -> GaussianMixtureFlow:
    ang = 2 * jnp.pi * jnp.arange(cfg.modes) / cfg.modes
    means = cfg.radius * jnp.stack([jnp.cos(ang), jnp.sin(ang)], 1)
    return GaussianMixtureFlow(means, cfg.std * jnp.ones(cfg.modes), jnp.ones(cfg.modes), path=path)


def grid_for(kind: str, path, steps: int, t0: float, t1: float):
    if kind == "t":
        return schedules.uniform_grid(steps, t_min=t0, t_max=t1)
    if kind == "lam":
        return schedules.log_snr_grid(path, steps, t_min=t0, t_max=t1)
    sig = schedules.edm_sigma(path, jnp.asarray([t1, t0]))
    g = schedules.edm_grid(steps, sigma_min=float(sig[0]), sigma_max=float(sig[1]), path=path)
    return g.at[0].set(t0).at[-1].set(t1)


def run_solver(flow, x, name, steps, t0, t1):
    solver, kwargs, kind = SOLVERS[name]
    grid = grid_for(kind, flow.path, steps, t0, t1)
    out = solvers.sample(flow.velocity, x, times=grid, solver=solver, path=flow.path, scan=False, **kwargs)
    warm = kwargs.get("warmup", "lower_order")
    return out, solvers.nfe(solver, steps, warmup=warm)


def mean_error(a, b) -> float:
    return float(jnp.mean(jnp.linalg.norm(a - b, axis=-1)))


def slope(ns, errs) -> float:
    return float(np.polyfit(np.log(np.asarray(ns, float)), np.log(np.asarray(errs)), 1)[0])


def run(cfg, out_dir: Path) -> dict:
    jax.config.update("jax_enable_x64", True)
    key = jax.random.key(cfg.seed)
    k_order, k_sde, k_table, k_proj = jax.random.split(key, 4)
    paths = {"linear": linear_path(), "vp": vp_path()}
    m, plots, tables = {}, [], {}

    # ---- 1. empirical orders (linear path is the criterion; VP reported) ----------------------
    order_curves = {}
    ta, tb = cfg.order_t
    for pname in cfg.order_paths:
        flow = ring_flow(cfg, paths[pname])
        x = flow.sample_marginal(k_order, cfg.order_samples, ta)
        ref = flow.flow_map(x, ta, tb)
        for name in cfg.solvers:
            errs = [mean_error(run_solver(flow, x, name, n, ta, tb)[0], ref) for n in cfg.order_steps]
            m[f"order_{pname}_{name}"] = slope(cfg.order_steps, errs)
            tables.setdefault(f"order_errors_{pname}", {})[name] = errs
            if pname == "linear" and name in ("euler", "heun", "dpmpp_2m", "rk4", "dpm_solver3", "unipc2"):
                order_curves[name] = (list(cfg.order_steps), errs)
    plots.append(experiment.plot_curves(out_dir / "orders_linear.png", order_curves, xlabel="steps N",
                                        ylabel="mean endpoint error", logx=True, logy=True,
                                        title="linear path, t: 0.05 -> 0.95"))

    # ---- 2. marginal-preserving SDE family ------------------------------------------------------
    path = paths["linear"]
    flow = ring_flow(cfg, path)
    n = cfg.sde_samples
    proj = metrics.random_directions(k_proj, cfg.num_projections, 2, jnp.float64)
    sw = lambda a, b: float(metrics.sliced_wasserstein(a, b, projections=proj))  # noqa: E731
    floor = float(np.mean([sw(flow.sample_data(jax.random.fold_in(k_sde, 100 + 2 * i), n),
                              flow.sample_data(jax.random.fold_in(k_sde, 101 + 2 * i), n)) for i in range(cfg.floor_pairs)]))
    refs = [flow.sample_data(jax.random.fold_in(k_sde, 1000 + i), n) for i in range(cfg.reference_sets)]
    m["sde_sw2_floor"] = floor
    s0, s1 = cfg.sde_t
    grid = schedules.uniform_grid(cfg.sde_steps, t_min=s0, t_max=s1)
    x_start = flow.sample_marginal(jax.random.fold_in(k_sde, 1), n, s0)
    panels = {"data": refs[0]}
    sde_ok = []
    for frac in cfg.sde_eps2_fractions:
        diff = sde_family.reverse_sde_diffusion(path, eta=math.sqrt(frac))
        run_sde = jax.jit(lambda k, x: sde_family.sample_sde(flow.velocity, k, x, times=grid, path=path,
                                                             diffusion=diff, method="em", final_denoise=True))
        xs = run_sde(jax.random.fold_in(k_sde, 2), x_start)
        nearest = jnp.argmin(jnp.sum((xs[:, None, :] - flow.means[None]) ** 2, -1), -1)
        occ = np.bincount(np.asarray(nearest), minlength=cfg.modes) / n
        dev = float(np.max(np.abs(occ - 1.0 / cfg.modes)))
        sw_s = float(np.mean([sw(xs, r) for r in refs]))
        tag = f"eps2_{frac:g}g2"
        m[f"sde_{tag}_max_occupancy_dev"] = dev
        m[f"sde_{tag}_sw2"] = sw_s
        m[f"sde_{tag}_sw2_over_floor"] = sw_s / floor
        sde_ok.append(dev <= 0.02 and sw_s <= 1.5 * floor)
        panels[f"EM, eps^2 = {frac:g} g^2"] = xs
    plots.append(experiment.plot_samples_2d(out_dir / "sde_family.png", panels, lim=3.0))

    # ---- 3. error vs NFE table (linear and VP) -------------------------------------------------
    c0, c1 = cfg.table_t
    table = {}
    for pname in cfg.table_paths:
        flow = ring_flow(cfg, paths[pname])
        x = flow.sample_marginal(k_table, cfg.table_samples, c0)
        ref = flow.flow_map(x, c0, c1)
        curves = {}
        for name in cfg.solvers:
            solver, kwargs, _ = SOLVERS[name]
            per = solvers.nfe(solver, 2, warmup=kwargs.get("warmup", "lower_order")) / 2.0
            row = {}
            for budget in cfg.table_nfe:
                steps = max(1, int(budget // per))
                out, used = run_solver(flow, x, name, steps, c0, c1)
                row[int(used)] = mean_error(out, ref)
            table[f"{pname}/{name}"] = row
            if name in PLOTTED:
                kept = [(k, e) for k, e in row.items() if e < 10.0]  # drop one-step blow-ups from the plot
                curves[name] = ([k for k, _ in kept], [e for _, e in kept])
            for used, err in row.items():
                m[f"err_{pname}_{name}_nfe{used}"] = err
        for rtol in cfg.adaptive_rtols:
            out, calls = solvers.sample_adaptive(flow.velocity, x, t0=c0, t1=c1, path=flow.path, rtol=rtol, atol=rtol)
            table.setdefault(f"{pname}/tsit5", {})[int(calls)] = mean_error(out, ref)
        curves["tsit5 (adaptive)"] = (list(table[f"{pname}/tsit5"]), list(table[f"{pname}/tsit5"].values()))
        plots.append(experiment.plot_curves(out_dir / f"error_vs_nfe_{pname}.png", curves, xlabel="NFE",
                                            ylabel="mean endpoint error", logx=True, logy=True,
                                            title=f"{pname} path, t: {c0:g} -> {c1:g}"))

    # ---- orderings (reported, not part of the pass criterion) ------------------------------------
    def err_at(pname, name, budget):
        row = table.get(f"{pname}/{name}", {})
        return row[min(row, key=lambda k: abs(k - budget))] if row else float("nan")

    for pname in cfg.table_paths:
        for budget in cfg.table_nfe:
            e_euler = err_at(pname, "euler", budget)
            for name in [s for s in ("dpmpp_2m", "unipc2", "ddim") if s in cfg.solvers]:
                m[f"ordering_{pname}_{name}_beats_euler_at_{budget}nfe"] = float(err_at(pname, name, budget) < e_euler)

    orders_ok = [abs(m["order_linear_euler"] + 1) <= 0.3, abs(m["order_linear_heun"] + 2) <= 0.3,
                 abs(m["order_linear_dpmpp_2m"] + 2) <= 0.3, m["order_linear_rk4"] <= -2.7]
    m["criterion_orders"] = float(all(orders_ok))
    m["criterion_sde_family"] = float(all(sde_ok))
    return {
        "claim": CLAIM,
        "passed": bool(all(orders_ok) and all(sde_ok)),
        "metrics": m,
        "baseline": {"theoretical_orders": THEORY},
        "tables": {"error_vs_nfe": {k: {str(n): e for n, e in v.items()} for k, v in table.items()},
                   **{k: dict(zip([str(s) for s in cfg.order_steps], v)) if isinstance(v, list) else
                      {nm: dict(zip([str(s) for s in cfg.order_steps], e)) for nm, e in v.items()}
                      for k, v in tables.items()}},
        "plots": plots,
        "notes": ("Analytic oracle (no training). Orders: mean Euclidean endpoint error vs the oracle's "
                  "Dopri8 flow map (rtol 1e-10), slopes fitted over N in "
                  f"{tuple(cfg.order_steps)}. Generic solvers on a t-uniform grid, exponential integrators on a "
                  "lambda-uniform grid (dpmpp_2m_edm: EDM rho = 7 grid). dpmpp_3m uses the reference lower-order "
                  "warm-up (global order 2 asymptotically), dpmpp_3m_ss a DPM-Solver++(2S) first step (order 3). "
                  "The 3M update's h^2 D'' coefficient carries a factor 2 derived here (see solvers.dpmpp_3m_step). "
                  "SW2 as the spec defines it: fixed directions, sqrt(mean W2^2), floor = mean over data-vs-data "
                  "pairs, samples vs several fresh reference sets."),
    }
