"""Named PRNG streams: the training step and the data pipeline never draw from the same key.

The convention "the key of step ``k`` is ``fold_in(key(seed), k)``" is natural for both the
training step (noise, times, dropout) and a generated-data batch function, and experiments pass
the same integer seed to both. Then the loss's noise and the data were drawn from *the same*
random bits: e.g. ``losses.cfm`` splits its key into ``(k0, kc, kt)`` and the checkerboard sampler
splits its key into ``(k_x, k_r, k_y)``, so the source noise ``x0`` reused the bits of the data's
``x`` coordinate and the time ``t`` those of its ``y`` offset. The pairs ``(x0, x1, t)`` were then
not independent: the coupling was a fixed function of shared bits instead of the product coupling,
and with a mixture sampler the time was tied to the mixture component (found on the flat-torus
RFM experiment, where two of four modes were trained only at a quarter of the times each and the
held-out loss was 8x the training loss).

Each stream folds a fixed tag into the user's key before the step, so ``fold_in(key(seed), k)``
in a user's own batch function cannot equal the training step's key either.
"""

from __future__ import annotations

import jax
from jaxtyping import Array

# ASCII "trn", "dat" and "src": fixed forever (changing them changes every run's random draws).
TRAIN_STREAM = 0x74726E
DATA_STREAM = 0x646174
SOURCE_STREAM = 0x737263


def train_key(key: Array, step) -> Array:
    """The key of training step ``step`` of a run whose key is ``key`` (raw or typed)."""
    return jax.random.fold_in(jax.random.fold_in(key, TRAIN_STREAM), step)


def data_key(seed: int, index) -> Array:
    """The key of data draw ``index`` (a step or an epoch) of a data stream seeded with ``seed``."""
    return jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), DATA_STREAM), index)


def source_key(seed: int, index) -> Array:
    """The key of source (noise) draw ``index`` made in the data pipeline with ``seed``.

    Used where the source sample is drawn outside the training step, e.g. by
    :func:`flowjax.couplings.ot_paired_batch_fn`, so that it shares bits with neither the data
    stream nor the step.
    """
    return jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), SOURCE_STREAM), index)


__all__ = ["DATA_STREAM", "SOURCE_STREAM", "TRAIN_STREAM", "data_key", "source_key", "train_key"]
