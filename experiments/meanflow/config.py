"""meanflow: the JVP average-velocity loss gives good 1-NFE samples where 1-step FM collapses.

Command:   python -m experiments.run meanflow --preset cpu
Hardware:  CPU (2 cores). smoke ~15 s; cpu: 4 trainings of 4000 steps (FM and MeanFlow on 2 data
           sets), ~2-3 min on 2 free cores; gpu/tpu: same toy, larger.
Claim:     (MeanFlow 2505.13447 at toy scale, criteria from splitmeanflow.md sec. 5 applied to
           MeanFlow) On the 8-Gaussian ring and the checkerboard, same MLP/steps/seed:
           SW2(MeanFlow, 1 NFE) < 0.3 x SW2(FM, 1 NFE) and SW2(MeanFlow, 2 NFE) <= 1.5 R + 0.05
           (R = FM, 128 Euler steps). 1/2/4-NFE numbers of both are recorded.
Measured (cpu, 2026-12-07): with the net's time features at 1000 t (time_scale=1000, the first runs) MeanFlow
           failed every criterion (1-NFE SW2 ring 0.770 vs FM 0.947; checkerboard 0.412 vs 0.926). With time_scale=1
           (now the default): ring 0.067 vs FM 0.959 (0.07x, pass), checkerboard 0.056 vs 0.954 (pass); 2 NFE ring
           0.104 vs 1.5 R + 0.05 = 0.086 (fail), checkerboard 0.087 vs 0.096 (pass): 3 of 4 criteria.
"""

import ml_collections

from experiments.splitmeanflow.config import base_config

SLUG = "meanflow"
PAPER = dict(title="Mean Flows for One-step Generative Modeling", arxiv="2505.13447", spec="splitmeanflow.md")
CLAIM = ("MeanFlow's 1-NFE samples reach < 0.3x the SW2 of 1-step FM and its 2-NFE samples 1.5 R + 0.05 of "
         "128-step FM, on ring and checkerboard, same net and steps.")


def get_config(preset: str) -> ml_collections.ConfigDict:
    cfg = base_config()
    if preset == "smoke":
        cfg.datasets = ("8gaussians",)
        cfg.hidden, cfg.depth, cfg.steps, cfg.batch_size = 32, 2, 50, 128
        cfg.eval_samples, cfg.nfe, cfg.ref_steps, cfg.timing_reps = 1024, (1, 2), 16, 2
    elif preset == "cpu":
        pass
    elif preset in ("gpu", "tpu"):
        cfg.hidden, cfg.batch_size, cfg.steps = 256, 2048, 20000
        cfg.eval_samples = 65536
    else:
        raise ValueError(f"unknown preset {preset!r}; choose one of ('smoke', 'cpu', 'gpu', 'tpu').")
    return cfg
