"""sklearn's 8x8 handwritten digits as a local TFDS dataset (array_record), served through grain.

The data are the 1797 images of ``sklearn.datasets.load_digits`` (UCI optical recognition of
handwritten digits, test part), which ship inside scikit-learn: no network is needed. Raw pixels
are integers in ``[0, 16]``.

Split (ours, fixed): the examples are kept in sklearn's order; ``index % 5 == 0`` is the **test**
split (360 images) and the rest is **train** (1437 images). No random number generator is
involved, so the split cannot drift between library versions.

Scaling: ``image = 2 * pixel / 16 - 1`` as ``float32`` of shape ``(8, 8, 1)`` in ``[-1, 1]``;
labels ``int32`` in ``0..9``.

Two paths give the same arrays:

- :func:`load_digits_arrays` reads sklearn directly into memory (numpy); for small experiments.
- :func:`prepare_digits` builds the TFDS dataset ``flowjax_digits`` (a custom
  ``GeneratorBasedBuilder``, ``file_format="array_record"``) under the data directory
  (``$FLOWJAX_DATA_DIR`` or ``~/.cache/flowjax/tfds``) in well under a second, once;
  :func:`digits_source` opens a split with ``tfds.data_source`` and :func:`digits_dataset` wraps it
  in a deterministic, per-process sharded, checkpointable grain pipeline (see
  :mod:`flowjax.data.tfds_images`).

Example:
    >>> images, labels = load_digits_arrays("train")
    >>> images.shape, labels.shape, float(images.min()), float(images.max())
    ((1437, 8, 8, 1), (1437,), -1.0, 1.0)
"""

from __future__ import annotations

import os
import pathlib
from typing import Any, Literal

import numpy as np
import tensorflow_datasets as tfds

from flowjax import _checks
from flowjax.data import tfds_images

DIGITS_NAME = "flowjax_digits"
DIGITS_PIXEL_MAX = 16.0
DIGITS_SPLITS: tuple[str, ...] = ("train", "test")
DIGITS_NUM_EXAMPLES = {"train": 1437, "test": 360}
_TEST_EVERY = 5


def _split_indices(split: str, n: int) -> np.ndarray:
    idx = np.arange(n)
    is_test = idx % _TEST_EVERY == 0
    return idx[is_test] if split == "test" else idx[~is_test]


def _raw_digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.asarray(d.images)
    if images.shape != (1797, 8, 8) or images.min() < 0 or images.max() > DIGITS_PIXEL_MAX:
        raise RuntimeError(f"unexpected sklearn digits: shape {images.shape}, range [{images.min()}, {images.max()}].")
    return images.astype(np.uint8)[..., None], np.asarray(d.target, dtype=np.int32)


def load_digits_arrays(split: Literal["train", "test"]) -> tuple[np.ndarray, np.ndarray]:
    """In-memory digits split: ``(images float32 (N, 8, 8, 1) in [-1, 1], labels int32 (N,))``.

    ``N = 1437`` for ``"train"`` and ``360`` for ``"test"``; sklearn's order within a split.
    """
    _checks.check_choice("split", split, DIGITS_SPLITS)
    images, labels = _raw_digits()
    idx = _split_indices(split, len(labels))
    return tfds_images.to_float_image(images[idx], DIGITS_PIXEL_MAX), labels[idx]


