"""riemannian-fm: Riemannian flow matching on S^2 (vMF mixture) and on the flat torus T^2 (wrapped normal mixture).

Command:   python -m experiments.run riemannian-fm --preset cpu
Hardware:  any CPU (smoke ~15 s, cpu ~1-2 min on 2 loaded cores); gpu/tpu presets scale steps/width.
Claim:     Training `flowjax.losses.riemannian_cfm` (geodesic path, uniform source on S^2; Chen &
           Lipman 2302.03660) and sampling with the exponential-map Euler solver recovers a
           4-component vMF mixture on S^2 (samples and likelihood), with every sample on the sphere.
Pass:      (i) MMD^2(model, held-out data) < 0.05 * MMD^2(uniform source, held-out data);
           (ii) kernel-density total variation to the known vMF-mixture density closes at least 75%
           of the gap between the uniform baseline and a same-size data sample:
           TV(model) - TV(data) < 0.25 * (TV(uniform) - TV(data));
           (iii) max | |x| - 1 | < 1e-5 over all samples;
           (iv) held-out NLL from the Riemannian change of variables closes >= 75% of the gap between
           the uniform density (log 4 pi) and the true mixture's cross-entropy:
           NLL(model) - NLL(true) < 0.25 * (log 4 pi - NLL(true)).
           Flat torus T^2 = [-pi, pi)^2, 4-component wrapped normal mixture (two components straddle the seam),
           uniform source, MLP on (cos x, sin x): (v) total variation between the model density (manifold change of
           variables, exact divergence) on a grid and the known wrapped density < 0.25 x that of the uniform density;
           (vi) held-out NLL(model) - NLL(true) < 0.25 * (log 4 pi^2 - NLL(true)); (vii) samples stay in [-pi, pi)^2.
Measured (cpu, 2026-12-07, 71 s): all 7 criteria pass. Sphere: MMD^2 0.0014 vs uniform 0.030; KDE TV 0.239,
           data 0.159, uniform 0.661; NLL 1.350, true 1.236, uniform 2.531. Torus: density TV 0.136 vs uniform 0.692;
           NLL 2.366, true 2.274, uniform 3.676; model mass on the grid 1.000.
           History: the first cpu run (2026-11-28) failed the torus (TV 0.728, NLL 4.31). The cause was not the
           manifold code but the training keys: the batcher and the training step both used fold_in(key(seed), k),
           so the loss's time reused the bits that picked the mixture component (each mode trained on a quarter of
           the times; training loss 1.5, below the exact marginal field's 5.0, held-out loss 12.5). Fixed by
           separate key streams (flowjax.keystreams); the exact field v*(x, t) = E[log_x(x1) / (1 - t) | x_t = x]
           (Monte Carlo over 20k data points) was used to check the geometry and the sampler independently.
"""

import ml_collections

SLUG = "riemannian-fm"
PAPER = dict(
    title="Flow Matching on General Geometries",
    arxiv="2302.03660",
    spec="(issue 15: parity with facebookresearch flow_matching)",
)
CLAIM = (
    "Riemannian CFM on S^2 (geodesic path, uniform source, exp-map Euler sampling) learns a 4-component "
    "vMF mixture: MMD^2 < 5% of the uniform baseline's, KDE total variation closes >= 75% of the "
    "uniform-to-data gap, held-out NLL closes >= 75% of the uniform-to-true gap, all samples on the sphere; "
    "on the flat torus it learns a wrapped normal mixture: model-density TV < 25% of the uniform's and NLL "
    "closes >= 75% of the uniform-to-true gap against the known wrapped density."
)


def get_config(preset: str) -> ml_collections.ConfigDict:
    cfg = ml_collections.ConfigDict()
    cfg.kappas = (20.0, 20.0, 10.0, 40.0)
    cfg.hidden = 128
    cfg.depth = 3
    cfg.batch_size = 256
    cfg.steps = 2500
    cfg.learning_rate = 2e-3
    cfg.seed = 0
    cfg.eval_samples = 2000
    cfg.sample_steps = 100
    cfg.solver = "euler"
    cfg.kde_kappa = 40.0
    cfg.grid_points = 3000
    cfg.nll_samples = 500
    cfg.nll_steps = 50
    cfg.torus_means = ((3.0, 0.3), (-1.2, -2.9), (1.0, 1.6), (-2.0, 1.2))  # first two straddle the seam at +-pi
    cfg.torus_stds = (0.35, 0.4, 0.3, 0.5)
    cfg.torus_grid = 48
    if preset == "smoke":
        cfg.hidden, cfg.steps, cfg.batch_size = 32, 60, 64
        cfg.eval_samples, cfg.sample_steps, cfg.grid_points = 300, 10, 500
        cfg.nll_samples, cfg.nll_steps, cfg.torus_grid = 50, 5, 12
    elif preset == "cpu":
        pass
    elif preset in ("gpu", "tpu"):
        cfg.hidden, cfg.steps, cfg.batch_size, cfg.eval_samples = 256, 20000, 1024, 10000
    else:
        raise ValueError(f"unknown preset {preset!r}; choose one of ('smoke', 'cpu', 'gpu', 'tpu').")
    return cfg
