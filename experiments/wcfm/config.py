"""wcfm: Weighted Conditional Flow Matching against I-CFM and minibatch OT-CFM on 2D toys.

Command:   python -m experiments.run wcfm --preset cpu
Hardware:  any CPU. smoke ~30 s CPU time; cpu: measured 75 min wall on a 2-core machine shared by
           ~8 workers (load 15-20), so well over the 3-min target; the exact Hungarian at B=256 inside
           the training loop dominates (3 seeds trained in parallel per method; 6 runs at B=256,
           2 at B=8, 3k steps); gpu/tpu: the spec's grid (5k steps, plus Sinkhorn OT-CFM and problem (ii)).
Claim:     (spec wcfm.md §5, problem (i) 8 Gaussians -> moons) W-CFM at its best eps in {0.5, 1, 2}
           has SW2 at NFE=2 <= 0.7 x I-CFM and <= 1.3 x OT-CFM at B=256; beats OT-CFM at B=8;
           eps=1e6 matches I-CFM within seed noise; the moons tilt grows as eps shrinks.
Pass:      all four criteria of spec §5 on 3-seed means (1-2 are the paper's claims, hypotheses at
           this scale; 3-4 follow from the method).
"""

import ml_collections

SLUG = "wcfm"
PAPER = dict(title="Weighted Conditional Flow Matching", arxiv="2507.22270", spec="wcfm.md")
CLAIM = ("W-CFM (Gibbs-weighted independent pairs) matches or beats minibatch OT-CFM at few-step sampling "
         "without an OT solve, keeps working at batch 8, reduces to I-CFM as eps -> inf, and tilts the "
         "target marginal more as eps shrinks.")


def get_config(preset: str) -> ml_collections.ConfigDict:
    cfg = ml_collections.ConfigDict()
    cfg.hidden = 128
    cfg.depth = 3
    cfg.learning_rate = 1e-3
    cfg.steps = 5000
    cfg.seeds = (0, 1, 2)
    cfg.batch_sizes = (256, 8)
    cfg.epsilons = (0.5, 1.0, 2.0)
    cfg.eps_reduction = 1e6
    cfg.methods_small_batch = ("ot", "wcfm")  # at B=8 (I-CFM at B=8 is recorded only in the gpu preset)
    cfg.include_sinkhorn = False
    cfg.sinkhorn_rel_reg = 0.1
    cfg.problem_ii = False
    cfg.eval_samples = 4096
    cfg.num_projections = 128
    cfg.nfes = (1, 2, 100)
    cfg.tilt_reference = 20000
    if preset == "smoke":
        cfg.hidden, cfg.steps, cfg.seeds = 32, 60, (0, 1)
        cfg.eval_samples, cfg.tilt_reference, cfg.nfes, cfg.num_projections = 256, 1000, (1, 2, 5), 32
    elif preset == "cpu":
        cfg.steps = 3000  # spec: 5k; 3k keeps the 2-core budget (recorded in notes)
    elif preset in ("gpu", "tpu"):
        cfg.include_sinkhorn, cfg.problem_ii = True, True
        cfg.methods_small_batch = ("icfm", "ot", "sinkhorn", "wcfm")
    else:
        raise ValueError(f"unknown preset {preset!r}; choose one of ('smoke', 'cpu', 'gpu', 'tpu').")
    return cfg
