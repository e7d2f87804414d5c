"""leapalign: reward fine-tuning through a two-leap surrogate trajectory vs full backprop, ReFL and DRTune.

Command:   python -m experiments.run leapalign --preset cpu
Hardware:  any CPU (smoke ~1 min; cpu 736 s measured on 2 shared cores: pretraining 3000 steps + 5 methods x
           300 fine-tuning steps x 3 seeds, the seeds vmapped in one scan per method).
Claim:     (arXiv 2604.15311; spec leapalign.md §5) On an 8-Gaussian-ring flow (MLP 3x256, 25 Euler steps)
           fine-tuned towards a point p between two modes (reward -|x - p|^2 / 2, mode choice decided at early t),
           LeapAlign (alpha = 0.3, similarity weights) gets >= 0.8x the reward gain of full backprop through all
           25 steps and >= 1.5x that of last-step (ReFL-like) training, moves >= 1.5x more mass to the two modes
           next to p than ReFL (early-step effect), with a lower gradient-norm coefficient of variation than
           full backprop.
Pass:      (spec) gain(d) >= 0.8 gain(a) and >= 1.5 gain(b); mode-fraction gain (d) >= 1.5 x (b); CV(d) < CV(a);
           all on the means over the fine-tuning seeds.
Ours:      every method's per-sample loss is w_b [relu(C - R_b) + lambda D_b], D_b an unbiased one-step estimate of
           int_0^1 ||v_theta - v_pretrained||^2 dt on the stop-gradient rollout (lambda = kl_weight = 1, the unit
           weight; only lambda in {0, 1} was tried, and 1 kept because it makes (a)'s optimum interior -- mode
           fraction ~0.66 instead of 1 -- not to fit (d)'s criteria; a KL-like trust region: for an SDE with unit diffusion it is twice the
           path KL). Without it the spec's quadratic reward has the degenerate optimum "all mass on p", every
           method reaches it within 300 iterations (measured before this change: all gains ~4.06, mode gain 0.74)
           and the comparison says nothing. With it the optimum is interior and moving mass is cheapest at early
           t (a small velocity change near a basin boundary switches the mode, a late jump costs its distance
           squared over the remaining time), so the methods' gradient estimators reach different optima; full
           backprop (exact gradient of the same objective) is the upper reference (objective_gain).
           Sensitivity (one seed, prototype of this loss, 300 iterations; reward gains a / d / b): lambda = 1:
           2.93 / 1.38 / 0.15; lambda = 0.3: 3.69 / 3.03 / 0.48 (and alpha = 1 unweighted 3.39). So whether
           gain(d) >= 0.8 gain(a) holds depends on lambda; lambda = 1 was fixed before lambda = 0.3 was run.
"""

import ml_collections

SLUG = "leapalign"
PAPER = dict(
    title="LeapAlign: Post-Training Flow Matching Models at Any Generation Step by Building Two-Step Trajectories",
    arxiv="2604.15311",
    spec="leapalign.md",
)
CLAIM = ("With a velocity-deviation (KL-like) regulariser so that the ring toy does not saturate, "
         "LeapAlign (alpha=0.3, weighted) reaches >= 0.8x full-backprop and >= 1.5x ReFL reward gain, >= 1.5x ReFL's "
         "near-target mode gain, and a lower gradient-norm CV than full backprop.")


def get_config(preset: str) -> ml_collections.ConfigDict:
    cfg = ml_collections.ConfigDict()
    cfg.hidden = 256
    cfg.depth = 3
    cfg.pretrain_steps = 3000
    cfg.pretrain_batch = 1024
    cfg.pretrain_lr = 1e-3
    cfg.steps = 25
    cfg.finetune_iterations = 300
    cfg.finetune_batch = 256
    cfg.finetune_lr = 1e-4
    cfg.alpha = 0.3
    cfg.tau = 0.1
    cfg.ceiling = 0.0
    cfg.kl_weight = 1.0  # ours (see header)
    cfg.finetune_seeds = (0, 1, 2)
    cfg.eval_samples = 4096
    cfg.num_projections = 256
    cfg.seed = 0
    if preset == "smoke":
        cfg.hidden, cfg.pretrain_steps, cfg.pretrain_batch = 64, 200, 256
        cfg.finetune_iterations, cfg.finetune_batch, cfg.eval_samples, cfg.steps = 20, 64, 1024, 10
        cfg.finetune_seeds = (0,)
    elif preset == "cpu":
        pass
    elif preset in ("gpu", "tpu"):
        cfg.pretrain_steps, cfg.finetune_iterations = 10000, 1000
    else:
        raise ValueError(f"unknown preset {preset!r}; choose one of ('smoke', 'cpu', 'gpu', 'tpu').")
    return cfg
