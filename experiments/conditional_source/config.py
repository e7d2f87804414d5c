"""conditional-source: a learned condition-dependent Gaussian source (CSFM, 2602.05951), spec §5.

Command:   python -m experiments.run conditional-source --preset cpu
Hardware:  any CPU. smoke ~20 s; cpu ~5 min on 2 cores (4 runs x 3 seeds x 8k steps of a
           128-wide MLP at batch 256, all 12 lanes in one vmapped program; SW2 tracked every 500 steps);
           gpu/tpu: 5 seeds, 20k steps.
Measured:  the cpu preset (8k steps) in 290 s on 2 cores shared with a pytest run (2026-12-07); with
           steps=4000 on a machine loaded by ~15 jobs, 53 min.
Claim:     (Kim et al. 2602.05951; spec conditional-source.md §5) on a class-conditional 8-Gaussian ring,
           a learned per-class source mean with fixed unit std and directional alignment converges at
           least 2x faster (steps to reach the Gaussian-source run's final SW2) and is no worse at NFE 4;
           a freely learned source std collapses; the fixed-std source keeps diversity.
Option:    ``--set source_net=perceiver`` replaces the per-class mean table by flowjax.nets.PerceiverSource
           (the paper's kind of S_phi) over a fixed random token set per class (variable length, padded
           and masked). At the cpu preset it passes 4/4 (table: 2/4), because the network carries the source mean to
           the class centre (final norm 3.97 at ring radius 4) while the table barely moves it (0.008); see main.py.
Pass:      spec §5 criteria 1-4 (1-2 are hypotheses: in this toy the exact flows of (a) and (b) are
           translates, so only learning dynamics can differ; recorded either way).
"""

import ml_collections

SLUG = "conditional-source"
PAPER = dict(title="Better Source, Better Flow: Learning Condition-Dependent Source Distribution for Flow Matching",
             arxiv="2602.05951", spec="conditional-source.md")
CLAIM = ("A learned condition-dependent Gaussian source (fixed unit variance + directional alignment) speeds up "
         "flow-matching convergence; a freely learned variance collapses.")


def get_config(preset: str) -> ml_collections.ConfigDict:
    cfg = ml_collections.ConfigDict()
    cfg.seeds = (0, 1, 2)
    cfg.steps = 8000
    cfg.track_every = 500
    cfg.batch_size = 256
    cfg.hidden = 128
    cfg.depth = 3
    cfg.learning_rate = 1e-3
    cfg.num_classes = 8
    cfg.radius = 4.0
    cfg.class_std = 0.2
    cfg.lambda_align = 1.0
    cfg.eval_per_class = 1024
    cfg.track_per_class = 256
    cfg.nfe = (1, 4, 50)
    cfg.num_projections = 128
    cfg.tau_factor = 1.1
    # S_phi: "table" (the spec's minimal per-class mean table) or "perceiver" (PerceiverSource over a
    # fixed random token set per class; ours)
    cfg.source_net = "table"
    # std of the mean table's normal initialisation (0: zeros, the N(0, I) source at init; see main.py)
    cfg.table_mean_init_std = 0.0
    # mu = table_scale * E (multiplies the table's effective Adam learning rate; 1 = plain table)
    cfg.table_scale = 1.0
    cfg.class_tokens = 4            # max tokens per class (class c has 2 + c % 3 valid ones)
    cfg.token_dim = 8
    cfg.perceiver_latents = 4
    cfg.perceiver_dim = 32
    cfg.perceiver_depth = 2
    cfg.perceiver_heads = 4
    cfg.perceiver_mean_init_std = 0.5
    if preset == "smoke":
        cfg.seeds, cfg.steps, cfg.track_every, cfg.hidden = (0,), 200, 100, 32
        cfg.eval_per_class, cfg.track_per_class = 128, 64
    elif preset == "cpu":
        pass
    elif preset in ("gpu", "tpu"):
        cfg.seeds, cfg.steps = (0, 1, 2, 3, 4), 20000
    else:
        raise ValueError(f"unknown preset {preset!r}; choose one of ('smoke', 'cpu', 'gpu', 'tpu').")
    return cfg
