"""latent-fm: flow matching in a learned autoencoder latent vs in pixel space (8x8 digits): class-conditional
generation (part "class") and inpainting with the masked image as the condition (part "inpaint").

Command:   python -m experiments.run latent-fm --preset cpu            (both parts)
           python -m experiments.run latent-fm --preset cpu parts='("inpaint",)'   (one part)
Hardware:  any CPU. smoke measured 198 s (both parts, incl. compile) on 2 cores at load ~10; cpu: part "class" measured 389 s on 2 heavily shared cores
           (AE 122 s), part "inpaint" trains four more FM nets (latent/pixel x conditional/unconditional,
           2500 steps each; see results.json "seconds_*" for the measured times); gpu/tpu presets train longer.
Measured:  cpu preset (both parts, one seed) 386 s on 2 cores at load ~9-10 (inpaint trainings 26-51 s each).
           8 of 9 criteria pass; inpaint criterion (2) misses narrowly: visible-half MSE ratio 0.205 > 0.2.
Claim (class):   Latent FM (Dao et al. 2307.08698) matches pixel FM quality at lower cost: with a small conv
           autoencoder (8-d latent, scaled to unit std), a latent MLP FM reaches digits FD <= 1.3x the
           pixel MLP FM's FD at <= 0.3x its training MACs, and CFG (w=1.5) samples of both are classified
           as the requested label >= 90% of the time (spec latent-fm.md section 5, criteria 1 and 3).
Claim (inpaint): spec latent-fm.md section 5, "Inpainting variant" (the paper's flexibility claim; its per-task
           numbers were not retrieved, so these are hypotheses at toy scale, fixed before the cpu run and
           recorded either way). A random half (left/right/top/bottom) of each test digit is hidden; the
           latent FM MLP is conditioned on concat(E(masked image), m) (m = 64-d hole mask; LFM's channel
           concatenation, flat analogue) and its decoded sample is completed by pasting the known pixels.
           Baselines: (i) the same-size UNconditional latent FM, decoded + paste-known; (ii) that
           unconditional latent FM with replacement (decode, paste, re-encode the predicted endpoint at each
           Euler step, same NFE); (iii) a pixel-space conditional FM on concat(x * (1 - m), m); (iv) an
           unconditional pixel FM with replacement (projected Euler, same NFE). References, not methods:
           AE reconstruction + paste (it sees the hidden pixels: the latent bottleneck's floor) and the
           train-mean fill.
Pass (inpaint):  (1) known pixels equal the input exactly after decode + paste, for every method;
           (2) spec: the conditional latent model's decoded samples (before paste) have pixel MSE on the
           visible half <= 0.2 x that of unconditional latent samples; (3) spec: the classifier returns the
           true label on >= 70 % of the conditional latent completions; (4) ours, the paper's "latent FM
           competitive with pixel FM" transferred to this task: FD of the conditional latent completions
           <= 1.3 x that of the pixel conditional completions; (5) ours: trained conditioning beats
           training-free replacement: hole MSE of the conditional latent completions <= that of the
           latent replacement baseline (ii).
"""

import ml_collections

SLUG = "latent-fm"
PAPER = dict(title="Flow Matching in Latent Space", arxiv="2307.08698", spec="latent-fm.md")
CLAIM = ("Latent FM matches pixel FM quality at lower cost on digits: FD(latent) <= 1.3 x FD(pixel) at <= 0.3 x the "
         "training MACs, and CFG samples of both hit the requested class >= 90% of the time. Inpainting (random half "
         "hidden) with a latent FM conditioned on concat(E(masked image), mask): known pixels kept exactly, visible-half "
         "MSE of decoded samples <= 0.2 x the unconditional latent model's, >= 70% label consistency, FD <= 1.3 x a "
         "pixel conditional FM's, and hole MSE <= a latent replacement baseline's.")
PARTS = ("class", "inpaint")


def get_config(preset: str) -> ml_collections.ConfigDict:
    cfg = ml_collections.ConfigDict()
    cfg.parts = PARTS
    cfg.ae = ml_collections.ConfigDict(dict(latent_dim=8, channels=16, steps=600, batch_size=256, learning_rate=2e-3))
    cfg.pixel = ml_collections.ConfigDict(dict(hidden=256, depth=3))
    cfg.latent = ml_collections.ConfigDict(dict(hidden=128, depth=3))
    cfg.fm = ml_collections.ConfigDict(dict(steps=2500, batch_size=256, learning_rate=1e-3, label_dropout=0.1))
    cfg.eval = ml_collections.ConfigDict(dict(per_class=100, guidance=1.5, ode_solver="heun", ode_steps=25))
    # inpainting: same widths as above (cfg.pixel / cfg.latent), random half masks, one completion per (image, mask);
    # the replacement baselines use Euler with ode_steps x NFE_PER_STEP[ode_solver] steps (same NFE as the ODE samplers)
    cfg.inpaint = ml_collections.ConfigDict(dict(steps=2500, batch_size=256, learning_rate=1e-3, cond_dropout=0.0,
                                                 guidance=1.0, masks_per_image=3, eval_images=0, ode_solver="heun",
                                                 ode_steps=25))
    cfg.seed = 0
    if preset == "smoke":
        cfg.ae.update(steps=60, batch_size=64)
        cfg.fm.update(steps=60, batch_size=64)
        cfg.eval.update(per_class=10, ode_steps=4)
        cfg.inpaint.update(steps=60, batch_size=64, masks_per_image=1, eval_images=100, ode_steps=4)
    elif preset == "cpu":
        pass
    elif preset in ("gpu", "tpu"):
        cfg.ae.update(steps=3000)
        cfg.fm.update(steps=5000)
        cfg.eval.update(ode_solver="tsit5", ode_steps=100)
        cfg.inpaint.update(steps=5000)
    else:
        raise ValueError(f"unknown preset {preset!r}; choose one of ('smoke', 'cpu', 'gpu', 'tpu').")
    return cfg


def validate(cfg: ml_collections.ConfigDict) -> None:
    """Clear errors for settings the experiment cannot run."""
    parts = tuple(cfg.parts)
    if not parts or any(p not in PARTS for p in parts):
        raise ValueError(f"`parts` must be a non-empty subset of {PARTS}, got {parts!r}.")
    ic = cfg.inpaint
    if ic.guidance != 1.0 and ic.cond_dropout <= 0.0:
        raise ValueError("`inpaint.guidance` != 1 needs `inpaint.cond_dropout` > 0 (the null condition must be trained).")
    if ic.ode_solver not in ("euler", "midpoint", "heun", "rk4"):
        raise ValueError(f"`inpaint.ode_solver` must be a fixed-step solver (the replacement baselines match its NFE), got {ic.ode_solver!r}.")
    if ic.masks_per_image < 1 or ic.eval_images < 0:
        raise ValueError("`inpaint.masks_per_image` must be >= 1 and `inpaint.eval_images` >= 0 (0 = the whole test split).")
