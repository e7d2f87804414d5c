"""principles: the solver zoo and the SDE family of "The Principles of Diffusion Models" on an exact flow.

Command:   python -m experiments.run principles --preset cpu
Hardware:  any CPU; no training (the model is the analytic Gaussian-mixture oracle). Measured: cpu preset
           1696 s wall on a 2-core machine shared with ~25 other busy processes (load average ~28), so a few
           minutes on free cores; smoke is a small fraction of that. gpu/tpu only enlarge the sample counts.
Claim:     (spec principles.md section 5) 1. Empirical global orders on the exact flow of an 8-mode ring
           (radius 2, std 0.1), linear path, from exact samples at t = 0.05 to t = 0.95, N in {8,16,32,64}:
           log-log slopes of Euler / Heun / DPM-Solver++(2M) (lambda-uniform grid) within 0.3 of -1 / -2 / -2,
           RK4 <= -2.7. 2. The marginal-preserving SDE family (Euler-Maruyama, 2000 steps on [1e-3, 1 - 1e-3],
           eps^2 in {0, g^2/4, g^2}, final denoise) samples the data: every mode occupancy within 0.02 of
           1/8 and SW2 to data <= 1.5 x the data-vs-data SW2 floor (n = 4000, 128 fixed directions).
           Also reported (not part of the pass criterion): every solver's error against the exact flow at
           5-50 NFE on the linear and VP paths, all solvers' measured orders, and the low-NFE ordering
           (exponential integrators vs Euler), which the spec expects on VP and NOT on the linear path.
"""

import ml_collections

SLUG = "principles"
PAPER = dict(title="The Principles of Diffusion Models", arxiv="2510.21890", spec="principles.md")
CLAIM = ("On the exact 8-mode flow: Euler/Heun/DPM-Solver++(2M)/RK4 show global orders 1/2/2/>=2.7 (+-0.3), "
         "and the marginal-preserving SDE family (eps^2 = 0, g^2/4, g^2) keeps the data distribution "
         "(mode occupancy within 0.02 of 1/8, SW2 <= 1.5x the data floor).")


def get_config(preset: str) -> ml_collections.ConfigDict:
    cfg = ml_collections.ConfigDict()
    cfg.modes, cfg.radius, cfg.std = 8, 2.0, 0.1
    cfg.seed = 0
    # 1. orders
    cfg.order_samples = 256
    cfg.order_steps = (8, 16, 32, 64)
    cfg.order_t = (0.05, 0.95)
    # 2. marginal family
    cfg.sde_samples = 4000
    cfg.sde_steps = 2000
    cfg.sde_t = (1e-3, 1.0 - 1e-3)
    cfg.sde_eps2_fractions = (0.0, 0.25, 1.0)
    cfg.num_projections = 128
    cfg.floor_pairs = 10
    cfg.reference_sets = 5
    # 3. error-vs-NFE table
    cfg.table_samples = 500
    cfg.table_nfe = (5, 10, 20, 50)
    cfg.table_t = (1e-3, 1.0 - 1e-3)
    cfg.table_paths = ("linear", "vp")
    cfg.order_paths = ("linear", "vp")
    cfg.solvers = ("euler", "midpoint", "heun", "rk4", "ddim", "dpm_solver2", "dpm_solver3", "dpmpp_2s",
                   "dpmpp_2m", "dpmpp_2m_edm", "dpmpp_3m", "dpmpp_3m_ss", "unipc2")
    cfg.adaptive_rtols = (1e-2, 1e-3, 1e-4)
    if preset == "smoke":
        cfg.order_samples, cfg.order_steps, cfg.order_paths = 16, (8, 16), ("linear",)
        cfg.solvers = ("euler", "heun", "rk4", "dpmpp_2m")
        cfg.sde_samples, cfg.sde_steps, cfg.floor_pairs, cfg.reference_sets = 500, 100, 2, 1
        cfg.sde_eps2_fractions = (1.0,)
        cfg.num_projections = 32
        cfg.table_samples, cfg.table_nfe, cfg.table_paths, cfg.adaptive_rtols = 16, (10,), ("vp",), (1e-2,)
    elif preset == "cpu":
        pass
    elif preset in ("gpu", "tpu"):
        cfg.order_samples, cfg.sde_samples, cfg.table_samples = 2000, 20000, 5000
        cfg.table_nfe = (5, 8, 10, 15, 20, 30, 50)
    else:
        raise ValueError(f"unknown preset {preset!r}; choose one of ('smoke', 'cpu', 'gpu', 'tpu').")
    return cfg
