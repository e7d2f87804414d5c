"""leapalign experiment: methods (a)-(e) of spec leapalign.md §5 from one pretrained ring flow."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments.leapalign.config import CLAIM
from flowjax import align, experiment, keystreams, losses
from flowjax.data import make_sampler_batch_fn
from flowjax.nets import MLP, init_params
from flowjax.testing import GaussianMixtureFlow

METHODS = {
    "a_full_backprop": dict(kind="full", weighting=False),
    "b_refl_last_step": dict(kind="last", weighting=False),
    "c_drtune_alpha0": dict(kind="two", alpha=0.0, weighting=True),
    "d_leapalign": dict(kind="two", alpha=None, weighting=True),
    "e_leapalign_no_weight": dict(kind="two", alpha=None, weighting=False),
}


def sliced_w2(x, y, dirs):
    px, py = np.sort(x @ dirs.T, 0), np.sort(y @ dirs.T, 0)
    return float(np.sqrt(np.mean((px - py) ** 2)))


def run(cfg, out_dir: Path) -> dict:
    ang = 2 * np.pi * np.arange(8) / 8
    modes = 2.0 * np.stack([np.cos(ang), np.sin(ang)], -1)
    ring = GaussianMixtureFlow(modes, np.full(8, 0.1), np.ones(8))
    p = jnp.asarray(2.0 * np.array([np.cos(np.pi / 8), np.sin(np.pi / 8)]))
    reward = lambda x: -0.5 * jnp.sum((x - p[None]) ** 2, axis=-1)
    net = MLP(hidden=cfg.hidden, depth=cfg.depth)
    x_ex = jnp.zeros((2, 2))
    params0 = init_params(net, jax.random.key(cfg.seed), x_ex)
    batch_fn = make_sampler_batch_fn(lambda k, n: ring.sample_data(k, n).astype(jnp.float32), cfg.pretrain_batch, seed=cfg.seed)
    params0, hist = experiment.train_net(net, losses.cfm, params0, batch_fn=batch_fn, steps=cfg.pretrain_steps,
                                         seed=cfg.seed, learning_rate=cfg.pretrain_lr)
    times = np.linspace(0.0, 1.0, cfg.steps + 1)
    x0_eval = jax.random.normal(jax.random.key(777), (cfg.eval_samples, 2))
    sample = jax.jit(lambda prm, x0: align.euler_rollout(experiment.bind(net, prm), x0, times)[-1])
    base = np.asarray(sample(params0, x0_eval))
    dirs = np.random.default_rng(0).normal(size=(cfg.num_projections, 2))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)

    def stats(x):
        nearest = np.argmin(((x[:, None] - modes[None]) ** 2).sum(-1), 1)
        return float(np.mean(np.asarray(reward(jnp.asarray(x))))), float(np.mean((nearest == 0) | (nearest == 1)))

    r0, f0 = stats(base)
    ref = experiment.bind(net, params0)
    metrics = {"reward_pretrained": r0, "mode_fraction_pretrained": f0}
    opt = optax.adam(cfg.finetune_lr)
    seeds = tuple(cfg.finetune_seeds)

    @jax.jit
    def deviation(prm):  # exact sum_i dt ||v - v_ref||^2 along the rollout of the eval noises
        xs = align.euler_rollout(experiment.bind(net, prm), x0_eval, times)[:-1]
        tt = jnp.broadcast_to(jnp.asarray(times[:-1], xs.dtype)[:, None], xs.shape[:2])
        dv = jax.vmap(lambda x, t: experiment.bind(net, prm)(x, t) - ref(x, t))(xs, tt)
        return jnp.mean(jnp.sum(dv**2, -1).sum(0) / cfg.steps)

    panels = {"pretrained": base}
    curves = {}
    for name, spec in METHODS.items():
        alpha = cfg.alpha if spec.get("alpha", 0.0) is None else spec.get("alpha", 0.0)

        def loss_fn(prm, key):
            kx, kl = jax.random.split(key)
            x0 = jax.random.normal(kx, (cfg.finetune_batch, 2))
            loss, aux = align.leapalign_loss(experiment.bind(net, prm), kl, x0, reward_fn=reward, times=times, alpha=alpha,
                                             tau=cfg.tau, ceiling=cfg.ceiling, weighting=spec.get("weighting", False),
                                             leap=spec["kind"], ref_fn=ref, kl_weight=cfg.kl_weight)
            return loss, aux["reward"]  # reward of the real final samples (connector value)

        def it(carry, key):
            prm, st = carry
            (loss, rew), g = jax.value_and_grad(loss_fn, has_aux=True)(prm, key)
            upd, st = opt.update(g, st, prm)
            return (optax.apply_updates(prm, upd), st), (rew, optax.global_norm(g))

        # fine-tuning seeds share the pretrained model; step keys from the training stream (flowjax.keystreams)
        keys = jnp.stack([jax.vmap(lambda i, s=s: keystreams.train_key(jax.random.key(cfg.seed + 1 + s), i))(
            jnp.arange(cfg.finetune_iterations)) for s in seeds])
        train = jax.jit(jax.vmap(lambda ks: jax.lax.scan(it, (params0, opt.init(params0)), ks)))
        (prms, _), (rew_curves, gnorms) = train(keys)
        per_seed = {"reward_gain": [], "mode_fraction_gain": [], "sw2_to_pretrained": [], "grad_norm_cv": [],
                    "deviation": [], "objective_gain": []}
        for si, s in enumerate(seeds):
            prm = jax.tree_util.tree_map(lambda a: a[si], prms)
            x = np.asarray(sample(prm, x0_eval))
            r, f = stats(x)
            gn = np.asarray(gnorms[si])
            dev = float(deviation(prm))
            vals = {"reward_gain": r - r0, "mode_fraction_gain": f - f0, "sw2_to_pretrained": sliced_w2(x, base, dirs),
                    "grad_norm_cv": float(gn.std() / gn.mean()), "deviation": dev, "objective_gain": r - r0 - cfg.kl_weight * dev}
            for m, v in vals.items():
                per_seed[m].append(v)
                metrics[f"{m}_{name}_seed{s}"] = v
            if si == 0:
                panels[name] = x
        for m, v in per_seed.items():
            metrics[f"{m}_{name}"] = float(np.mean(v))
        rc = np.asarray(rew_curves).mean(0)  # training-batch reward before each update, mean over seeds
        for it_ in (25, 100):
            if it_ <= len(rc):
                metrics[f"train_reward_gain_at{it_}_{name}"] = float(rc[it_ - 1] - rc[0])
        curves[name] = (list(range(1, cfg.finetune_iterations + 1)), list(rc))
    g = {k: metrics[f"reward_gain_{k}"] for k in METHODS}
    mf = {k: metrics[f"mode_fraction_gain_{k}"] for k in METHODS}
    checks = [
        g["d_leapalign"] >= 0.8 * g["a_full_backprop"],
        g["d_leapalign"] >= 1.5 * g["b_refl_last_step"],
        mf["d_leapalign"] >= 1.5 * mf["b_refl_last_step"],
        metrics["grad_norm_cv_d_leapalign"] < metrics["grad_norm_cv_a_full_backprop"],
    ]
    for i, c in enumerate(checks):
        metrics[f"criterion_{i}"] = float(c)
    # ours, not a pass criterion: (a) is the upper reference of the regularised objective it optimises exactly
    metrics["reference_a_best_objective"] = float(all(metrics["objective_gain_a_full_backprop"] >= metrics[f"objective_gain_{k}"]
                                                      for k in METHODS))
    plots = [
        experiment.plot_samples_2d(out_dir / "samples.png", panels),
        experiment.plot_curves(out_dir / "loss_curves.png", curves, xlabel="iteration", ylabel="training-batch mean reward"),
    ]
    return {
        "claim": CLAIM,
        "passed": bool(all(checks)),
        "criteria": dict(zip(("reward gain d >= 0.8 x a", "reward gain d >= 1.5 x b", "mode-fraction gain d >= 1.5 x b",
                              "grad-norm CV d < a"), (bool(c) for c in checks))),
        "metrics": metrics,
        "baseline": {"name": "(a) full backprop / (b) ReFL last step", "gain_a": g["a_full_backprop"], "gain_b": g["b_refl_last_step"]},
        "plots": plots,
        "notes": ("Ring radius 2, std 0.1; reward -|x - p|^2/2, p at 22.5 deg (spec). Ours: every method's loss is "
                  "mean_b w_b [relu(C - R_b) + lambda D_b], C = 0, D_b a one-step estimate of int ||v - v_pretrained||^2 dt on the "
                  "stop-gradient rollout (lambda = kl_weight; without it every method collapses all mass onto p and the comparison "
                  "saturates). (k, j) per sample uniform over distinct pairs of {0..N-1}; metrics are means over the fine-tuning "
                  "seeds (shared pretrained model); criteria 0-3 (spec) = gain vs (a), gain vs (b), mode gain vs (b), CV vs (a); "
                  "objective_gain = reward gain - lambda * exact deviation on the eval rollout."),
    }
