"""arcflow experiment (spec arcflow.md §5): ArcFlow K=4 vs linear K=1 students of a two-ring FM teacher."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from experiments import _distill_common as common
from experiments.arcflow.config import CLAIM
from flowjax import experiment, losses, samplers
from flowjax.losses.arcflow import ArcPolicy, arcflow_distill, arcflow_sample, policy_displacement, policy_velocity
from flowjax.nets import MLP, init_params
from flowjax.nets.arcflow import ArcFlowMLP, init_arcflow_from_teacher
from flowjax.nets.lora import apply_lora, init_lora, lora_param_count

HEADS = ("means", "logits", "log_rates")


def rings_sampler(radii, std):
    radii = jnp.asarray(radii)

    def sample(key, n):
        kr, ka, kn = jax.random.split(key, 3)
        r = radii[jax.random.randint(kr, (n,), 0, radii.shape[0])] + std * jax.random.normal(kn, (n,))
        a = jax.random.uniform(ka, (n,), maxval=2 * jnp.pi)
        return jnp.stack([r * jnp.cos(a), r * jnp.sin(a)], axis=1)

    return sample


def simpson_error(policy: ArcPolicy, t_a: float, t_b: float, intervals: int = 1000) -> float:
    """max |closed form - composite Simpson| of the policy displacement, in float64."""
    with jax.enable_x64(True):
        pol = ArcPolicy(*(jnp.asarray(np.asarray(a), jnp.float64) for a in policy))
        ts = np.linspace(t_a, t_b, intervals + 1)
        vs = jnp.stack([policy_velocity(pol, t) for t in ts])
        w = np.ones(intervals + 1)
        w[1:-1:2], w[2:-1:2] = 4.0, 2.0
        quad = (t_b - t_a) / (3 * intervals) * jnp.tensordot(jnp.asarray(w), vs, axes=1)
        return float(jnp.max(jnp.abs(policy_displacement(pol, t_a, t_b) - quad)))


def run(cfg, out_dir: Path) -> dict:
    sample = rings_sampler(cfg.radii, cfg.radial_std)
    net = MLP(hidden=cfg.hidden, depth=cfg.depth)
    teacher_p, t_hist = common.train(common.model_loss(net, losses.cfm), init_params(net, jax.random.key(0), jnp.zeros((2, 2))),
                                     batch_fn=common.sampler_batch_fn(sample, cfg.teacher_batch, 11),
                                     steps=cfg.teacher_steps, seed=cfg.seed, learning_rate=1e-3, ema_decay=0.999)
    teacher = experiment.bind(net, teacher_p)
    x_eval = jax.random.normal(jax.random.key(40), (cfg.eval_samples, 2))
    data_ref = sample(jax.random.key(41), cfg.eval_samples)
    ref = samplers.ode(teacher, x_eval, solver="euler", steps=cfg.reference_steps)
    res, hists, panels = {"sw2_teacher_128step": common.sw2(ref, data_ref)}, {"teacher": t_hist}, {"data": data_ref}
    for n in (1, 2):
        out = samplers.ode(teacher, x_eval, solver="euler", steps=n)
        res[f"endpoint_mse_teacher_euler{n}"] = common.mse(out, ref)  # curvature check: 1 vs 128 steps
        res[f"sw2_teacher_euler{n}"] = common.sw2(out, data_ref)
    panels["teacher 128 Euler"] = ref

    noise_key = jax.random.key(42)
    batch_fn = lambda step: {"x1": jax.random.normal(jax.random.fold_in(noise_key, step), (cfg.student_batch, 2)),
                             "ratio": jnp.maximum(0.0, 1.0 - step / cfg.ratio_decay_steps)}
    for k in (cfg.components, 1):
        arc = ArcFlowMLP(hidden=cfg.hidden, depth=cfg.depth, num_components=k)
        ap = arc.init(jax.random.key(1), jnp.zeros((2, 2)), jnp.zeros((2,)))
        ap = init_arcflow_from_teacher(ap, teacher_p, key=jax.random.key(2), noise_std=0.05 if k > 1 else 0.0)
        trunk = {"params": {n: v for n, v in ap["params"].items() if n not in HEADS}}
        trainable = {"lora": init_lora(jax.random.key(3), trunk, rank=cfg.lora_rank),
                     "heads": {n: ap["params"][n] for n in HEADS if n in ap["params"]}}

        def full(tr, trunk=trunk):
            merged = apply_lora(trunk, tr["lora"])
            return {"params": {**merged["params"], **tr["heads"]}}

        def loss_fn(tr, key, batch, arc=arc, full=full):
            policy_fn = lambda x, t: arc.apply(full(tr), x, t)
            return arcflow_distill(policy_fn, key, batch["x1"], teacher=teacher, nfe=cfg.nfe, num_points=cfg.num_points,
                                   window=cfg.window, teacher_ratio=batch["ratio"], shift=cfg.shift, dropout=cfg.dropout)

        tr, hists[f"K={k}"] = common.train(loss_fn, trainable, batch_fn=batch_fn, steps=cfg.student_steps,
                                           seed=cfg.seed, learning_rate=cfg.student_lr)
        params = full(tr)
        policy_fn = lambda x, t, arc=arc, params=params: arc.apply(params, x, t)
        out = arcflow_sample(policy_fn, x_eval, nfe=cfg.nfe, shift=cfg.shift)
        res[f"endpoint_mse_K{k}"] = common.mse(out, ref)
        res[f"sw2_K{k}"] = common.sw2(out, data_ref)
        res[f"sec_per_sample_K{k}"] = common.seconds_per_sample(
            lambda z, pf=policy_fn: arcflow_sample(pf, z, nfe=cfg.nfe, shift=cfg.shift), x_eval)
        res[f"trainable_params_K{k}"] = float(lora_param_count(tr["lora"]) + sum(a.size for a in jax.tree.leaves(tr["heads"])))
        panels[f"ArcFlow K={k}, 2 NFE"] = out
        if k > 1:
            pol = policy_fn(x_eval[:256], jnp.zeros((256,)))
            res["simpson_integration_error"] = simpson_error(pol, 0.0, float(0.5))
            res["rates_mean_abs"] = float(jnp.mean(jnp.abs(pol.log_rates)))
    res["trunk_params"] = float(sum(a.size for a in jax.tree.leaves(trunk)))
    checks = {
        "mse_K4_lt_0.7_K1": res[f"endpoint_mse_K{cfg.components}"] < 0.7 * res["endpoint_mse_K1"],
        "sw2_K4_le_K1": res[f"sw2_K{cfg.components}"] <= res["sw2_K1"],
        "integration_error_lt_1e-6": res["simpson_integration_error"] < 1e-6,
    }
    plots = [
        experiment.plot_samples_2d(out_dir / "samples_2nfe.png", panels, lim=3.0),
        experiment.plot_loss_curves(out_dir / "loss.png", hists),
        experiment.plot_curves(out_dir / "endpoint_mse_vs_nfe.png",
                               {"teacher Euler": ([1, 2], [res["endpoint_mse_teacher_euler1"], res["endpoint_mse_teacher_euler2"]]),
                                f"ArcFlow K={cfg.components}": ([2], [res[f"endpoint_mse_K{cfg.components}"]]),
                                "linear K=1": ([2], [res["endpoint_mse_K1"]])},
                               xlabel="NFE", ylabel="endpoint MSE vs teacher 128 Euler", logy=True),
    ]
    return {
        "claim": CLAIM, "passed": bool(all(checks.values())), "metrics": res,
        "baseline": {"name": "identical pipeline with K=1 (linear per-step velocity)", "checks": checks},
        "plots": plots,
        "notes": (f"Teacher: CFM MLP {cfg.depth}x{cfg.hidden} ({cfg.teacher_steps} steps) on rings radii {tuple(cfg.radii)}; "
                  f"students: teacher trunk + LoRA rank {cfg.lora_rank} + heads, {cfg.student_steps} iterations, batch "
                  f"{cfg.student_batch}, NFE {cfg.nfe}, {cfg.num_points} points, window 3/128, shift {cfg.shift}."),
    }
