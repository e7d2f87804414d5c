"""Data: toy 2D sets, Gaussian mixtures, sklearn digits and TFDS images, deterministic batching.

Nothing here downloads. See :mod:`flowjax.data.tfds_images` for preparing MNIST / CIFAR-10.
"""

from flowjax.data.batching import BatchFn
from flowjax.data.batching import SamplerBatchFn
from flowjax.data.batching import check_finite_data
from flowjax.data.batching import make_batch_fn
from flowjax.data.batching import make_sampler_batch_fn
from flowjax.data.digits import DIGITS_NAME
from flowjax.data.digits import DIGITS_NUM_EXAMPLES
from flowjax.data.digits import DIGITS_PIXEL_MAX
from flowjax.data.digits import DIGITS_SPLITS
from flowjax.data.digits import FlowjaxDigits
from flowjax.data.digits import digits_dataset
from flowjax.data.digits import digits_source
from flowjax.data.digits import load_digits_arrays
from flowjax.data.digits import prepare_digits
from flowjax.data.mixtures import MIXTURE_PRESETS
from flowjax.data.mixtures import MixtureParams
from flowjax.data.mixtures import make_mixture
from flowjax.data.mixtures import mixture_flow
from flowjax.data.mixtures import mixture_moments
from flowjax.data.mixtures import mixture_preset
from flowjax.data.mixtures import random_mixture
from flowjax.data.mixtures import sample_mixture
from flowjax.data.prefetch import Prefetched
from flowjax.data.prefetch import prefetch
from flowjax.data.tfds_images import DATA_DIR_ENV
from flowjax.data.tfds_images import default_data_dir
from flowjax.data.tfds_images import find_prepared
from flowjax.data.tfds_images import image_dataset
from flowjax.data.tfds_images import load_tfds_images
from flowjax.data.tfds_images import tfds_image_dataset
from flowjax.data.tfds_images import tfds_source
from flowjax.data.toy2d import TOY2D_NAMES
from flowjax.data.toy2d import sample_toy2d
from flowjax.data.toy2d import toy2d_raw_scale

__all__ = [
    "BatchFn",
    "DATA_DIR_ENV",
    "DIGITS_NAME",
    "DIGITS_NUM_EXAMPLES",
    "DIGITS_PIXEL_MAX",
    "DIGITS_SPLITS",
    "FlowjaxDigits",
    "MIXTURE_PRESETS",
    "MixtureParams",
    "Prefetched",
    "SamplerBatchFn",
    "TOY2D_NAMES",
    "check_finite_data",
    "default_data_dir",
    "digits_dataset",
    "digits_source",
    "find_prepared",
    "image_dataset",
    "load_digits_arrays",
    "load_tfds_images",
    "make_batch_fn",
    "make_mixture",
    "make_sampler_batch_fn",
    "mixture_flow",
    "mixture_moments",
    "mixture_preset",
    "prefetch",
    "prepare_digits",
    "random_mixture",
    "sample_mixture",
    "sample_toy2d",
    "tfds_image_dataset",
    "tfds_source",
    "toy2d_raw_scale",
]
