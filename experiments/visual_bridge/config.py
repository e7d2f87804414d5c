"""visual-bridge: one flow-matching velocity field from frozen patch tokens to three task representations (8x8 digits).

Command:   python -m experiments.run visual-bridge --preset cpu
Hardware:  any CPU (smoke: 46 s CPU, 441 s wall on 2 cores shared by ~10 runs; cpu: 3 seeds x (universal 6k steps +
           3 specialists x 2k + 3 regressors x 2k) of a tiny MLP-Mixer (width 32), estimated ~4-5 min per seed idle;
           measured so far only reduced runs: 1 seed, 1500/500 steps, 581 s wall, and 1 seed, 3000/1000 steps, 642 s
           wall, on the shared machine; the full preset has not been run); gpu/tpu: width
           64 and 5x the steps.
Claim:     (spec visual-bridge.md section 5; thresholds are hypotheses fixed in the spec) A single universal flow
           (MLP-Mixer velocity with a multi-scale circular task embedding, 4 Euler steps) from fixed random 2x2-patch
           tokens to (A) logistic-regression logits, (B) per-patch intensity/gradients, (C) 8-d PCA embeddings
           reaches >= 0.95 x the specialist flows' accuracy (A) and recall@1 (C), MSE (B) <= 1.05 x theirs, at 3x
           their parameters in total-equal terms, and its accuracy (A) is >= the deterministic regressor's - 1 point.
"""

import ml_collections

SLUG = "visual-bridge"
PAPER = dict(title="Visual Bridge: Universal Visual Perception Representations Generating", arxiv="2511.07877",
             spec="visual-bridge.md")
CLAIM = ("One velocity field with a circular task embedding bridges frozen patch tokens to three heterogeneous task "
         "representations as well as three specialist flows of 1/3 the size each (>= 0.95x on accuracy and recall@1, "
         "<= 1.05x MSE) and is within 1 point of a deterministic regressor's accuracy.")

PRESETS = ("smoke", "cpu", "gpu", "tpu")


def get_config(preset: str) -> ml_collections.ConfigDict:
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {PRESETS}.")
    cfg = ml_collections.ConfigDict()
    cfg.width = 10  # token width of source and (zero-padded) targets
    cfg.universal = ml_collections.ConfigDict(dict(dim=32, blocks=2, frequencies=4, task_embedding="circular"))
    cfg.train = ml_collections.ConfigDict(dict(universal_steps=6000, specialist_steps=2000, batch_size=256,
                                               learning_rate=1e-3, chunk=500))
    cfg.eval = ml_collections.ConfigDict(dict(euler_steps=4))
    cfg.seeds = (0, 1, 2)
    if preset == "smoke":
        cfg.universal.update(dim=16)
        cfg.train.update(universal_steps=60, specialist_steps=20, batch_size=64, chunk=20)
        cfg.seeds = (0,)
    elif preset in ("gpu", "tpu"):
        cfg.universal.update(dim=64)
        cfg.train.update(universal_steps=30000, specialist_steps=10000, chunk=1000)
    return cfg
