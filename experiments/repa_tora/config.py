"""repa-tora: representation alignment (REPA cosine, TORA CKA) speeds up FM convergence on 8x8 digits.

Command:   python -m experiments.run repa-tora --preset cpu
Hardware:  any CPU (smoke ~60 s incl. compile, cpu measured 550 s on 2 heavily shared cores, ~3 runs x 1500 steps).
Claim:     Aligning an intermediate layer of the FM student (an MLP; not the DiT) to the frozen project
           digits classifier's 64-d features of the clean image (TORA linear CKA, lambda=0.5) reaches the
           unaligned run's final digits FD in <= 0.6x the steps and ends with a lower FD (spec tora.md
           section 5 criteria 1-2, transposed from point-cloud PA to digits FD). REPA cosine is run too.
"""

import ml_collections

SLUG = "repa-tora"
PAPER = dict(title="TORA: Topological Representation Alignment (REPA: 2410.06940 as baseline)", arxiv="2410.06940", spec="tora.md")
CLAIM = ("CKA alignment of an intermediate student layer to frozen digits-classifier features reaches the unaligned "
         "run's final digits FD in <= 0.6x the steps and ends with a lower FD.")


def get_config(preset: str) -> ml_collections.ConfigDict:
    cfg = ml_collections.ConfigDict()
    cfg.student = ml_collections.ConfigDict(dict(hidden=256, depth=4, align_layer=2, proj_dim=64))
    cfg.train = ml_collections.ConfigDict(dict(steps=1500, batch_size=128, learning_rate=1e-3, weight=0.5))
    cfg.eval = ml_collections.ConfigDict(dict(every=250, samples=300, ode_steps=20))
    cfg.seed = 0
    if preset == "smoke":
        cfg.student.update(hidden=64, depth=3)
        cfg.train.update(steps=40, batch_size=32)
        cfg.eval.update(every=20, samples=64, ode_steps=4)
    elif preset == "cpu":
        pass
    elif preset in ("gpu", "tpu"):
        cfg.train.update(steps=10000, batch_size=256)
        cfg.eval.update(every=500, samples=1000, ode_steps=50)
    else:
        raise ValueError(f"unknown preset {preset!r}; choose one of ('smoke', 'cpu', 'gpu', 'tpu').")
    return cfg
