"""rectok: flow semantic distillation (FSD) and masked reconstruction-alignment distillation (RAD) on 8x8 digits.

Command:   python -m experiments.run rectok --preset cpu
Hardware:  any CPU (smoke: 70 s CPU, mostly compilation; cpu: 6 tokenizers x 3k steps + 5 latent FM runs x 4k steps,
           measured 1820 s wall (guard on) and 1438 s (guard off) on 2 cores shared by ~10 other runs, a few minutes
           idle); gpu/tpu presets add steps.
Claim:     (spec rectok.md section 5, thresholds derived there and treated as hypotheses) A tiny MLP tokenizer
           (4 tokens x c channels) whose semantic decoder must predict frozen digits-classifier features from the
           NOISED latent z_tau (FSD, shift-sampled tau) keeps linear-probe accuracy at tau = 0.5 at least 10 points
           above alignment at the clean latent only; at c = 16 FSD (or FSD + masking) gives a latent-FM digits FD
           <= 0.85 x the plain autoencoder's; and the FSD tokenizer's FD does not increase from c = 2 to 8 to 16.
Guard:     normalize_latent=True (FSD noise applied to the per-channel batch-normalised latent, stats under
           stop-gradient). The spec makes it conditional on the latent RMS growing > 2x; the first cpu run without it
           measured the FSD latent's RMS at 14.5x the plain AE's at c = 16 (growth 4-15x over training), so it is on.
           `--set tok.normalize_latent=False` reproduces the unguarded run.
"""

import ml_collections

SLUG = "rectok"
PAPER = dict(title="RecTok: Reconstruction Distillation along Rectified Flow", arxiv="2512.13421", spec="rectok.md")
CLAIM = ("Distilling frozen-teacher features from the noised latent along the rectified flow (FSD) keeps the latent "
         "linearly decodable at tau = 0.5 (>= 10 points over clean-latent alignment) and improves latent-FM generation "
         "(FD <= 0.85 x plain AE at c = 16; FD non-increasing in c from 2 to 16).")

PRESETS = ("smoke", "cpu", "gpu", "tpu")


def get_config(preset: str) -> ml_collections.ConfigDict:
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {PRESETS}.")
    cfg = ml_collections.ConfigDict()
    # tokenizer: MLP 64 -> 256 -> 4 tokens x c channels (mean, logvar); mirror MLP pixel decoder
    cfg.tok = ml_collections.ConfigDict(dict(
        tokens=4, hidden=256, channels=(2, 8, 16), steps=3000, batch_size=256, learning_rate=1e-3,
        kl_weight=1e-6, sem_weight=1.0, gamma=1.0, shift_base=8.0, mask_low=-0.1, mask_high=0.4,
        normalize_latent=True, decoder_finetune_steps=500))
    cfg.fm = ml_collections.ConfigDict(dict(hidden=256, depth=3, steps=4000, batch_size=256, learning_rate=1e-3))
    cfg.eval = ml_collections.ConfigDict(dict(samples=1000, ode_steps=50, probe_taus=(1.0, 0.7, 0.5, 0.3)))
    cfg.seed = 0
    if preset == "smoke":
        cfg.tok.update(channels=(16,), steps=40, batch_size=64, decoder_finetune_steps=10)
        cfg.fm.update(steps=40, batch_size=64, hidden=64)
        cfg.eval.update(samples=100, ode_steps=4, probe_taus=(1.0, 0.5))
    elif preset in ("gpu", "tpu"):
        cfg.tok.update(steps=10000, decoder_finetune_steps=2000)
        cfg.fm.update(steps=10000)
        cfg.eval.update(samples=2000, ode_steps=100)
    return cfg
