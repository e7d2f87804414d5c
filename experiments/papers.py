"""The paper set: one entry per spec in the project's paper folder, with the experiments that check it.

This table is what the paper-set runner and the README's paper table iterate over: a paper whose
experiments do not exist yet is reported as "planned" (not yet implemented).
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Paper:
    spec: str  # spec file stem in shared/papers/
    title: str
    arxiv: str
    experiments: tuple[str, ...]
    family: str


PAPERS: tuple[Paper, ...] = (
    # Foundation and parity (no spec file of their own).
    Paper("flow-matching", "Flow Matching for Generative Modeling (Lipman et al.)", "2210.02747", ("cfm",), "foundation"),
    Paper("ot-cfm", "Minibatch OT conditional flow matching (Tong et al.)", "2302.00482", ("ot-cfm",), "foundation"),
    # Few-step generators.
    Paper("splitmeanflow", "SplitMeanFlow (with MeanFlow as baseline)", "2507.16884", ("meanflow", "splitmeanflow"), "few-step"),
    Paper("flowmaps", "How to build a consistency model: flow maps via self-distillation", "2505.18825", ("flowmaps",), "few-step"),
    Paper("gesturelsm", "GestureLSM: latent shortcut co-speech gesture generation", "2501.18898", ("gesturelsm",), "few-step"),
    Paper("snapflow", "SnapFlow: one-step action generation by progressive self-distillation", "2604.05656", ("snapflow",), "few-step"),
    Paper("bifm", "BiFM: Bidirectional Flow Matching", "2603.24942", ("bifm",), "few-step"),
    # Unified toolkit.
    Paper("principles", "The Principles of Diffusion Models", "2510.21890", ("principles",), "toolkit"),
    # Objectives and sources.
    Paper("wcfm", "W-CFM: Weighted Conditional Flow Matching", "2507.22270", ("wcfm", "sb-cfm"), "objectives"),
    Paper("vecor", "VeCoR: Velocity Contrastive Regularization for Flow Matching", "2511.18942", ("vecor",), "objectives"),
    Paper("pafm", "PAFM: Posterior Augmented Flow Matching", "2605.00825", ("pafm",), "objectives"),
    Paper("kdiff", "k-Diff: Revisiting Diffusion Model Predictions Through Dimensionality", "2601.21419", ("kdiff",), "objectives"),
    Paper("source-distributions", "Is There a Better Source Distribution than Gaussian?", "2512.18184", ("source-distributions",), "objectives"),
    Paper("conditional-source", "Better Source, Better Flow: condition-dependent source (CSFM)", "2602.05951", ("conditional-source",), "objectives"),
    Paper("mle-finetune", "Fine-Tuning Flow Matching via MLE of Reconstructions", "2510.02081", ("mle-finetune",), "objectives"),
    Paper("blockwise-fm", "Blockwise Flow Matching", "2510.21167", ("blockwise-fm",), "objectives"),
    # Distillation and schedules.
    Paper("rectified-diffusion", "Rectified Diffusion (with reflow as baseline)", "2410.07303", ("reflow", "rectified-diffusion"), "distillation"),
    Paper("mdt-dist", "MDT-dist: few-step flow via Marginal-Data Transport distillation", "2509.04406", ("mdt-dist",), "distillation"),
    Paper("arcflow", "ArcFlow: non-linear flow distillation with analytic integration", "2602.09014", ("arcflow",), "distillation"),
    Paper("boss", "BOSS: Bellman Optimal Step-size Straightening", "2312.16414", ("boss",), "distillation"),
    Paper("flowturbo", "FlowTurbo: velocity refiner and pseudo corrector", "2409.18128", ("flowturbo",), "distillation"),
    # Guidance, inverse problems, reward alignment.
    Paper("cfg-manifold", "CFG-MP: classifier-free guidance with manifold projection", "2601.21892", ("cfg-manifold",), "guidance"),
    Paper("flair", "FLAIR: variational flow posterior for inverse problems", "2506.02680", ("flair",), "guidance"),
    Paper("euphonium", "Euphonium (with Flow-GRPO as baseline)", "2602.04928", ("flow-grpo", "euphonium"), "alignment"),
    Paper("kvpo", "KVPO: ODE-native GRPO via KV semantic exploration", "2605.14278", ("kvpo",), "alignment"),
    Paper("leapalign", "LeapAlign: two-leap surrogate trajectory reward fine-tuning", "2604.15311", ("leapalign",), "alignment"),
    # Latent spaces and representations.
    Paper("latent-fm", "Flow Matching in Latent Space", "2307.08698", ("latent-fm",), "latent"),
    Paper("tora", "TORA: topological representation alignment (with REPA)", "2604.04050", ("repa-tora",), "latent"),
    Paper("rectok", "RecTok: reconstruction distillation along rectified flow", "2512.13421", ("rectok",), "latent"),
    Paper("visual-bridge", "Visual Bridge: one velocity field to many task representations", "2511.07877", ("visual-bridge",), "latent"),
    # Conditional and structured generation.
    Paper("fmpose3d", "FMPose3D: 3D pose lifting by flow matching with RPEA", "2602.05755", ("fmpose3d",), "structured"),
    Paper("action-fm", "Action Flow Matching for Continual Robot Learning", "2504.18471", ("action-fm",), "structured"),
    Paper("pufm", "PUFM++: point cloud upsampling via enhanced flow matching", "2512.20988", ("pufm",), "structured"),
    Paper("scoop", "SCOOP: self-supervised soft-correspondence scene flow", "2211.14020", ("scoop",), "structured"),
    # Normalizing and physical flows.
    Paper("starflow-v", "STARFlow-V (+ STARFlow, TarFlow): autoregressive normalizing flows", "2511.20462", ("starflow-v",), "nf-physical"),
    Paper("reynoldsflow", "ReynoldsFlow: training-free flow from the Reynolds transport theorem", "2503.04500", ("reynoldsflow",), "nf-physical"),
    Paper("flowgaussian-vr", "FlowGaussian-VR: velocity-field rendering for Gaussian video reconstruction", "2507.23704", ("flowgaussian-vr",), "nf-physical"),
    Paper("flowv2v", "FlowV2V: video editing as flow-driven image-to-video generation", "2506.07713", ("flowv2v",), "nf-physical"),
    # Parity with facebookresearch/flow_matching.
    Paper("discrete-fm", "Discrete Flow Matching (Gat et al.)", "2407.15595", ("discrete-fm",), "parity"),
    Paper("riemannian-fm", "Flow Matching on General Geometries (Chen & Lipman)", "2302.03660", ("riemannian-fm",), "parity"),
)


def paper_for_experiment(slug: str) -> Paper | None:
    for paper in PAPERS:
        if slug in paper.experiments:
            return paper
    return None
