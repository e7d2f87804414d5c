"""boss: Bellman-optimal step sizes and straightening fine-tune (2312.16414).

Command:   python -m experiments.run boss --preset cpu
Hardware:  any CPU (smoke ~20 s; cpu ~3 min on 2 free cores).
Claim:     For a pretrained flow-matching MLP on the 8-Gaussian ring (curved ODE: mode splitting), the
           dynamic program picks K Euler times from a teacher's 100-step trajectory costs; fine-tuning
           the net so that each Euler jump on those times hits the reference state (BOSS) gives far
           better K-step samples than uniform Euler, and beats reflow at the same fine-tune budget.
Pass (spec boss.md §5): SW2(c, K=2) < 0.5 x SW2(a, K=2); endpoint-MSE(c, K=2) <= endpoint-MSE(d, K=2).
           Report only: endpoint-MSE(b) <= endpoint-MSE(a) for K = 2, 4; SW2(c) vs SW2(d).
           (a) uniform Euler, (b) Bellman-time Euler, (c) BOSS fine-tune, (d) reflow fine-tune + uniform Euler.
Deviation: cpu preset teacher MLP 3x128 trained 2000 steps at batch 512 (spec 4x256, 3000, 1024) and
           8192 evaluation noises (spec 16384), to fit ~3 min on 2 shared cores.
"""

import ml_collections

SLUG = "boss"
PAPER = dict(title="Bellman Optimal Step-size Straightening of Flow-Matching Models", arxiv="2312.16414", spec="boss.md")
CLAIM = ("BOSS fine-tuning on Bellman-optimal times gives SW2(K=2) < 0.5x uniform Euler and endpoint MSE(K=2) <= "
         "reflow fine-tuned with the same budget.")


def get_config(preset: str) -> ml_collections.ConfigDict:
    cfg = ml_collections.ConfigDict()
    cfg.radius, cfg.std, cfg.modes = 2.0, 0.1, 8
    cfg.hidden, cfg.depth, cfg.teacher_steps, cfg.teacher_batch, cfg.teacher_lr = 128, 3, 2000, 512, 1e-3
    cfg.kmax, cfg.cost_samples = 100, 1000
    cfg.budgets = (2, 4)
    cfg.trajectories, cfg.finetune_steps, cfg.finetune_batch, cfg.finetune_lr = 5000, 500, 512, 1e-4
    cfg.eval_samples = 8192
    cfg.seed = 0
    if preset == "smoke":
        cfg.hidden, cfg.teacher_steps, cfg.teacher_batch = 32, 50, 128
        cfg.kmax, cfg.cost_samples, cfg.trajectories, cfg.finetune_steps = 20, 100, 256, 20
        cfg.finetune_batch, cfg.eval_samples = 128, 512
    elif preset == "cpu":
        pass
    elif preset in ("gpu", "tpu"):
        cfg.hidden, cfg.depth, cfg.teacher_steps, cfg.teacher_batch, cfg.eval_samples = 256, 4, 3000, 1024, 16384
    else:
        raise ValueError(f"unknown preset {preset!r}; choose one of ('smoke', 'cpu', 'gpu', 'tpu').")
    return cfg
