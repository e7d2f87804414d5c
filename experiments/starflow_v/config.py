"""starflow-v: a tiny STARFlow-V (global-local autoregressive flow + FSM denoiser + video-aware Jacobi) on drifting digits.

Command:   python -m experiments.run starflow-v --preset cpu
Hardware:  any CPU. smoke ~20 s idle; cpu ~5 min on an idle 2-core machine (train 32 x 1000 steps;
           2-4x longer under load); gpu/tpu presets use the spec's 64 x 1500 (or more).
Claim:     (STARFlow-V arXiv 2511.20462, spec starflow-v.md section 5) The flow is exact (round trip,
           log-det); block-wise Jacobi inversion of the deep block matches sequential inversion with
           far fewer sequential network calls, and the previous-frame initial guess cuts iterations;
           both denoisers (flow self-denoise and the causal FSM denoiser) remove most of the
           augmentation noise, and only the FSM denoiser is causal.
Pass:      (spec section 5 with its review revisions)
           1. max|f^-1(f(x~)) - x~| < 1e-4 and |NLL(log-dets) - NLL(jacfwd slogdet)| < 1e-4 on a D=32 variant;
           2. Jacobi (chunk 16): relative RMS error <= sqrt(tol) at tol 1e-3 and 1e-8; with early stopping
              off (16 iterations per chunk) max|dx| < 1e-4; deep-block calls <= 32 (vs 64 sequential) at tol 1e-3;
              mean iterations per chunk in frames 2..4 with the previous-frame guess <= 0.8 x with x0 = z (tol 1e-3);
           3. held-out per-dim MSE: self-denoise and FSM <= 0.5 sigma^2, and MSE(FSM) <= 1.15 MSE(self);
           4. perturbing frame 4 leaves the FSM output on frame 1 exactly unchanged and changes the
              self-denoise output on frame 1 by > 1e-4.
           Criterion 5 (global-local vs global baseline) is optional in the spec and not run here.
Status:    first cpu measurement (seed 0, 32 x 1000 steps, ~35 min wall on the loaded shared machine, 5.7 CPU-min):
           10 of 11 checks pass; FAILS 2_video_init: mean iterations per chunk in frames 2..4 were 3.0 with the
           previous-frame guess vs 3.33 with x0 = z at tol 1e-3 (ratio 0.90 > 0.8; the spec's prototype measured
           0.75 at 64 x 1500). Deep-block calls 16 vs 64 sequential (4x fewer sequential steps), rel. RMS error
           0.015 (tol 1e-3) and 1.8e-5 (tol 1e-8); no early stop: max|dx| 3.5e-6; MSE none/self/FSM
           0.091/0.022/0.025; FSM frame-1 change exactly 0, self-denoise 0.65; test NLL 0.426 nats/dim of x~.
Guidance:  (extra, report only; not a pass criterion) with class_conditional=True (smoke, gpu, tpu; OFF in cpu so the
           measurement above stays comparable) the deep block reads the digit label, training drops it w.p.
           label_dropout (STARFlow code 0.1), and results.json gains guidance_clf_acc_w{w}: the project digits
           classifier's accuracy on frame 1 of FSM-denoised guided Jacobi samples at our CFG scales w (0 unconditional,
           1 conditional, >1 guided; the STARFlow code's scale is w - 1), next to guidance_clf_acc_test_frame1 on data.
"""

import ml_collections

SLUG = "starflow-v"
PAPER = dict(
    title="STARFlow-V: End-to-End Video Generative Modeling with Normalizing Flows",
    arxiv="2511.20462",
    spec="starflow-v.md",
)
CLAIM = ("A tiny STARFlow-V on drifting-digit videos is exact, its video-aware Jacobi inversion matches sequential "
         "inversion with fewer sequential calls (fewer still with the previous-frame guess), and its causal FSM "
         "denoiser matches the non-causal flow self-denoise.")


def get_config(preset: str) -> ml_collections.ConfigDict:
    cfg = ml_collections.ConfigDict()
    cfg.seed = 0
    cfg.num_frames = 4
    cfg.patch = 2
    cfg.sigma = 0.3
    # model (spec section 5: 3 shallow per-frame blocks x 1 layer, deep block 4 layers, width 64)
    cfg.dim = 64
    cfg.heads = 4
    cfg.shallow_blocks = 3
    cfg.shallow_depth = 1
    cfg.deep_depth = 4
    cfg.denoiser_depth = 2
    cfg.denoiser_lookahead = 1
    # training
    cfg.batch_size = 32
    cfg.steps = 1000
    cfg.learning_rate = 1e-3
    cfg.grad_clip = 1.0
    cfg.log_every = 50
    # evaluation
    cfg.eval_videos = 256
    cfg.jacobi_samples = 32
    cfg.chunk = 16
    cfg.tols = (1e-3, 1e-8)
    cfg.max_iter = 32
    # class conditioning + classifier-free guidance (extra metric; see the header)
    cfg.class_conditional = True
    cfg.label_dropout = 0.1
    cfg.guidance_scales = (0.0, 1.0, 2.0, 3.0)
    cfg.guidance_rule = "product"
    cfg.guidance_samples = 200
    if preset == "smoke":
        cfg.dim, cfg.heads, cfg.deep_depth, cfg.shallow_blocks = 32, 2, 1, 2
        cfg.denoiser_depth = 2
        cfg.batch_size, cfg.steps, cfg.log_every = 8, 20, 10
        cfg.eval_videos, cfg.jacobi_samples = 16, 4
        cfg.guidance_samples = 20
    elif preset == "cpu":
        cfg.class_conditional = False  # keeps the recorded cpu measurement comparable; True adds the guidance metric
    elif preset in ("gpu", "tpu"):
        cfg.batch_size, cfg.steps = 64, 1500
        cfg.eval_videos, cfg.jacobi_samples = 297, 64
    else:
        raise ValueError(f"unknown preset {preset!r}; choose one of ('smoke', 'cpu', 'gpu', 'tpu').")
    return cfg
