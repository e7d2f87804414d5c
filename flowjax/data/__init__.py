"""Data: toy 2D sets, Gaussian mixtures, sklearn digits and TFDS images, deterministic batching."""

from flowjax.data.batching import BatchFn
from flowjax.data.batching import SamplerBatchFn
from flowjax.data.batching import check_finite_data
from flowjax.data.batching import make_batch_fn
from flowjax.data.batching import make_sampler_batch_fn
from flowjax.data.toy2d import TOY2D_NAMES
from flowjax.data.toy2d import sample_toy2d
from flowjax.data.toy2d import toy2d_raw_scale

__all__ = [
    "BatchFn",
    "SamplerBatchFn",
    "check_finite_data",
    "make_batch_fn",
    "make_sampler_batch_fn",
    "TOY2D_NAMES",
    "sample_toy2d",
    "toy2d_raw_scale",
]
