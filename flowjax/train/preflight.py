"""Checks that run before training starts, so that a bad setup fails in seconds, not hours.

* :func:`check_output_dir`: the output directory can be created and written (a probe file is
  written, fsynced, read back and removed) and has room for the checkpoints to come.
* :func:`check_finite_data`: an in-memory data set has no NaN/Inf (call it when data is loaded).
* :func:`check_batch`: a batch is a pytree of arrays with a common batch size, floating where
  floats are expected, and finite.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import jax
import numpy as np


class PreflightError(RuntimeError):
    """The environment cannot run this training job (directory, disk space)."""


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def check_output_dir(path: str | os.PathLike, *, min_free_bytes: int = 0) -> Path:
    """Create ``path`` if needed and prove it is writable with at least ``min_free_bytes`` free.

    Raises:
      PreflightError: naming the directory and the reason (not a directory, not writable, full).
    """
    path = Path(path).absolute()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (OSError, FileExistsError) as e:
        raise PreflightError(f"output directory `{path}` cannot be created: {e}.") from e
    if not path.is_dir():
        raise PreflightError(f"output directory `{path}` exists and is not a directory.")
    probe = path / f".flowjax-write-probe-{uuid.uuid4().hex}"
    payload = b"flowjax preflight probe\n" * 64
    try:
        with open(probe, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        if probe.read_bytes() != payload:
            raise OSError("the probe file read back differently")
    except OSError as e:
        raise PreflightError(f"output directory `{path}` is not writable: {e}.") from e
    finally:
        try:
            probe.unlink()
        except OSError:
            pass
    free = shutil.disk_usage(path).free
    if free < min_free_bytes:
        raise PreflightError(
            f"output directory `{path}` has {_human(free)} free, but at least {_human(min_free_bytes)} "
            f"are needed for checkpoints; free space or choose another directory."
        )
    return path


def check_finite_data(name: str, data: Any) -> None:
    """Reject a data set (array or pytree of arrays) that holds NaN or Inf, naming leaf and count."""
    for path, x in jax.tree_util.tree_flatten_with_path(data)[0]:
        arr = np.asarray(x)
        if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.complexfloating)):
            continue
        bad = ~np.isfinite(arr)
        if bad.any():
            where = np.argwhere(bad)[0].tolist()
            raise ValueError(
                f"`{name}{jax.tree_util.keystr(path)}` contains {int(bad.sum())} NaN/Inf value(s) "
                f"(first at index {tuple(where)}); clean the data before training."
            )


def check_batch(name: str, batch: Any, *, require_float: bool = False, finite: bool = True) -> int:
    """Validate a batch pytree: arrays with a common leading batch size; returns that size.

    Args:
      name: how the batch is called in messages (e.g. ``"batch at step 0"``).
      require_float: every leaf must be floating point.
      finite: reject NaN/Inf in floating leaves.
    """
    leaves = jax.tree_util.tree_flatten_with_path(batch)[0]
    if not leaves:
        raise ValueError(f"`{name}` is empty: expected a pytree of arrays.")
    size = None
    for path, x in leaves:
        leaf = f"{name}{jax.tree_util.keystr(path)}"
        if not hasattr(x, "shape") or not hasattr(x, "dtype"):
            raise TypeError(f"`{leaf}` must be an array, got {type(x).__name__}.")
        if x.ndim == 0:
            raise ValueError(f"`{leaf}` must have a leading batch axis, got a scalar.")
        if require_float and not np.issubdtype(np.dtype(x.dtype), np.floating):
            raise TypeError(f"`{leaf}` must have a floating dtype, got {x.dtype}.")
        if size is None:
            size = x.shape[0]
        elif x.shape[0] != size:
            raise ValueError(
                f"`{leaf}` has batch size {x.shape[0]}, but other leaves of `{name}` have {size}."
            )
    if finite:
        check_finite_data(name, batch)
    return int(size)
