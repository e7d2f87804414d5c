"""kvpo: KV-routing exploration + TVE surrogate policy vs SDE noise exploration on synthetic "story" sequences.

Command:   python -m experiments.run kvpo --preset cpu
Hardware:  any CPU (smoke ~20 s; cpu ~5 min on 2 idle cores, 3 seeds).
Claim:     (arXiv 2605.14278; spec kvpo.md §5) For a deterministic few-step causal block generator, exploring by
           re-routing the attended history (shared noise) keeps branches on the data manifold (>= 0.95x the
           pretrained model's on-manifold rate), and PPO on the Trajectory-Velocity-Energy branch policy reaches a
           final deterministic-rollout reward >= that of a Flow-GRPO-style SDE-noise baseline at equal updates.
Pass:      on-manifold(KVPO branches) >= 0.95 x on-manifold(pretrained); final reward(KVPO) >= final reward(SDE),
           rewards averaged over the seeds.
Model:     flowjax.nets.CausalTransformer streamed with a KV cache, one token per block, KV routing by kv_index.
History:   the first version (a causal MLP over a gathered context, Adam lr 3e-4, no clipping/warm-up, replay context
           built from the branches' own outputs) diverged at this preset (rewards ~ -1e6 for KVPO, -1e16 for SDE).
           Mechanism (measured, seed 0): routed MLP branches were off-manifold, so TVE distances were large; the
           on-policy PPO gradient on the Gibbs branch policy does not saturate (d loss / d E_g = (A_g - pi_g sum A)/G
           however far apart the energies are) and keeps pushing the deployment predictions away from low-advantage
           branches; without the spec's grad clipping and warm-up, at 30x the spec's LR, the autoregressive rollouts
           blew up within 10-15 updates (energy spread 0.7 -> 12 -> 326 -> 4e3, grad norm 0.9 -> 40 -> 900 -> 1.4e4).
Measured:  cpu preset, 3 seeds (2026-11-28, 48 min wall on an overloaded 2-core machine): on-manifold KVPO branches
           0.912 vs pretrained 0.997 (ratio 0.915 < 0.95: FAIL), SDE rollouts 0.996; final reward KVPO 0.520, SDE 0.408
           (pass; SDE seed 0 = -0.03), pretrained 0.525; no divergence (max block norm 1.78 KVPO, 1.38 SDE).
           Rerun 2026-12-08 (idle, 242 s) after the update took e_old from its own forward pass: same figures.
Diagnosis: (issue #9; experiments/kvpo/diagnose_manifold.py, cpu-preset pretraining, 64 prefixes x 8 branches, seeds 0/1)
           the on-manifold miss is not an implementation defect (the metric, the pool 1 .. b*-4, the routed rows, the
           shared noises and the pretrained reference were checked against spec §5; the diagnostic's independent
           streamer reproduces the experiment's branches bit for bit). The routed blocks are generated from a context
           the model never saw in pretraining (trained only on sink + the 3 most recent, unit-spaced blocks; m = 0
           removes all recent history): routed-block rate 0.889 / 0.933 vs default 1.000 / 0.990; deviations stay
           moderate (median | |y| - 1 | 0.023 vs 0.003, 90% 0.11 / 0.08, i.e. the tail just crosses the 0.1 band).
           The per-routed-block rate does not depend on the routing probability q (0.90 / 0.91 at q = 0.25, 0.89 / 0.93
           at q = 1), so the drop is intrinsic to each routed context; keeping m = 1 nearest block (the official code
           keeps m = 4 frames) gives 0.955 / 0.995 and m = 2 0.986 / 0.992. Which OOD aspect dominates varies by seed
           (seed 0: wide, irregular spans of S_g, span 8-11 -> 0.69 while contiguous S_g -> 0.98; seed 1: staleness,
           contiguous context lagged 3 blocks -> 0.89).
"""

import ml_collections

SLUG = "kvpo"
PAPER = dict(
    title="KVPO: ODE-Native GRPO for Autoregressive Video Alignment via KV Semantic Exploration",
    arxiv="2605.14278",
    spec="kvpo.md",
)
CLAIM = ("KV-routing branches stay on-manifold (>= 0.95x pretrained) and TVE-policy PPO reaches >= the final reward of an "
         "SDE-noise GRPO baseline at equal updates.")


def get_config(preset: str) -> ml_collections.ConfigDict:
    cfg = ml_collections.ConfigDict()
    cfg.num_blocks = 24
    cfg.prefix_blocks = 8
    cfg.step_angle = 0.3
    cfg.noise = 0.02
    cfg.dim = 32  # CausalTransformer width
    cfg.depth = 2
    cfg.heads = 2
    cfg.pretrain_steps = 2000
    cfg.pretrain_batch = 256
    cfg.pretrain_lr = 1e-3
    cfg.branches = 8  # G
    cfg.window = 3  # P
    cfg.subset = 3  # routed older blocks
    cfg.prefixes_per_update = 8
    cfg.updates = 200
    cfg.lr = 1e-4  # AdamW, 5 warm-up steps (spec §3.5 uses 1e-5 with LoRA on a 1.3B model)
    cfg.weight_decay = 0.01
    cfg.grad_clip = 1.0
    cfg.grad_steps = 1  # M of K = 2
    cfg.kl_coef = 10.0
    cfg.sde_a = 0.7
    cfg.eval_prefixes = 256
    cfg.seeds = (0, 1, 2)
    if preset == "smoke":
        cfg.pretrain_steps, cfg.updates, cfg.seeds, cfg.eval_prefixes, cfg.pretrain_batch = 300, 10, (0,), 64, 64
    elif preset == "cpu":
        pass
    elif preset in ("gpu", "tpu"):
        cfg.updates, cfg.prefixes_per_update, cfg.seeds = 1000, 32, (0, 1, 2, 3, 4)
    else:
        raise ValueError(f"unknown preset {preset!r}; choose one of ('smoke', 'cpu', 'gpu', 'tpu').")
    return cfg
