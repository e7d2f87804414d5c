"""euphonium: process-reward-gradient guided SDE + distillation vs Flow-GRPO / DanceGRPO on a 2-D toy.

Command:   python -m experiments.run euphonium --preset cpu
Hardware:  any CPU (smoke ~20 s, cpu ~2-3 min on 2 cores); no network training (theta in R^{T x 2}).
Claim:     (arXiv 2602.04928; spec euphonium.md §5) Steering GRPO rollouts with the gradient of a latent
           process reward and distilling the guidance into the policy (variant d: explicit distillation
           term, guidance on all steps) reaches DanceGRPO's (b) final reward in <= 0.6x the iterations
           (paper: 1.66x faster), with final reward (d) > (b) > (a: Flow-GRPO). The code-faithful
           variant (c: guidance on steps 6-9, unguided-mean log-prob, ORA + PRA) is reported too.
Pass:      for every seed: first iteration where (d) >= final(b) <= 0.6 x iterations; final (d) > (b) > (a).
"""

import ml_collections

SLUG = "euphonium"
PAPER = dict(
    title="Euphonium: Steering Video Flow Matching via Process Reward Gradient Guided Stochastic Dynamics",
    arxiv="2602.04928",
    spec="euphonium.md",
)
CLAIM = ("Reward-gradient-guided rollouts with explicit distillation (d) reach DanceGRPO's final reward in <= 0.6x the "
         "iterations, and final rewards order (d) > (b) DanceGRPO > (a) Flow-GRPO.")


def get_config(preset: str) -> ml_collections.ConfigDict:
    cfg = ml_collections.ConfigDict()
    cfg.steps = 10
    cfg.groups = 16
    cfg.group_size = 16
    cfg.iterations = 150
    cfg.lr = 0.05
    cfg.eval_samples = 2000
    cfg.flow_grpo_a = 0.7
    cfg.eta = 0.5
    cfg.guidance_scale = 0.3
    cfg.strong_guidance_scale = 1.0
    cfg.extra_variants = True
    cfg.seeds = (0,)
    if preset == "smoke":
        cfg.iterations, cfg.groups, cfg.eval_samples, cfg.extra_variants = 20, 4, 500, False
    elif preset == "cpu":
        pass
    elif preset in ("gpu", "tpu"):
        cfg.seeds = (0, 1, 2, 3)
    else:
        raise ValueError(f"unknown preset {preset!r}; choose one of ('smoke', 'cpu', 'gpu', 'tpu').")
    return cfg
