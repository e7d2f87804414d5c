"""boss experiment: uniform vs Bellman Euler, BOSS straightening vs reflow fine-tune (spec boss.md §5)."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from experiments import _distill_common as common
from experiments.boss.config import CLAIM
from flowjax import experiment, losses, samplers
from flowjax.data import make_batch_fn
from flowjax.nets import MLP, init_params
from flowjax.samplers import boss
from flowjax.testing import GaussianMixtureFlow


def run(cfg, out_dir: Path) -> dict:
    means = jnp.asarray(common.ring_means(cfg.modes, cfg.radius))
    flow = GaussianMixtureFlow(means, jnp.full((cfg.modes,), cfg.std), jnp.ones((cfg.modes,)))
    net = MLP(hidden=cfg.hidden, depth=cfg.depth)
    params = init_params(net, jax.random.key(cfg.seed), jnp.zeros((2, 2)))
    teacher_p, t_hist = common.train(
        common.model_loss(net, losses.cfm), params, batch_fn=common.sampler_batch_fn(flow.sample_data, cfg.teacher_batch, 11),
        steps=cfg.teacher_steps, seed=cfg.seed, learning_rate=cfg.teacher_lr, ema_decay=0.999)
    teacher = experiment.bind(net, teacher_p)

    # Evaluation: shared noises, the teacher's own 100-step Euler endpoints, a data sample with equal counts per mode.
    x_eval = jax.random.normal(jax.random.key(20), (cfg.eval_samples, 2))
    ref = samplers.ode(teacher, x_eval, solver="euler", steps=cfg.kmax)
    per = cfg.eval_samples // cfg.modes
    data_ref = (jnp.repeat(means, per, axis=0) + cfg.std * jax.random.normal(jax.random.key(21), (per * cfg.modes, 2)))

    cost, fine = boss.cost_matrix(teacher, jax.random.normal(jax.random.key(22), (cfg.cost_samples, 2)), kmax=cfg.kmax)
    x_traj = jax.random.normal(jax.random.key(23), (cfg.trajectories, 2))
    res, hists, panels, curves = {}, {"teacher": t_hist}, {"data": data_ref}, {}
    # Reflow pairs from the teacher's 100-step Euler (one set, shared by every K).
    reflow_x1 = samplers.ode(teacher, x_traj, solver="euler", steps=cfg.kmax)
    for k in cfg.budgets:
        idx, val = boss.bellman_path(cost, k)
        grid = fine[idx]
        res[f"bellman_times_K{k}"] = [float(g) for g in grid]
        res[f"dp_cost_K{k}"] = val
        pairs = boss.straightening_pairs(teacher, x_traj, path_indices=idx, kmax=cfg.kmax)
        bf = make_batch_fn({"x1": pairs["x_b"], "x_a": pairs["x_a"], "t_a": pairs["t_a"], "t_b": pairs["t_b"]},
                           cfg.finetune_batch, seed=cfg.seed)
        loss_boss = lambda p, key, b: losses.boss_straightening(experiment.bind(net, p), key, b["x1"], x_a=b["x_a"],
                                                                t_a=b["t_a"], t_b=b["t_b"])
        p_boss, hists[f"BOSS K={k}"] = common.train(loss_boss, teacher_p, batch_fn=bf, steps=cfg.finetune_steps,
                                                    seed=cfg.seed, learning_rate=cfg.finetune_lr)
        bf_r = make_batch_fn({"x1": reflow_x1, "x0": x_traj}, cfg.finetune_batch, seed=cfg.seed)
        p_ref, hists[f"reflow K={k}"] = common.train(common.model_loss(net, losses.reflow), teacher_p, batch_fn=bf_r,
                                                     steps=cfg.finetune_steps, seed=cfg.seed, learning_rate=cfg.finetune_lr)
        runs = {
            "a_uniform": lambda z: samplers.ode(teacher, z, solver="euler", steps=k),
            "b_bellman": lambda z: samplers.ode(teacher, z, solver="euler", times=grid),
            "c_boss": lambda z, p=p_boss: samplers.ode(experiment.bind(net, p), z, solver="euler", times=grid),
            "d_reflow": lambda z, p=p_ref: samplers.ode(experiment.bind(net, p), z, solver="euler", steps=k),
        }
        for name, fn in runs.items():
            out = fn(x_eval)
            res[f"mse_{name}_K{k}"] = common.mse(out, ref)
            res[f"sw2_{name}_K{k}"] = common.sw2(out, data_ref)
            res[f"sec_per_sample_{name}_K{k}"] = common.seconds_per_sample(fn, x_eval)
            curves.setdefault(name, ([], []))
            curves[name][0].append(k)
            curves[name][1].append(res[f"sw2_{name}_K{k}"])
            if k == cfg.budgets[0]:
                panels[f"{name} K={k}"] = out
    k2 = cfg.budgets[0]
    checks = {
        "sw2_boss_lt_half_uniform_K2": res[f"sw2_c_boss_K{k2}"] < 0.5 * res[f"sw2_a_uniform_K{k2}"],
        "mse_boss_le_reflow_K2": res[f"mse_c_boss_K{k2}"] <= res[f"mse_d_reflow_K{k2}"],
    }
    report_only = {f"mse_bellman_le_uniform_K{k}": res[f"mse_b_bellman_K{k}"] <= res[f"mse_a_uniform_K{k}"] for k in cfg.budgets}
    res["sw2_teacher_100step"] = common.sw2(ref, data_ref)
    plots = [
        experiment.plot_samples_2d(out_dir / "samples.png", panels),
        experiment.plot_curves(out_dir / "sw2_vs_nfe.png", curves, xlabel="NFE (Euler steps)", ylabel="SW2 to data"),
        experiment.plot_loss_curves(out_dir / "loss.png", hists),
    ]
    return {
        "claim": CLAIM, "passed": bool(all(checks.values())), "metrics": res,
        "baseline": {"name": "(a) uniform Euler, (d) reflow fine-tune", "checks": checks, "report_only": report_only},
        "plots": plots,
        "notes": (f"Teacher: CFM MLP {cfg.depth}x{cfg.hidden} trained {cfg.teacher_steps} steps on the 8-Gaussian ring "
                  f"(radius {cfg.radius}, std {cfg.std}); Kmax {cfg.kmax}, cost from {cfg.cost_samples} noises; fine-tunes "
                  f"{cfg.finetune_steps} steps, batch {cfg.finetune_batch}, lr {cfg.finetune_lr}, {cfg.trajectories} trajectories."),
    }
