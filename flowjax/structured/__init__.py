"""Conditional and structured generation: FMPose3D pose lifting, PUFM++ point-cloud upsampling,
SCOOP scene flow, Action Flow Matching. Submodules: ``pose``, ``pointcloud``, ``sceneflow``,
``action``, ``control`` (MPPI, ensemble dynamics), ``nets`` (small toy-scale nets)."""

from flowjax.structured import action
from flowjax.structured import control
from flowjax.structured import nets
from flowjax.structured import pointcloud
from flowjax.structured import pose
from flowjax.structured import sceneflow

__all__ = [
    "action",
    "control",
    "nets",
    "pointcloud",
    "pose",
    "sceneflow",
]
