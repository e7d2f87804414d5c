"""Data: toy 2D sets, Gaussian mixtures, sklearn digits and TFDS images, deterministic batching."""

from flowjax.data.toy2d import TOY2D_NAMES
from flowjax.data.toy2d import sample_toy2d
from flowjax.data.toy2d import toy2d_raw_scale

__all__ = [
    "TOY2D_NAMES",
    "sample_toy2d",
    "toy2d_raw_scale",
]
