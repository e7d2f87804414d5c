"""bifm: one bidirectional average-velocity model gives 1-step generation and 1-step inversion.

Command:   python -m experiments.run bifm --preset cpu
Hardware:  CPU (2 cores). smoke ~20 s; cpu: 3 trainings of 4000 steps (two with a JVP) on
           class-conditional two moons, ~3-5 min on 2 free cores (more on a shared machine).
Claim:     (bifm.md sec. 5, Dai et al. 2603.24942) 1+1-NFE reconstruction error of BiFM < 0.3 x that of
           MeanFlow with naive inversion (A) and < 0.3 x 1-step Euler FM (C); SW2(BiFM inversion,
           N(0, I)) < 0.8 x the same for (A); BiFM 1-NFE generation SW2 <= 1.2 x MeanFlow's.
"""

import ml_collections

SLUG = "bifm"
PAPER = dict(title="BiFM: Bidirectional Flow Matching for Few-Step Image Editing and Generation", arxiv="2603.24942",
             spec="bifm.md")
CLAIM = ("BiFM's bidirectional average velocities give 1-step inversion + 1-step generation with < 0.3x the "
         "reconstruction error of MeanFlow-naive and 1-step FM, more Gaussian inversions, and MeanFlow-level generation.")


def get_config(preset: str) -> ml_collections.ConfigDict:
    cfg = ml_collections.ConfigDict()
    cfg.hidden = 128
    cfg.depth = 4
    cfg.time_dim = 16
    cfg.batch_size = 512
    cfg.steps = 4000
    cfg.learning_rate = 1e-3
    cfg.ema_decay = 0.999
    cfg.seed = 0
    cfg.diag_fraction = 0.5
    cfg.swap_prob = 0.5
    cfg.warmup_steps = 400  # K_warm of w(k) = min(1, k / K_warm)
    cfg.norm_p = 1.0
    cfg.norm_eps = 1e-3
    cfg.eval_samples = 8192
    cfg.moon_noise = 0.05
    if preset == "smoke":
        cfg.hidden, cfg.depth, cfg.steps, cfg.batch_size, cfg.warmup_steps = 32, 2, 40, 128, 10
        cfg.eval_samples = 1024
    elif preset == "cpu":
        pass
    elif preset in ("gpu", "tpu"):
        cfg.hidden, cfg.batch_size, cfg.steps, cfg.warmup_steps = 256, 2048, 20000, 2000
        cfg.eval_samples = 65536
    else:
        raise ValueError(f"unknown preset {preset!r}; choose one of ('smoke', 'cpu', 'gpu', 'tpu').")
    return cfg
