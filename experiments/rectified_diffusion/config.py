"""rectified-diffusion: pairing, not straightness, is what makes reflow work (2410.07303).

Command:   python -m experiments.run rectified-diffusion --preset cpu
Hardware:  any CPU (smoke ~20 s; cpu ~3 min on 2 free cores); gpu/tpu presets use the spec's sizes.
Claim:     On an 8-mode Gaussian mixture with an EXACT teacher (the analytic posterior of the
           cosine VP path, sin/cos schedule; pairs from its ODE, RK4 200 steps), a student trained
           on the teacher's (noise, sample) pairs with the VP path and x1-prediction (Rectified
           Diffusion, pseudo-Huber c = 1e-3) is as good in 1 DDIM step as the straight reflow
           student (linear path, v-pred), far better than the same VP student trained without
           pairs, and its x1-prediction is nearly constant along its own trajectories.
Pass (spec rectified-diffusion.md §5): pair-MSE(b, 1 step) < 0.2 x pair-MSE(c, 1 step);
           pair-MSE(b, 1 step) <= 1.25 x pair-MSE(a, 1 step); first-order-ness variance (b) < 0.2 x (c).
Deviation: cpu preset uses MLP 3x128, 2000 steps, batch 512 (spec: 3x256, 3000, 1024) to fit ~3 min
           on 2 shared cores; the gpu preset uses the spec's sizes.
"""

import ml_collections

SLUG = "rectified-diffusion"
PAPER = dict(title="Rectified Diffusion: Straightness Is Not Your Need in Rectified Flow", arxiv="2410.07303",
             spec="rectified-diffusion.md")
CLAIM = ("Training on teacher pairs with the VP path and x1-prediction (Rectified Diffusion) gives 1-step DDIM "
         "pair-MSE < 0.2x the unpaired VP model and <= 1.25x straight reflow, with x1_hat ~constant along trajectories.")


def get_config(preset: str) -> ml_collections.ConfigDict:
    cfg = ml_collections.ConfigDict()
    cfg.radius, cfg.std, cfg.modes = 2.0, 0.1, 8
    cfg.num_pairs, cfg.heldout = 20000, 4096
    cfg.pair_steps = 200
    cfg.hidden, cfg.depth = 128, 3
    cfg.steps, cfg.batch_size, cfg.learning_rate = 2000, 512, 1e-3
    cfg.huber_c = 1e-3
    cfg.nfe = (1, 2, 4, 8)
    cfg.traj_steps = 64
    cfg.seed = 0
    if preset == "smoke":
        cfg.num_pairs, cfg.heldout, cfg.pair_steps = 1024, 512, 50
        cfg.hidden, cfg.steps, cfg.batch_size, cfg.nfe, cfg.traj_steps = 32, 50, 128, (1, 2), 8
    elif preset == "cpu":
        pass
    elif preset in ("gpu", "tpu"):
        cfg.hidden, cfg.steps, cfg.batch_size = 256, 3000, 1024
    else:
        raise ValueError(f"unknown preset {preset!r}; choose one of ('smoke', 'cpu', 'gpu', 'tpu').")
    return cfg
