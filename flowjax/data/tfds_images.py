"""Image datasets prepared with TFDS, read without TensorFlow and without network.

Reading path (ours, following TFDS's and grain's documented random-access API): a dataset
prepared in ``array_record`` format under a local ``data_dir`` is opened with
``tfds.data_source`` (random access, no TensorFlow needed) and served through grain's
``MapDataset``: a global shuffle whose permutation is fixed by ``seed`` and re-drawn each epoch,
infinite or ``num_epochs`` repetition, a per-process slice, batching, and conversion of the pixels
to ``float32`` in ``[-1, 1]``. The iterator of ``ds.to_iter_dataset()`` exposes ``get_state()`` /
``set_state()``: its position is a small dict that goes into a checkpoint, so a resumed run sees
exactly the batches an unbroken run would.

Nothing here downloads. MNIST / CIFAR-10 must be prepared once by the user on a machine with
TensorFlow and network (see :data:`PREPARE_HELP`), then ``FLOWJAX_DATA_DIR`` (or the ``data_dir``
argument) points at that directory.

Per-process sharding: with ``batch_size = B`` the *global* batch and ``P`` processes, the stream
of shuffled (and repeated) example indices is cut into global batches of ``B``; process ``p``
takes the elements ``p, p + P, p + 2P, ...`` of the stream and batches them by ``B / P``, so at
every step the ``P`` local batches partition the global batch of that step. This is grain's
``ShardByJaxProcess`` done at the level of the shuffled stream; pass ``process_index`` and
``process_count`` explicitly, or leave them ``None`` for ``jax.process_index()`` and
``jax.process_count()``.

Pixel scaling: ``x_float = 2 * x / pixel_max - 1``, with ``pixel_max = 255`` for 8-bit images
(MNIST, CIFAR-10) and ``16`` for sklearn's digits.
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any

import numpy as np

from flowjax import _checks

DATA_DIR_ENV = "FLOWJAX_DATA_DIR"

PREPARE_HELP = """\
Prepare it once on a machine with TensorFlow and network, in array_record format:

    pip install tensorflow tensorflow-datasets
    tfds build {name} --data_dir=/path/to/tfds --file_format=array_record
    # or, in Python:
    # tfds.builder("{name}", data_dir="/path/to/tfds", file_format="array_record").download_and_prepare()

then copy /path/to/tfds (it holds {name}/<version>/...) to this machine and set
    export {env}=/path/to/tfds