class FlowjaxDigits(tfds.core.GeneratorBasedBuilder):
    """TFDS builder for sklearn's 8x8 digits (registered as ``flowjax_digits``).

    Features: ``image`` uint8 ``(8, 8, 1)`` with values in ``[0, 16]``, ``label`` ClassLabel(10).
    Splits: see the module docstring. Keys are sklearn indices.
    """

    VERSION = tfds.core.Version("1.0.0")
    # No downloads, so no checksums file. TFDS would otherwise locate one next to this module's
    # code, which needs the optional `importlib_resources` package for builders inside packages.
    code_path = None
    RELEASE_NOTES = {"1.0.0": "sklearn load_digits; test = index % 5 == 0."}

    def _info(self) -> tfds.core.DatasetInfo:
        # DatasetInfo is built directly: `dataset_info_from_configs` needs a packaged builder.
        return tfds.core.DatasetInfo(
            builder=self,
            description="sklearn 8x8 handwritten digits (1797 images, pixels 0..16); "
            "test split = sklearn index % 5 == 0.",
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Tensor(shape=(8, 8, 1), dtype=np.uint8),
                    "label": tfds.features.ClassLabel(num_classes=10),
                }
            ),
            supervised_keys=("image", "label"),
            # Keep sklearn's order on disk (TFDS otherwise shuffles by key hash when writing), so
            # the TFDS path and `load_digits_arrays` agree element by element.
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager: Any) -> dict:
        del dl_manager  # no downloads
        return {split: self._generate_examples(split) for split in DIGITS_SPLITS}

    def _generate_examples(self, split: str):
        images, labels = _raw_digits()
        for i in _split_indices(split, len(labels)):
            yield int(i), {"image": images[i], "label": int(labels[i])}


def prepare_digits(data_dir: str | os.PathLike | None = None) -> pathlib.Path:
    """Build ``flowjax_digits`` as array_record under ``data_dir`` if it is not there; return ``data_dir``."""
    root = tfds_images._resolve_data_dir(data_dir)
    name = f"{DIGITS_NAME}:{FlowjaxDigits.VERSION}"
    if tfds_images.find_prepared(name, root) is None:
        root.mkdir(parents=True, exist_ok=True)
        try:
            FlowjaxDigits(data_dir=str(root), file_format="array_record").download_and_prepare()
        except OSError:
            # Another process may have finished the same build first (TFDS writes to a temporary
            # directory and renames it); only re-raise if the dataset is still missing.
            if tfds_images.find_prepared(name, root) is None:
                raise
    return root


def digits_source(split: Literal["train", "test"], *, data_dir: str | os.PathLike | None = None) -> Any:
    """Random-access source of a digits split via ``tfds.data_source`` (building it first if needed).

    Items are ``{"image": uint8 (8, 8, 1) in [0, 16], "label": int}``.
    """
    _checks.check_choice("split", split, DIGITS_SPLITS)
    root = prepare_digits(data_dir)
    return tfds.data_source(DIGITS_NAME, split=split, data_dir=str(root), download=False)


def digits_dataset(
    split: Literal["train", "test"],
    *,
    batch_size: int,
    seed: int,
    data_dir: str | os.PathLike | None = None,
    shuffle: bool = True,
    num_epochs: int | None = None,
    drop_remainder: bool = True,
    process_index: int | None = None,
    process_count: int | None = None,
):
    """Grain ``MapDataset`` of digits batches ``{"image": float32 (b, 8, 8, 1) in [-1, 1], "label": int32 (b,)}``.

    Deterministic in ``seed``, per-process sharded (``b = batch_size / process_count``), and
    checkpointable through ``iter(ds.to_iter_dataset())``'s ``get_state`` / ``set_state``; see
    :func:`flowjax.data.tfds_images.image_dataset` for the semantics.
    """
    return tfds_images.image_dataset(
        digits_source(split, data_dir=data_dir),
        batch_size=batch_size,
        seed=seed,
        pixel_max=DIGITS_PIXEL_MAX,
        shuffle=shuffle,
        num_epochs=num_epochs,
        drop_remainder=drop_remainder,
        process_index=process_index,
        process_count=process_count,
    )


__all__ = [
    "DIGITS_NAME",
    "DIGITS_NUM_EXAMPLES",
    "DIGITS_PIXEL_MAX",
    "DIGITS_SPLITS",
    "FlowjaxDigits",
    "digits_dataset",
    "digits_source",
    "load_digits_arrays",
    "prepare_digits",
]
