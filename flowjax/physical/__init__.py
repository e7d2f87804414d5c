"""Physical / classical flows on image sequences (ReynoldsFlow, FlowV2V warping, FlowGaussian-VR splatting) and synthetic videos."""

from flowjax.physical.reynoldsflow import (
    backward_divergence,
    central_gradient,
    discrete_curl,
    flow_sequence,
    forward_gradient,
    hsv_components,
    hsv_encoding,
    hsv_to_rgb,
    minmax_normalize,
    neumann_laplacian,
    normal_flow,
    poisson_neumann,
    reynolds_flow,
    reynolds_flux,
    reynolds_potential,
    rgb_plus_encoding,
    rgb_to_gray,
    to_uint8,
    translation_from_normal_flow,
)
from flowjax.physical.flowv2v import (
    FlowCalibrationNet,
    affine_from_moments,
    backward_warp,
    calibration_region,
    dilate,
    erode,
    flow_calibration_loss,
    imp_propagate,
    mask_moments,
    occlusion_mask,
    pseudo_flow,
    reanchor_mask,
    shape_map,
    splat_mask,
    warping_error,
)
from flowjax.physical import splatting
from flowjax.physical.synthetic import (
    bilinear_shift,
    fourier_shift,
    smooth_texture,
    tiny_uav_video,
    translating_texture_sequence,
)

__all__ = [
    "backward_divergence", "central_gradient", "discrete_curl", "flow_sequence", "forward_gradient",
    "hsv_components", "hsv_encoding", "hsv_to_rgb", "minmax_normalize", "neumann_laplacian", "normal_flow",
    "poisson_neumann", "reynolds_flow", "reynolds_flux", "reynolds_potential", "rgb_plus_encoding",
    "rgb_to_gray", "to_uint8", "translation_from_normal_flow",
    "affine_from_moments", "backward_warp", "dilate", "erode", "mask_moments", "occlusion_mask", "pseudo_flow",
    "shape_map", "splat_mask", "warping_error", "reanchor_mask", "imp_propagate",
    "FlowCalibrationNet", "calibration_region", "flow_calibration_loss",
    "splatting",
    "bilinear_shift", "fourier_shift", "smooth_texture", "tiny_uav_video", "translating_texture_sequence",
]