(or pass data_dir=...). flowjax never downloads at run time."""


def default_data_dir() -> pathlib.Path:
    """``$FLOWJAX_DATA_DIR`` if set, else ``~/.cache/flowjax/tfds``."""
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return pathlib.Path(env).expanduser()
    return pathlib.Path("~/.cache/flowjax/tfds").expanduser()


def _resolve_data_dir(data_dir: str | os.PathLike | None) -> pathlib.Path:
    return default_data_dir() if data_dir is None else pathlib.Path(data_dir).expanduser()


def _version_key(v: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in v.split("."))
    except ValueError:
        return (-1,)


def find_prepared(name: str, data_dir: str | os.PathLike | None = None) -> pathlib.Path | None:
    """The newest prepared version directory of ``name`` (``"mnist"``, ``"cifar10"``,
    ``"name/config"``, or ``"name:1.2.0"``) under ``data_dir``, or ``None``."""
    root = _resolve_data_dir(data_dir)
    base, _, version = name.partition(":")
    ds_dir = root / base
    if not ds_dir.is_dir():
        return None
    candidates = [version] if version else sorted(
        (p.name for p in ds_dir.iterdir() if p.is_dir()), key=_version_key, reverse=True
    )
    for v in candidates:
        if (ds_dir / v / "dataset_info.json").is_file():
            return ds_dir / v
    return None


def tfds_source(name: str, split: str, *, data_dir: str | os.PathLike | None = None) -> Any:
    """Open a prepared TFDS dataset split as a random-access source (``tfds.data_source``).

    Args:
      name: TFDS name, optionally ``name/config`` or ``name:version``.
      split: a TFDS split string (``"train"``, ``"test"``, ``"train[:90%]"``).
      data_dir: the TFDS data directory; default :func:`default_data_dir`.

    Returns:
      A sequence whose items are dicts of numpy arrays (e.g. ``{"image", "label"}``).

    Raises:
      FileNotFoundError: the dataset is not prepared there (the message says how to prepare it).
      ValueError: it is prepared in a format without random access (``tfrecord``).
    """
    import tensorflow_datasets as tfds  # local import: heavy, and only needed here

    root = _resolve_data_dir(data_dir)
    version_dir = find_prepared(name, root)
    base = name.partition(":")[0]
    if version_dir is None:
        raise FileNotFoundError(
            f"TFDS dataset {name!r} is not prepared under {str(root)!r} "
            f"(looked for {str(root / base)}/<version>/dataset_info.json).\n"
            + PREPARE_HELP.format(name=base, env=DATA_DIR_ENV)
        )
    info = json.loads((version_dir / "dataset_info.json").read_text())
    file_format = info.get("fileFormat", "tfrecord")
    if file_format not in ("array_record", "parquet"):
        raise ValueError(
            f"TFDS dataset {name!r} at {str(version_dir)!r} is stored as {file_format!r}, which has no "
            "random access without TensorFlow. Rebuild it with --file_format=array_record.\n"
            + PREPARE_HELP.format(name=base, env=DATA_DIR_ENV)
        )
    builder = tfds.builder_from_directory(str(version_dir))
    # `tfds.data_source(name, ...)` would do the same for registered names; reading the prepared
    # directory directly also works for datasets whose builder code is not importable here, and
    # never triggers a download.
    return builder.as_data_source(split=split)


def to_float_image(image: np.ndarray, pixel_max: float) -> np.ndarray:
    """Integer pixels in ``[0, pixel_max]`` -> ``float32`` in ``[-1, 1]``: ``2 x / pixel_max - 1``."""
    return (np.asarray(image, dtype=np.float32) * np.float32(2.0 / pixel_max) - np.float32(1.0)).astype(np.float32)


def _resolve_process(process_index: int | None, process_count: int | None) -> tuple[int, int]:
    import jax

    pi = jax.process_index() if process_index is None else process_index
    pc = jax.process_count() if process_count is None else process_count
    _checks.check_positive_int("process_count", pc)
    if not isinstance(pi, (int, np.integer)) or isinstance(pi, bool) or not 0 <= pi < pc:
        raise ValueError(f"`process_index` must be an integer in [0, {pc}), got {pi!r}.")
    return int(pi), int(pc)


def image_dataset(
    source: Any,
    *,
    batch_size: int,
    seed: int,
    pixel_max: float = 255.0,
    shuffle: bool = True,
    num_epochs: int | None = None,
    drop_remainder: bool = True,
    process_index: int | None = None,
    process_count: int | None = None,
    image_key: str = "image",
    label_key: str | None = "label",
):
    """A grain ``MapDataset`` of batches ``{"image": float32 (b, H, W, C) in [-1, 1], "label": int32 (b,)}``.

    Args:
      source: a random-access source (e.g. :func:`tfds_source`), items are dicts.
      batch_size: the *global* batch size ``B``, divisible by ``process_count``; each process
        receives ``B / process_count`` rows per step.
      seed: shuffle seed (grain folds in the epoch number, so each epoch is shuffled differently).
      pixel_max: largest raw pixel value (255 for 8-bit images).
      shuffle: shuffle globally (``False`` for evaluation: sequential order).
      num_epochs: ``None`` repeats forever; an integer gives that many passes.
      drop_remainder: drop a final incomplete batch (only matters for finite ``num_epochs``).
      process_index, process_count: this process's slice; default from ``jax``.
      image_key, label_key: item keys; ``label_key=None`` yields images only.

    Returns:
      ``grain.MapDataset``; call ``.to_iter_dataset()`` and ``iter(...)`` for a checkpointable
      iterator (``get_state`` / ``set_state``), or index it directly (``ds[k]`` is step ``k``).
    """
    import grain

    _checks.check_positive_int("batch_size", batch_size)
    pi, pc = _resolve_process(process_index, process_count)
    if batch_size % pc:
        raise ValueError(f"`batch_size` (the global batch, {batch_size}) must be divisible by `process_count` ({pc}).")
    if num_epochs is not None:
        _checks.check_positive_int("num_epochs", num_epochs)
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or not 0 <= seed < 2**32:
        raise ValueError(f"`seed` must be an integer in [0, 2**32), got {seed!r}.")
    if len(source) == 0:
        raise ValueError("`source` is empty.")

    ds = grain.MapDataset.source(source)
    if shuffle:
        ds = ds.shuffle(seed=int(seed))
    if num_epochs != 1:
        ds = ds.repeat(num_epochs)
    if pc > 1:
        ds = ds[pi::pc]

    scale = float(pixel_max)

    def convert(item: dict) -> Any:
        image = to_float_image(item[image_key], scale)
        if image.ndim == 2:
            image = image[:, :, None]
        if label_key is None:
            return {"image": image}
        return {"image": image, "label": np.asarray(item[label_key], dtype=np.int32)}

    ds = ds.map(convert)
    return ds.batch(batch_size // pc, drop_remainder=drop_remainder)


def tfds_image_dataset(name: str, split: str, *, data_dir: str | os.PathLike | None = None, **kwargs: Any):
    """:func:`image_dataset` over :func:`tfds_source` ``(name, split, data_dir)``; see both."""
    return image_dataset(tfds_source(name, split, data_dir=data_dir), **kwargs)


def load_tfds_images(
    name: str,
    split: str,
    data_dir: str | os.PathLike | None = None,
    *,
    pixel_max: float = 255.0,
    image_key: str = "image",
    label_key: str = "label",
    max_examples: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Load a prepared TFDS image split into memory: ``(images float32 (N, H, W, C) in [-1, 1], labels int32 (N,))``.

    For MNIST / CIFAR-10 prepared by the user (see :data:`PREPARE_HELP`); raises
    ``FileNotFoundError`` with preparation instructions when the dataset is missing. Images are
    in the stored order (no shuffling); ``max_examples`` keeps the first examples only.
    """
    source = tfds_source(name, split, data_dir=data_dir)
    n = len(source) if max_examples is None else min(len(source), int(max_examples))
    if n == 0:
        raise ValueError(f"split {split!r} of {name!r} is empty.")
    items = source.__getitems__(range(n)) if hasattr(source, "__getitems__") else [source[i] for i in range(n)]
    images = np.stack([np.asarray(it[image_key]) for it in items])
    if images.ndim == 3:
        images = images[..., None]
    labels = np.asarray([it[label_key] for it in items], dtype=np.int32)
    return to_float_image(images, pixel_max), labels


__all__ = [
    "DATA_DIR_ENV",
    "PREPARE_HELP",
    "default_data_dir",
    "find_prepared",
    "image_dataset",
    "load_tfds_images",
    "tfds_image_dataset",
    "tfds_source",
    "to_float_image",
]
