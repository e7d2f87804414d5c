"""The numbers a reader wants first, per experiment (for the report and the README table).

An experiment may name them itself (``"headline"`` in its result); otherwise this table does, so
that the README shows each claim's deciding numbers (method vs baseline) rather than whichever
metrics sort first. Names missing from a result are skipped.
"""

from __future__ import annotations

HEADLINES: dict[str, tuple[str, ...]] = {
    "action-fm": ("success_afm", "success_finetune", "success_nominal", "steps_afm_both_complete", "steps_finetune_both_complete"),
    "arcflow": ("sw2_K4", "sw2_teacher_euler2", "sw2_teacher_128step", "endpoint_mse_K4"),
    "bifm": ("B_bifm/recon_mse", "A_meanflow/recon_mse", "B_bifm/gen_sw2", "A_meanflow/gen_sw2"),
    "boss": ("sw2_c_boss_K4", "sw2_b_bellman_K4", "sw2_a_uniform_K4", "sw2_d_reflow_K4"),
    "cfg-manifold": ("best_sw2_cfg_mp_plus_seed0", "best_sw2_cfg_seed0", "exact_model_sw2_cfg_mp_plus_w1", "exact_model_sw2_cfg_w1"),
    "discrete-fm": ("validity_steps16", "validity_factorised_exact", "pos_freq_err_steps16", "pos_freq_err_data"),
    "euphonium": ("final_d_euphonium_distill", "final_c_euphonium_code", "final_a_flow_grpo", "d_reaches_b_final_at_seed0"),
    "flair": ("psnr_flair", "psnr_projected_euler", "psnr_flair_no_dta", "correct_flair"),
    "flow-grpo": ("final_mean", "gain_seed0", "marginal_mean_err_t1", "marginal_cov_rel_err_t1"),
    "flowturbo": ("err_trained_flowturbo", "err_trained_heun3", "err_trained_euler6", "err_trained_heun8",
                  "err_analytic_flowturbo_noise0.0", "err_analytic_euler6", "sec_per_sample_flowturbo", "sec_per_sample_heun8"),
    "fmpose3d": ("mpjpe_rpea_H10_S3", "mpjpe_mean_H10_S3", "mpjpe_single_H10_S3", "mpjpe_regression"),
    "gesturelsm": ("c_shortcut_beta/fd_nfe1", "a_fm/fd_nfe1", "c_shortcut_beta/fd_nfe2", "a_fm/fd_nfe2", "c_shortcut_beta/coherence_nfe2",
                   "d_beta_independent_regions/coherence_nfe2"),
    "kvpo": ("on_manifold_kvpo", "on_manifold_pretrained", "final_reward_kvpo", "final_reward_sde", "final_reward_pretrained"),
    "latent-fm": ("fd_latent", "fd_pixel", "train_macs_ratio", "acc_latent", "inpaint/fd_latent_cond", "inpaint/fd_pixel_cond",
                  "inpaint/hole_psnr_latent_cond", "inpaint/label_acc_latent_cond"),
    "leapalign": ("reward_gain_d_leapalign", "reward_gain_a_full_backprop", "reward_gain_b_refl_last_step",
                  "mode_fraction_gain_d_leapalign", "mode_fraction_gain_b_refl_last_step", "objective_gain_d_leapalign",
                  "objective_gain_a_full_backprop"),
    "mdt-dist": ("sw2_vm_1step", "sw2_vm_vd_1step", "sw2_cm_1step", "sw2_teacher_1step", "sw2_teacher_25step"),
    "meanflow": ("8gaussians/meanflow/sw2_nfe1", "8gaussians/fm/sw2_nfe1", "8gaussians/meanflow/sw2_nfe2", "8gaussians/R_fm_euler128"),
    "principles": ("criterion_orders", "criterion_sde_family", "err_linear_euler_nfe10", "err_linear_dpmpp_2m_nfe10"),
    "pufm": ("cd_e4_iv_full", "cd_e4_i_stage1_uniform", "cd_e4_input_mid", "p2f_e3_iv_full"),
    "rectified-diffusion": ("sw2_b_rectified_diffusion_1step", "sw2_a_reflow_linear_1step", "sw2_c_unpaired_vp_1step",
                            "first_order_var_b_rectified_diffusion"),
    "reflow": ("sw2_1rf_1step", "sw2_2rf_1step", "sw2_2rf_distilled_1step", "straightness_2rf"),
    "repa-tora": ("fd_final_none", "fd_final_cosine", "fd_final_cka", "speedup_fraction_cka"),
    "riemannian-fm": ("nll_model", "nll_true", "nll_uniform", "torus_nll_model", "torus_nll_true", "torus_nll_uniform"),
    "scoop": ("epe3d_d_scoop_full", "epe3d_a_nn", "acc3d_strict_d_scoop_full", "acc3d_strict_a_nn"),
    "snapflow": ("snapflow/success_1nfe", "teacher/success_euler1", "teacher/success_euler10", "conditional_ablation/success_1nfe"),
    "splitmeanflow": ("8gaussians/splitmeanflow/sw2_nfe1", "8gaussians/meanflow/sw2_nfe1", "8gaussians/fm/sw2_nfe1",
                      "seconds_per_step/splitmeanflow", "seconds_per_step/meanflow"),
    "visual-bridge": ("acc_A_universal", "acc_A_specialist", "acc_A_regressor", "mse_B_universal", "mse_B_specialist",
                      "recall1_C_universal", "recall1_C_specialist"),
    "wcfm": ("sw2_nfe1_wcfm_eps1_B256", "sw2_nfe1_icfm_B256", "sw2_nfe1_ot_B256", "straightness_wcfm_eps1_B256"),
}


def headline_names(slug: str, result: dict, limit: int = 4) -> list[str]:
    """Metric names to show first for ``slug``'s result: its own ``headline``, this table's, or the first few."""
    metrics = result.get("metrics", {})
    names = result.get("headline") or [n for n in HEADLINES.get(slug, ()) if n in metrics]
    return list(names) if names else list(metrics)[:limit]


def failed_criteria(result: dict) -> list[str]:
    """Names of the pass criteria a result reports as missed (``criteria``/``checks`` dicts of bools)."""
    crit = result.get("criteria") or result.get("checks") or {}
    if not isinstance(crit, dict):
        return []
    return [str(k) for k, v in crit.items() if v is False]
