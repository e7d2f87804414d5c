"""mdt-dist experiment (spec mdt-dist.md §5): VM, VM+VD, CM baseline, VM continuous (JVP) on 3D torus points."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from experiments import _distill_common as common
from experiments.mdt_dist.config import CLAIM
from flowjax import experiment, losses, samplers
from flowjax.nets import MLP, init_params
from flowjax.samplers.first_order import to_data_sample


def sample_torus(key, n, big_r=1.0, small_r=0.35):
    """w.p. 0.7 a torus-surface point (both angles uniform); w.p. 0.3 the inner equator ring + N(0, 0.02^2)."""
    kc, ka, kb, kn = jax.random.split(key, 4)
    th = jax.random.uniform(ka, (n,), maxval=2 * jnp.pi)
    ph = jax.random.uniform(kb, (n,), maxval=2 * jnp.pi)
    torus = jnp.stack([(big_r + small_r * jnp.cos(ph)) * jnp.cos(th), (big_r + small_r * jnp.cos(ph)) * jnp.sin(th),
                       small_r * jnp.sin(ph)], axis=1)
    ring = jnp.stack([(big_r - small_r) * jnp.cos(th), (big_r - small_r) * jnp.sin(th), jnp.zeros_like(th)], axis=1)
    ring = ring + 0.02 * jax.random.normal(kn, (n, 3))
    return jnp.where((jax.random.uniform(kc, (n,)) < 0.7)[:, None], torus, ring)


def run(cfg, out_dir: Path) -> dict:
    net = MLP(hidden=cfg.hidden, depth=cfg.depth)
    p0 = init_params(net, jax.random.key(cfg.seed), jnp.zeros((2, 3)))
    teacher_p, t_hist = common.train(common.model_loss(net, losses.cfm), p0,
                                     batch_fn=common.sampler_batch_fn(sample_torus, cfg.teacher_batch, 11),
                                     steps=cfg.teacher_steps, seed=cfg.seed, learning_rate=1e-3, ema_decay=0.999)
    teacher = experiment.bind(net, teacher_p)
    kw = dict(teacher=teacher, delta=cfg.delta, d_norm=True, d_norm_c=cfg.d_norm_c)
    students = {
        "vm": (losses.velocity_matching, dict(kw, mode="discrete")),
        "vm_vd": (losses.mdt_dist, dict(kw, mode="discrete")),
        "cm": (losses.consistency_distillation, dict(teacher=teacher, delta=cfg.delta)),
        "vm_continuous": (losses.velocity_matching, dict(kw, mode="continuous")),
    }
    data_ref = sample_torus(jax.random.key(30), cfg.eval_samples)
    x_eval = jax.random.normal(jax.random.key(31), (cfg.eval_samples, 3))
    res, hists = {}, {"teacher": t_hist}
    t_out = samplers.ode(teacher, x_eval, solver="euler", steps=cfg.teacher_euler)
    res["sw2_teacher_25step"] = common.sw2(t_out, data_ref)
    for n in (1, 2):
        res[f"sw2_teacher_{n}step"] = common.sw2(samplers.ode(teacher, x_eval, solver="euler", steps=n), data_ref)
    res["sec_per_sample_teacher_25step"] = common.seconds_per_sample(
        lambda z: samplers.ode(teacher, z, solver="euler", steps=cfg.teacher_euler), x_eval)
    panels = {"data (x, y)": data_ref[:, :2], "teacher 25 (x, y)": t_out[:, :2]}
    curves = {"teacher Euler": ([1, 2, cfg.teacher_euler], [res["sw2_teacher_1step"], res["sw2_teacher_2step"],
                                                             res["sw2_teacher_25step"]])}
    for name, (loss, extra) in students.items():
        p, hists[name] = common.train(common.model_loss(net, loss, **extra), teacher_p,
                                      batch_fn=common.sampler_batch_fn(sample_torus, cfg.student_batch, 12),
                                      steps=cfg.student_steps, seed=cfg.seed, learning_rate=cfg.student_lr)
        ub = experiment.bind(net, p)
        sws = []
        for n in (1, 2):
            out = to_data_sample(ub, x_eval, steps=n)
            res[f"sw2_{name}_{n}step"] = common.sw2(out, data_ref)
            res[f"sw2_vs_teacher_{name}_{n}step"] = common.sw2(out, t_out)
            sws.append(res[f"sw2_{name}_{n}step"])
            if n == 1:
                panels[f"{name} 1 step (x, y)"] = out[:, :2]
        res[f"sec_per_sample_{name}_1step"] = common.seconds_per_sample(lambda z: to_data_sample(ub, z, steps=1), x_eval)
        curves[name] = ([1, 2], sws)
    checks = {
        "vmvd_lt_half_cm_1step": res["sw2_vm_vd_1step"] < 0.5 * res["sw2_cm_1step"],
        "vmvd_le_vm_1step": res["sw2_vm_vd_1step"] <= res["sw2_vm_1step"],
        "vmvd_2step_near_teacher": res["sw2_vm_vd_2step"] <= 1.5 * res["sw2_teacher_25step"] + 0.02,
    }
    plots = [
        experiment.plot_samples_2d(out_dir / "samples_xy.png", panels, lim=1.8),
        experiment.plot_curves(out_dir / "sw2_vs_nfe.png", curves, xlabel="NFE", ylabel="SW2 to data", logx=True, logy=True),
        experiment.plot_loss_curves(out_dir / "loss.png", hists),
    ]
    return {
        "claim": CLAIM, "passed": bool(all(checks.values())), "metrics": res,
        "baseline": {"name": "CM distillation, VM only, teacher 25-step Euler", "checks": checks},
        "plots": plots,
        "notes": (f"Teacher: CFM MLP {cfg.depth}x{cfg.hidden} trained {cfg.teacher_steps} steps on torus+ring points; "
                  f"students initialised from it, {cfg.student_steps} steps at batch {cfg.student_batch}, lr {cfg.student_lr}; "
                  "s ~ logit-normal(-1, 1), delta 0.01, d_norm on; no CFG (unconditional toy)."),
    }
