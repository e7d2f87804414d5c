"""Checkpoints: Orbax, atomic, keep the last N (and the best), restore that reshards, never pickle.

Layout of ``directory``::

    <step>/state/...    the train state (Orbax StandardSave: tensorstore/OCDBT, JSON metadata)
    <step>/meta/...     JSON: step, data-iterator state, loop state, structure and checksums
    <step>.orbax-checkpoint-tmp...   an interrupted save (ignored, removed on the next start)
    ../corrupt_checkpoints/<step>-<time>/   a checkpoint that failed to restore, moved aside

Guarantees and how they are obtained:

* **Atomic.** Orbax writes into a temporary directory and renames it to ``<step>`` only when every
  file is written (on local disks; on GCS it writes a ``commit_success`` marker). A process killed
  with ``kill -9`` at any moment, including during a save, leaves either a complete step or a
  temporary directory, never a half-written ``<step>``.
* **Verified.** The JSON metadata holds the tree structure (path, shape, dtype of every leaf) and a
  checksum of every leaf, computed on device with integer arithmetic (exact and independent of
  the sharding). :meth:`Checkpointer.restore_latest` re-computes the checksums after reading; a
  truncated or bit-flipped file therefore gives :class:`CheckpointCorruptError` instead of silently
  wrong parameters, the step is moved aside, and the next-newest checkpoint is tried.
* **No pickle.** The state goes through Orbax's StandardCheckpointHandler (tensorstore arrays and
  JSON metadata); the extra data goes through JsonCheckpointHandler. A test asserts that restore
  works with ``pickle`` disabled.
* **Reshards.** Restore takes an *abstract* target state (``jax.ShapeDtypeStruct`` with
  shardings, see :func:`abstract_state`), so a checkpoint written on 8 devices restores onto 1 and
  vice versa.
* **Clear mismatch errors.** A checkpoint from a different model raises
  :class:`CheckpointMismatchError` naming the first differing leaf, the expected and the found
  shape/dtype, before any array is read.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as ocm

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    """Base class for checkpoint problems."""


class CheckpointCorruptError(CheckpointError):
    """A checkpoint exists but cannot be read back exactly (truncated, bit-flipped, missing files)."""


class CheckpointMismatchError(CheckpointError, ValueError):
    """A checkpoint belongs to a different model/state structure than the one being restored."""


# --------------------------------------------------------------------------------------------
# Structure fingerprints and checksums.


def _path_str(path: Any) -> str:
    return jax.tree_util.keystr(path).lstrip(".") or "<root>"


def tree_structure_summary(tree: Any) -> dict[str, list]:
    """``{leaf path: [shape, dtype]}`` for every array leaf: a JSON-able description of a tree."""
    out = {}
    for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]:
        out[_path_str(path)] = [list(np.shape(x)), str(np.dtype(x.dtype))]
    return out


def check_structure(saved: dict[str, list], expected: dict[str, list], *, what: str = "checkpoint") -> None:
    """Raise :class:`CheckpointMismatchError` naming the first leaf that differs."""
    for name, (shape, dtype) in expected.items():
        if name not in saved:
            extra = sorted(set(saved) - set(expected))
            raise CheckpointMismatchError(
                f"{what} does not match the model: leaf `{name}` (expected shape {tuple(shape)}, dtype "
                f"{dtype}) is missing from the checkpoint"
                + (f"; the checkpoint has leaves not in the model, e.g. {extra[:3]}." if extra else ".")
            )
        s_shape, s_dtype = saved[name]
        if list(s_shape) != list(shape) or s_dtype != dtype:
            raise CheckpointMismatchError(
                f"{what} does not match the model at leaf `{name}`: expected shape {tuple(shape)} dtype "
                f"{dtype}, found shape {tuple(s_shape)} dtype {s_dtype}."
            )
    extra = sorted(set(saved) - set(expected))
    if extra:
        raise CheckpointMismatchError(
            f"{what} does not match the model: it has leaves the model lacks, e.g. `{extra[0]}` "
            f"(shape {tuple(saved[extra[0]][0])}, dtype {saved[extra[0]][1]})."
        )


def _as_uint32(x: jax.Array) -> jax.Array:
    dtype = np.dtype(x.dtype)
    if dtype == np.bool_:
        return x.astype(jnp.uint32)
    if jnp.issubdtype(dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
        dtype = np.dtype(x.dtype)
    size = dtype.itemsize
    if size == 4:
        return jax.lax.bitcast_convert_type(x, jnp.uint32)
    if size == 8:
        return jax.lax.bitcast_convert_type(x, jnp.uint32)  # adds a trailing axis of 2
    if size == 2:
        return jax.lax.bitcast_convert_type(x, jnp.uint16).astype(jnp.uint32)
    if size == 1:
        return jax.lax.bitcast_convert_type(x, jnp.uint8).astype(jnp.uint32)
    raise TypeError(f"cannot checksum dtype {dtype}.")


@jax.jit
def _checksums(leaves: list[jax.Array]) -> list[jax.Array]:
    out = []
    for x in leaves:
        bits = _as_uint32(x).reshape(-1)
        # Position-weighted sum mod 2**32 (odd weights): exact, order-sensitive, sharding-independent.
        idx = jax.lax.iota(jnp.uint32, bits.shape[0])
        weights = idx * jnp.uint32(2654435761) + jnp.uint32(0x9E3779B1)
        mixed = (bits ^ (bits >> 16)) * jnp.uint32(0x85EBCA6B) + bits
        out.append(jnp.sum(mixed * weights, dtype=jnp.uint32))
    return out


def tree_checksums(tree: Any) -> dict[str, int]:
    """``{leaf path: uint32 checksum}`` computed on device; identical for any sharding of the tree."""
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    if not flat:
        return {}
    sums = jax.device_get(_checksums([x for _, x in flat]))
    return {_path_str(p): int(s) for (p, _), s in zip(flat, sums)}


def abstract_state(state: Any, shardings: Any = None) -> Any:
    """``jax.ShapeDtypeStruct`` tree with shardings: the restore target that makes Orbax reshard."""

    def one(x, s=None):
        sharding = s if s is not None else getattr(x, "sharding", None)
        return jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=sharding)

    if shardings is None:
        return jax.tree.map(one, state)
    return jax.tree.map(one, state, shardings)


def _short(e: BaseException, n: int = 300) -> str:
    msg = str(e)
    return msg if len(msg) <= n else msg[:n] + " ..."


def tree_nbytes(tree: Any) -> int:
    return int(sum(math.prod(np.shape(x)) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree)))


# --------------------------------------------------------------------------------------------
# The manager wrapper.


class Checkpointer:
    """A thin wrapper over ``orbax.checkpoint.CheckpointManager`` with verified, falling-back restore.

    Args:
      directory: where step directories live (created if missing).
      keep: number of most recent checkpoints to keep.
      best_metric: if set, also keep the single best checkpoint by this metric (passed to
        :meth:`save` as ``metrics``).
      best_mode: ``"min"`` or ``"max"`` for ``best_metric``.
      async_save: write in a background thread (Orbax async checkpointing); :meth:`wait` or
        :meth:`close` blocks until the writes are committed.
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        keep: int = 3,
        best_metric: str | None = None,
        best_mode: str = "min",
        async_save: bool = True,
    ):
        if not isinstance(keep, int) or isinstance(keep, bool) or keep < 1:
            raise ValueError(f"`keep` must be a positive integer, got {keep!r}.")
        if best_mode not in ("min", "max"):
            raise ValueError(f"`best_mode` must be 'min' or 'max', got {best_mode!r}.")
        self.directory = Path(directory).absolute()
        self.keep = keep
        self.best_metric = best_metric
        self.best_mode = best_mode
        self.async_save = async_save
        self._manager: ocp.CheckpointManager | None = None
        self.last_restore_errors: list[str] = []  # messages of corrupt steps skipped by restore_latest
        self._open()

    # -- manager lifecycle --------------------------------------------------------------------
    def _open(self) -> None:
        policies: list[Any] = [ocm.LatestN(n=self.keep)]
        if self.best_metric is not None:
            name = self.best_metric
            policies.append(
                ocm.BestN(
                    get_metric_fn=lambda m: m[name],
                    reverse=self.best_mode == "min",
                    n=1,
                    keep_checkpoints_without_metrics=False,
                )
            )
        policy = policies[0] if len(policies) == 1 else ocm.AnyPreservationPolicy(policies)
        options = ocp.CheckpointManagerOptions(
            preservation_policy=policy,
            enable_async_checkpointing=self.async_save,
            cleanup_tmp_directories=True,
            create=True,
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "meta"))

    def close(self) -> None:
        if self._manager is not None:
            self._manager.wait_until_finished()
            self._manager.close()
            self._manager = None

    def __enter__(self) -> "Checkpointer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def manager(self) -> ocp.CheckpointManager:
        if self._manager is None:
            raise CheckpointError("the Checkpointer is closed.")
        return self._manager

    # -- queries -------------------------------------------------------------------------------
    def steps(self) -> list[int]:
        """Complete (committed) checkpoint steps, oldest first."""
        return sorted(self.manager.all_steps())

    def latest_step(self) -> int | None:
        steps = self.steps()
        return steps[-1] if steps else None

    def wait(self) -> None:
        """Block until any background save is committed."""
        self.manager.wait_until_finished()

    # -- save ----------------------------------------------------------------------------------
    def save(
        self,
        step: int,
        state: Any,
        *,
        extra: dict | None = None,
        metrics: dict[str, float] | None = None,
    ) -> bool:
        """Save ``state`` (and JSON-able ``extra``) at ``step``; a step that exists is not rewritten.

        ``metrics`` (JSON-able scalars) rank checkpoints for ``best_metric``. Returns whether a
        save was started.
        """
        step = int(step)
        if step in self.manager.all_steps():
            return False
        meta = {
            "format_version": FORMAT_VERSION,
            "step": step,
            "structure": tree_structure_summary(state),
            "checksums": tree_checksums(state),
            "extra": extra or {},
        }
        try:
            json.dumps(meta)
        except TypeError as e:
            raise TypeError(f"checkpoint `extra` must be JSON-serialisable (no pickle is used): {e}") from e
        if metrics is not None and self.best_metric is not None and self.best_metric not in metrics:
            metrics = None
        return bool(
            self.manager.save(
                step,
                args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
                metrics=metrics if self.best_metric is not None else None,
                force=True,
            )
        )

    # -- restore -------------------------------------------------------------------------------
    def read_meta(self, step: int) -> dict:
        """The JSON metadata of ``step`` (raises :class:`CheckpointCorruptError` if unreadable)."""
        try:
            restored = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
            meta = restored.meta
        except Exception as e:  # noqa: BLE001 - any read failure means the step is unusable
            raise CheckpointCorruptError(
                f"checkpoint {self.directory / str(step)}: metadata unreadable ({type(e).__name__}: {_short(e)})."
            ) from e
        if not isinstance(meta, dict) or "structure" not in meta or "checksums" not in meta:
            raise CheckpointCorruptError(f"checkpoint {self.directory / str(step)}: metadata incomplete.")
        return meta

    def restore(self, step: int, target: Any) -> tuple[Any, dict]:
        """Restore ``step`` onto ``target`` (a concrete or abstract state); returns ``(state, extra)``.

        Raises:
          CheckpointMismatchError: the checkpoint's tree differs from ``target``'s.
          CheckpointCorruptError: files missing, truncated or not matching their checksums.
        """
        meta = self.read_meta(step)
        check_structure(
            meta["structure"], tree_structure_summary(target), what=f"checkpoint {self.directory / str(step)}"
        )
        abstract = abstract_state(target)
        try:
            restored = self.manager.restore(
                step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))
            )
            state = restored.state
        except Exception as e:  # noqa: BLE001
            raise CheckpointCorruptError(
                f"checkpoint {self.directory / str(step)}: state unreadable ({type(e).__name__}: {_short(e)})."
            ) from e
        sums = tree_checksums(state)
        for name, expected in meta["checksums"].items():
            if sums.get(name) != expected:
                raise CheckpointCorruptError(
                    f"checkpoint {self.directory / str(step)}: leaf `{name}` does not match its saved checksum "
                    f"(expected {expected}, got {sums.get(name)}); the file is corrupt or truncated."
                )
        if int(meta["step"]) != int(step):
            raise CheckpointCorruptError(
                f"checkpoint {self.directory / str(step)}: metadata says step {meta['step']}."
            )
        return state, meta.get("extra", {})

    def quarantine(self, step: int) -> Path | None:
        """Move a bad step out of the managed directory (kept for inspection); returns its new path."""
        self.wait()
        src = self.directory / str(step)
        dst = None
        if jax.process_index() == 0 and src.exists():
            dst = self.directory.parent / "corrupt_checkpoints" / f"{step}-{int(time.time() * 1000)}"
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(src), str(dst))
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(f"flowjax-quarantine-{step}")
        # The manager caches its list of steps: rebuild it.
        self._manager.close()
        self._open()
        return dst

    def restore_latest(self, target: Any) -> tuple[int, Any, dict] | None:
        """Restore the newest checkpoint that reads back exactly; ``None`` if there is none.

        A corrupt newest checkpoint is logged, moved aside (:meth:`quarantine`) and the next newest
        is tried. A structure mismatch is a user error (wrong directory or model) and is raised.
        """
        self.wait()
        for step in reversed(self.steps()):
            try:
                state, extra = self.restore(step, target)
                return step, state, extra
            except CheckpointMismatchError:
                raise
            except CheckpointCorruptError as e:
                moved = self.quarantine(step)
                logger.warning("%s Moved to %s; falling back to the previous checkpoint.", e, moved)
                self.last_restore_errors.append(str(e))
        return None
