"""meanflow experiment: FM vs MeanFlow on 2D toys at 1/2/4 NFE, with 128-step FM as reference."""

from __future__ import annotations

from pathlib import Path

from experiments import _fewstep_common as common
from experiments.meanflow.config import CLAIM


def run(cfg, out_dir: Path) -> dict:
    metrics, _, plots = common.run_toy_benchmark(cfg, out_dir, ("fm", "meanflow"))
    metrics.update(common.time_losses(cfg, ("fm", "meanflow")))
    checks = {}
    for ds in cfg.datasets:
        mf1, mf2 = metrics[f"{ds}/meanflow/sw2_nfe1"], metrics[f"{ds}/meanflow/sw2_nfe2"]
        checks[f"{ds}: MF1 < 0.3 FM1"] = mf1 < 0.3 * metrics[f"{ds}/fm/sw2_nfe1"]
        checks[f"{ds}: MF2 <= 1.5 R + 0.05"] = mf2 <= 1.5 * metrics[f"{ds}/R_fm_euler{cfg.ref_steps}"] + 0.05
    return {
        "claim": CLAIM,
        "passed": bool(all(checks.values())),
        "metrics": metrics,
        "criteria": checks,
        "baseline": {k: v for k, v in metrics.items() if "/fm/" in k or "R_fm" in k},
        "plots": plots,
        "notes": (f"MeanFlow as in the official code translated to project time: logit-normal(+{cfg.mf_mean}, "
                  f"{cfg.mf_std}) pairs, {int(cfg.mf_fm_fraction * 100)}% s = t, adaptive weight p = {cfg.mf_norm_p}, "
                  f"c = {cfg.mf_norm_eps}. MLP {cfg.depth}x{cfg.hidden}, {cfg.steps} steps, batch {cfg.batch_size}, "
                  f"EMA {cfg.ema_decay}, seed {cfg.seed}."),
    }
