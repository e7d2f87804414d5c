"""flowmaps: Lagrangian self-distillation (LSD) vs Progressive (PSD-M/U) and Eulerian (ESD) flow maps.

Command:   python -m experiments.run flowmaps --preset cpu
Hardware:  CPU (2 cores). smoke ~20 s; cpu: 13 trainings of 3000 steps on the checkerboard
           (FM seed 0; LSD, PSD-M, PSD-U, ESD seeds 0-2) + one 1D LSD run, ~5 min on 2 free cores
           (more on a shared machine); gpu/tpu: same toy, larger.
Claim:     (flowmaps.md sec. 5, Boffi et al. 2505.18825) SW2(LSD, N=1) < 0.4 x SW2(FM Euler, N=1);
           SW2(LSD, N) <= 1.15 x min(SW2(PSD-M, N), SW2(PSD-U, N)) for N in {2, 4} (3-seed means);
           LSD trained on 1D Gaussian data matches the analytic u with relative L2 error < 10 %.
           ESD divergence (NaN or loss > 10x initial) is recorded, no criterion.
"""

import ml_collections

SLUG = "flowmaps"
PAPER = dict(title="How to build a consistency model: Learning flow maps via self-distillation", arxiv="2505.18825",
             spec="flowmaps.md")
CLAIM = ("Lagrangian self-distillation gives the best few-step flow maps: 1-step SW2 < 0.4x FM's and within 1.15x of "
         "the better progressive variant at 2 and 4 steps; on 1D Gaussian data it recovers the exact u (< 10% error).")


def get_config(preset: str) -> ml_collections.ConfigDict:
    cfg = ml_collections.ConfigDict()
    cfg.dataset = "checkerboard"
    cfg.hidden = 128
    cfg.depth = 4
    cfg.time_dim = 32
    # "sinusoidal": flowjax.nets.MLP (sin/cos of 1000 t; the first cpu run); "raw": the spec's concat(s, t, x).
    # Derivative-based losses (LSD's d/dt, ESD's d/ds) differentiate through the time input, and the
    # 1000 t sinusoids have derivatives up to 1000: "raw" is the spec's net.
    cfg.time_input = "raw"
    cfg.batch_size = 512
    cfg.steps = 3000
    cfg.learning_rate = 1e-3
    cfg.ema_decay = 0.999
    cfg.diag_fraction = 0.5
    cfg.seeds = (0, 1, 2)
    cfg.methods = ("lsd", "psd_m", "psd_u", "esd")
    cfg.eval_samples = 16384
    cfg.nfe = (1, 2, 4, 8)
    cfg.ref_steps = 128
    cfg.gauss_mean = 1.5
    cfg.gauss_std = 0.5
    if preset == "smoke":
        cfg.hidden, cfg.depth, cfg.steps, cfg.batch_size, cfg.seeds = 32, 2, 40, 128, (0,)
        cfg.eval_samples, cfg.nfe, cfg.ref_steps, cfg.methods = 1024, (1, 2), 16, ("lsd", "psd_m")
    elif preset == "cpu":
        pass
    elif preset in ("gpu", "tpu"):
        cfg.hidden, cfg.batch_size, cfg.steps = 512, 4096, 20000
        cfg.eval_samples = 65536
    else:
        raise ValueError(f"unknown preset {preset!r}; choose one of ('smoke', 'cpu', 'gpu', 'tpu').")
    return cfg
