"""flow-grpo experiment: marginal check of the Flow-GRPO SDE and GRPO training (spec euphonium.md §5 (a))."""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np

from experiments.flow_grpo.config import CLAIM
from experiments.flow_grpo.toy import Variant, ring, train
from flowjax import align, experiment


def run(cfg, out_dir: Path) -> dict:
    flow, _ = ring()
    t_start = 1e-3
    times = np.linspace(t_start, 1.0, cfg.marginal_steps + 1)
    x_start = flow.sample_marginal(jax.random.key(1), cfg.marginal_samples, t_start)
    diff = align.flow_grpo_diffusion(cfg.a, t_floor=t_start)
    roll = jax.jit(lambda k, x: align.sde_rollout(flow.velocity, k, x, times=times, diffusion=diff)["xs"][-1])
    x_sde = np.asarray(roll(jax.random.key(2), x_start))
    ref = np.asarray(flow.sample_data(jax.random.key(3), 400000))
    mean_err = float(np.abs(x_sde.mean(0) - ref.mean(0)).max())
    cov_err = float(np.linalg.norm(np.cov(x_sde.T) - np.cov(ref.T)) / np.linalg.norm(np.cov(ref.T)))
    metrics = {"marginal_mean_err_t1": mean_err, "marginal_cov_rel_err_t1": cov_err}
    ok = [mean_err < 0.05 and cov_err < 0.05]
    curves, panels = {}, {"SDE (a=0.7) samples at t=1": x_sde[:4000], "data": ref[:4000]}
    for seed in cfg.seeds:
        r = train(Variant("a", "flow_grpo", cfg.a), seed=seed, groups=cfg.groups, group_size=cfg.group_size,
                  iterations=cfg.iterations, lr=cfg.lr, steps=cfg.steps, eval_samples=cfg.eval_samples)
        metrics[f"start_seed{seed}"], metrics[f"final_seed{seed}"] = r["start"], r["final"]
        metrics[f"gain_seed{seed}"] = r["final"] - r["start"]
        ok.append(r["final"] >= r["start"] + 1.0)
        curves[f"seed {seed}"] = (list(range(1, cfg.iterations + 1)), list(r["curve"]))
        if seed == cfg.seeds[0]:
            panels["after Flow-GRPO (ODE)"] = r["samples"]
    metrics["final_mean"] = float(np.mean([metrics[f"final_seed{s}"] for s in cfg.seeds]))
    plots = [
        experiment.plot_curves(out_dir / "reward_curve.png", curves, xlabel="iteration", ylabel="mean reward (ODE samples)"),
        experiment.plot_samples_2d(out_dir / "samples.png", panels),
    ]
    return {
        "claim": CLAIM,
        "passed": bool(all(ok)),
        "metrics": metrics,
        "plots": plots,
        "notes": ("Policy v_ref + theta_k on the exact 8-Gaussian ring (radius 2, std 0.1), reward -|x1 - mode0|^2, T=10, "
                  "B=16 groups x G=16, shared x0 per group, on-policy, lr 0.05, log-density summed over dims and steps."),
    }
