"""cfg-manifold experiment: CFG vs CFG-MP (Picard) vs CFG-MP+ (Anderson) on an exact class-conditional mixture."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from experiments.cfg_manifold.config import CLAIM
from flowjax import experiment
from flowjax.samplers import guidance
from flowjax.testing import GaussianMixtureFlow

METHODS = {"cfg": "none", "cfg_mp": "picard", "cfg_mp_plus": "anderson"}


def sliced_w2_fixed(x: np.ndarray, y: np.ndarray, directions: np.ndarray) -> float:
    """Spec §5 estimator: sqrt(mean over fixed unit directions of the 1-D W2^2 of sorted projections)."""
    px, py = np.sort(x @ directions.T, axis=0), np.sort(y @ directions.T, axis=0)
    return float(np.sqrt(np.mean((px - py) ** 2)))


def build(cfg):
    k = 2 * cfg.num_classes
    ang = 2 * np.pi * np.arange(k) / k
    means = cfg.ring_radius * np.stack([np.cos(ang), np.sin(ang)], -1)
    stds = np.full(k, cfg.component_std)
    full = GaussianMixtureFlow(means, stds, np.ones(k))
    per_class = [GaussianMixtureFlow(means[2 * c : 2 * c + 2], stds[:2], np.ones(2)) for c in range(cfg.num_classes)]
    return means, full, per_class


def run(cfg, out_dir: Path) -> dict:
    means, full, per_class = build(cfg)
    c = cfg.target_class
    true_cond = per_class[c]

    def make_vc(gamma):
        return lambda x, t: full.velocity(x, t) + gamma * (true_cond.velocity(x, t) - full.velocity(x, t))

    def sampler(method, gamma, steps):
        vc = make_vc(gamma)

        @jax.jit
        def f(x0, w):
            return guidance.cfg_sample(
                vc, full.velocity, x0, scale=w, steps=steps, t_eval_min=cfg.t_eval_min, projection=METHODS[method],
                iterations=cfg.iterations, window=cfg.window, damping=cfg.damping, ridge=cfg.ridge,
                gate_t=cfg.gate_t, return_info=True,
            )

        return f

    fns = {m: sampler(m, cfg.gamma, cfg.steps) for m in METHODS}
    grid = np.linspace(0, 1, cfg.steps + 1)
    nfe = {m: guidance.cfg_nfe(grid, projection=METHODS[m], iterations=cfg.iterations, gate_t=cfg.gate_t) for m in METHODS}
    eq_steps = nfe["cfg_mp_plus"] // 2
    fns["cfg_equal_nfe"] = sampler("cfg", cfg.gamma, eq_steps)
    exact = {m: sampler(m, 1.0, cfg.steps) for m in ("cfg", "cfg_mp_plus")}

    def bayes_class(x):
        lp = jnp.stack([pc.log_prob(x, 1.0) for pc in per_class], -1)
        return np.asarray(jnp.argmax(lp, -1))

    names = list(fns)
    per_seed = []
    panels = {}
    for seed in cfg.seeds:
        rng = np.random.default_rng(seed)
        dirs = rng.normal(size=(cfg.num_projections, 2))
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        half = cfg.num_samples // 2
        ref = np.concatenate([means[2 * c + j] + cfg.component_std * rng.normal(size=(half, 2)) for j in range(2)])
        x0 = jax.random.normal(jax.random.key(seed), (cfg.num_samples, 2))
        res = {}
        for name in names:
            for w in cfg.scales:
                x, info = fns[name](x0, jnp.asarray(w))
                x = np.asarray(x)
                res[f"precision_{name}_w{w:g}"] = float(np.mean(bayes_class(x) == c))
                res[f"sw2_{name}_w{w:g}"] = sliced_w2_fixed(x, ref, dirs)
                res[f"gap_{name}_w{w:g}"] = float(jnp.mean(info["gap"]))
                if name in ("cfg_mp", "cfg_mp_plus"):
                    res[f"residual_{name}_w{w:g}"] = float(np.nanmean(np.asarray(info["residual"])))
                if seed == cfg.seeds[0] and w in (1.0, 2.0) and name != "cfg_equal_nfe":
                    panels[f"{name} w={w:g}"] = x
        for name, f in exact.items():
            x, _ = f(x0, jnp.asarray(1.0))
            res[f"exact_model_sw2_{name}_w1"] = sliced_w2_fixed(np.asarray(x), ref, dirs)
        per_seed.append(res)

    metrics = {k: float(np.mean([r[k] for r in per_seed])) for k in per_seed[0]}
    for m in METHODS:
        metrics[f"nfe_{m}"] = float(nfe[m])
    metrics["nfe_cfg_equal_nfe"] = float(2 * eq_steps)
    checks, seed_pass = [], []
    for r in per_seed:
        ok = []
        for w in (1.0, 2.0):
            if w not in cfg.scales:
                continue
            ok.append(r[f"precision_cfg_mp_plus_w{w:g}"] > r[f"precision_cfg_w{w:g}"])
            ok.append(r[f"sw2_cfg_mp_plus_w{w:g}"] <= 0.7 * r[f"sw2_cfg_w{w:g}"])
            ok.append(r[f"residual_cfg_mp_plus_w{w:g}"] <= 1.05 * r[f"residual_cfg_mp_w{w:g}"])
        best_cfg = min(r[f"sw2_cfg_w{w:g}"] for w in cfg.scales)
        best_mp = min(r[f"sw2_cfg_mp_plus_w{w:g}"] for w in cfg.scales)
        ok.append(best_mp <= 1.3 * best_cfg)
        seed_pass.append(bool(all(ok)))
    for i, seed in enumerate(cfg.seeds):
        metrics[f"passed_seed{seed}"] = float(seed_pass[i])
        r = per_seed[i]
        metrics[f"best_sw2_cfg_seed{seed}"] = min(r[f"sw2_cfg_w{w:g}"] for w in cfg.scales)
        metrics[f"best_sw2_cfg_mp_plus_seed{seed}"] = min(r[f"sw2_cfg_mp_plus_w{w:g}"] for w in cfg.scales)
    checks = seed_pass

    ws = list(cfg.scales)
    plots = [
        experiment.plot_samples_2d(out_dir / "samples.png", panels),
        experiment.plot_curves(out_dir / "sw2_vs_w.png", {n: (ws, [metrics[f"sw2_{n}_w{w:g}"] for w in ws]) for n in names},
                               xlabel="guidance scale w", ylabel="sliced W2 to p(x|c)", logy=True),
        experiment.plot_curves(out_dir / "precision_vs_w.png", {n: (ws, [metrics[f"precision_{n}_w{w:g}"] for w in ws]) for n in names},
                               xlabel="guidance scale w", ylabel="precision (Bayes class = c)"),
    ]
    return {
        "claim": CLAIM,
        "passed": bool(all(checks)),
        "metrics": metrics,
        "baseline": {"name": "Euler CFG, same steps", **{k: v for k, v in metrics.items() if k.startswith(("sw2_cfg_w", "precision_cfg_w"))}},
        "plots": plots,
        "notes": (f"Exact GMM velocities, model v_c = v_u + {cfg.gamma} (v_c - v_u); {len(cfg.seeds)} seeds, {cfg.num_samples} "
                  f"samples, Euler N={cfg.steps}; NFE per sample CFG {nfe['cfg']}, CFG-MP(+) {nfe['cfg_mp_plus']}; "
                  f"'cfg_equal_nfe' is CFG with {eq_steps} steps. Metrics are seed means; pass is per seed. "
                  "exact_model_* uses gamma = 1 (spec caveat: projection acts like extra guidance)."),
    }
