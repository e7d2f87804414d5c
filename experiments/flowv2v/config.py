"""flowv2v: shape-aligned pseudo flow (IMP) drives a tiny flow-conditioned frame generator through an edit.

Command:   python -m experiments.run flowv2v --preset cpu
Hardware:  any CPU. smoke ~20 s of compute; cpu ~4 min on 2 cores (the spec's generator size and training
           length: 32 channels, batch 32, 1500 steps; 233 s measured on 2 idle cores, 484 s beside a pytest run);
           gpu/tpu presets add the SCFC calibration run (e).
Claim:     (paper 2506.07713: -50.66 % warping error on DAVIS-Edit; shape-aligned flow beats raw source flow and
           optical flow beats depth/shape control.) On synthetic 24x24, 8-frame videos of a moving, rotating,
           squashing ellipse whose first frame is edited into a rectangle / triangle / star, a frame-autoregressive
           conditional flow-matching generator driven by the IMP pseudo flow (b) beats the same generator driven by
           the raw source flow (a) and a mask-conditioned generator (c), and comes close to the oracle flow (d).
           The IMP formula and the tiny generator are DERIVED (spec flowv2v.md §3.2, §5), not the paper's.
Pass:      (spec §5) E_warp(b) <= 0.6 E_warp(a); PSNR(b) >= PSNR(a) + 1 dB; PSNR(b) >= PSNR(c);
           PSNR(d) - PSNR(b) <= 1.5 dB; mean mask IoU(b) >= 0.8. E_warp uses the exact flow of the edited
           target video with the forward-backward occlusion mask (no RAFT).
Deviations (ours): until 2026-12-07 the cpu preset trained each generator for 600 steps at batch 16 with 24
           channels; that smaller generator missed the PSNR and E_warp criteria (PSNR(b) 18.7 vs PSNR(a) 18.5 dB,
           E_warp ratio 0.85); at the spec's size they pass (21.2 vs 19.9 dB, 0.59). Runs (a)-(d) use no calibration (the spec's
           "IMP only" ablation); with calibration=True (smoke, gpu, tpu; OFF in cpu, see below) run (e) adds the
           SCFC calibration network (derived, spec §3.3: a zero-initialised residual U-Net trained with the L1 loss on
           self-supervised edit clips) inside the IMP loop; its PSNR / E_warp / IoU / flow EPE are reported, not
           checked. reanchor=True (default; ours, from the spec's §7 drift pitfall, not the paper) translates each
           propagated IMP mask so its centroid follows the source centroid trajectory plus the frame-1 offset;
           --set reanchor=False gives the plain splat propagation. Measured on the 12 cpu-preset test clips (no
           training involved): mask IoU 0.524 -> 0.562, pseudo-flow EPE 0.199 -> 0.169, centroid error 1.69 -> 0.42 px;
           the remaining IoU gap is shape error (one splat + closing step with the EXACT edited flow already has
           IoU 0.79 at this resolution), not drift.
SCFC note: measured once (helper session, cpu-preset calibration settings, loaded 2-core machine, 214 s of training):
           the L1 on the pool fell only 0.180 -> 0.173 and the test flow EPE stayed 0.199 (IMP) vs 0.201 (calibrated),
           mask IoU 0.524 vs 0.523. On the pool the pseudo flow's L1 is 0.084 with the TRUE edited mask but 0.244 with
           the propagated one (IoU 0.63 with the true support): the error is dominated by mask drift, which a small
           local U-Net cannot see. Hence calibration is off in the cpu preset (it costs minutes and gains nothing here).
"""

import ml_collections

SLUG = "flowv2v"
PAPER = dict(
    title="Consistent Video Editing as Flow-Driven Image-to-Video Generation (FlowV2V)",
    arxiv="2506.07713",
    spec="flowv2v.md",
)
CLAIM = ("Driving a flow-conditioned frame generator with the shape-aligned IMP pseudo flow of an edited first frame "
         "lowers the warping error to <= 0.6x and raises PSNR by >= 1 dB vs the raw source flow, beats mask-only "
         "control, stays within 1.5 dB of the oracle flow, and propagates the edited mask with IoU >= 0.8.")


def get_config(preset: str) -> ml_collections.ConfigDict:
    cfg = ml_collections.ConfigDict()
    cfg.size = 24
    cfg.num_frames = 8
    cfg.channels = 32
    cfg.layers = 4
    cfg.steps = 1500
    cfg.batch_size = 32
    cfg.learning_rate = 2e-3
    cfg.euler_steps = 8
    cfg.test_clips_per_shape = 4
    cfg.seed = 0
    # IMP mask re-anchoring to the source centroid trajectory (ours, spec §7 drift pitfall); False = plain splat
    cfg.reanchor = True
    # SCFC calibration network, run (e) (derived; report only)
    cfg.calibration = True
    cfg.calib_channels = 16
    cfg.calib_clips = 48
    cfg.calib_steps = 300
    cfg.calib_batch = 16
    cfg.calib_lr = 3e-3
    if preset == "smoke":
        cfg.channels, cfg.steps, cfg.batch_size, cfg.test_clips_per_shape = 8, 20, 8, 1
        cfg.calib_channels, cfg.calib_clips, cfg.calib_steps, cfg.calib_batch = 4, 4, 10, 8
    elif preset == "cpu":
        cfg.calibration = False  # see "SCFC note" above; set True to add run (e)
    elif preset in ("gpu", "tpu"):
        pass
    else:
        raise ValueError(f"unknown preset {preset!r}; choose one of ('smoke', 'cpu', 'gpu', 'tpu').")
    return cfg
