"""Teacher (noise, sample) pairs for reflow, Rectified Diffusion and trajectory distillation.

Reflow (Liu et al. 2209.03003) and Rectified Diffusion (Wang et al. 2410.07303) retrain a model on
*matched* pairs ``(x0, x1 = X_{0,1}(x0))`` produced by a pretrained model's ODE. This module makes
such pairs at any scale:

- :func:`generate_pairs`: solve the teacher ODE from noise, in batches of ``batch_size``, each
  batch jitted once and (optionally) sharded over a mesh axis, so the solve is data parallel over
  every device (one code path from 1 CPU to a pod). Returns in-memory arrays.
- :func:`write_pairs`: the same, written to a directory of ``.npy`` shards as they are produced
  (atomic: each shard is written to a temporary name and renamed; ``meta.json`` is written last, so
  a directory with a ``meta.json`` is complete). Pair sets larger than memory never exist in RAM.
- :class:`PairDataset`: streaming reader over such a directory; shards are memory-mapped, read
  lazily, and :meth:`PairDataset.iterate` yields shuffled batches shard by shard (deterministic
  for a seed, per-process slicing like :mod:`flowjax.data.batching`).

The file format (ours): ``x0-00000.npy``, ``x1-00000.npy`` [, ``c-00000.npy``] per shard and a
``meta.json`` with ``num_pairs, shard_size, num_shards, shape, dtype`` and a free-form ``teacher``
description (solver, steps, ...). Plain ``.npy`` was chosen over array_record because pairs are
dense fixed-shape arrays: a shard is one contiguous, memory-mappable block.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array

from flowjax import _checks
from flowjax.samplers.ode import ode

SourceFn = Callable[[Array, int], Array]


def _make_solve(v_fn: Callable[..., Array], *, solver: str, steps: int, times: Any, t0: float, t1: float):
    def solve(x0, c):
        return ode(v_fn, x0, t0=t0, t1=t1, solver=solver, steps=steps, times=times, c=c)

    return jax.jit(solve)


def _shard(x: Any, mesh: jax.sharding.Mesh | None, axis: str):
    if mesh is None or x is None:
        return x
    spec = jax.sharding.PartitionSpec(axis)
    return jax.device_put(x, jax.sharding.NamedSharding(mesh, spec))


def _iter_batches(
    v_fn, key, num_pairs, *, sample_source, batch_size, solver, steps, times, t0, t1, mesh, axis, condition_fn
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
    _checks.check_positive_int("num_pairs", num_pairs)
    _checks.check_positive_int("batch_size", batch_size)
    if mesh is not None:
        size = mesh.shape[axis]
        if batch_size % size:
            raise ValueError(f"`batch_size` ({batch_size}) must be divisible by the mesh axis {axis!r} of size {size}.")
    solve = _make_solve(v_fn, solver=solver, steps=steps, times=times, t0=t0, t1=t1)
    for b, start in enumerate(range(0, num_pairs, batch_size)):
        kb = jax.random.fold_in(key, b)
        k0, kc = jax.random.split(kb)
        # Always draw and solve a full batch (static shapes: one compilation), then trim.
        x0 = sample_source(k0, batch_size)
        c = None if condition_fn is None else condition_fn(kc, batch_size)
        x1 = solve(_shard(x0, mesh, axis), _shard(c, mesh, axis))
        keep = min(batch_size, num_pairs - start)
        yield (np.asarray(x0)[:keep], np.asarray(x1)[:keep], None if c is None else np.asarray(c)[:keep])


def generate_pairs(
    v_fn: Callable[..., Array],
    key: Array,
    num_pairs: int,
    *,
    sample_source: SourceFn,
    batch_size: int = 4096,
    solver: str = "rk4",
    steps: int = 200,
    times: Any = None,
    t0: float = 0.0,
    t1: float = 1.0,
    mesh: jax.sharding.Mesh | None = None,
    axis: str = "data",
    condition_fn: Callable[[Array, int], Array] | None = None,
) -> tuple[Array, Array] | tuple[Array, Array, Array]:
    """Matched pairs ``(x0, X_{t0,t1}(x0))`` of a teacher velocity field, in memory.

    Args:
      v_fn: teacher velocity ``v(x, t)`` (or ``v(x, t, c=c)`` when ``condition_fn`` is given).
      key: PRNG key; batch ``b`` uses ``fold_in(key, b)``, so the pairs do not depend on
        ``mesh``.
      num_pairs: number of pairs.
      sample_source: ``sample_source(key, n) -> x0`` (e.g. standard normal of the data shape).
      batch_size: pairs solved per jitted call (the last batch is solved full and trimmed).
      solver, steps, times, t0, t1: passed to :func:`flowjax.samplers.ode` (default RK4, 200 steps
        as in the Rectified Diffusion spec's toy).
      mesh, axis: if a mesh is given, every batch is sharded along ``axis`` before the solve, so
        the solve runs data parallel on all devices of that axis (build it with
        ``axis_types=(jax.sharding.AxisType.Auto, ...)``: the solver's scatters need the compiler
        to choose output shardings).
      condition_fn: optional ``condition_fn(key, n) -> c`` drawing conditions (e.g. labels); the
        pairs then carry them.

    Returns:
      ``(x0, x1)`` or ``(x0, x1, c)`` as arrays with ``num_pairs`` rows.
    """
    parts = list(
        _iter_batches(
            v_fn, key, num_pairs, sample_source=sample_source, batch_size=batch_size, solver=solver, steps=steps,
            times=times, t0=t0, t1=t1, mesh=mesh, axis=axis, condition_fn=condition_fn,
        )
    )
    x0 = jnp.asarray(np.concatenate([p[0] for p in parts]))
    x1 = jnp.asarray(np.concatenate([p[1] for p in parts]))
    if condition_fn is None:
        return x0, x1
    return x0, x1, jnp.asarray(np.concatenate([p[2] for p in parts]))


def _save_atomic(path: Path, arr: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.save(f, arr)
    os.replace(tmp, path)


def write_pairs(
    directory: str | os.PathLike,
    v_fn: Callable[..., Array],
    key: Array,
    num_pairs: int,
    *,
    sample_source: SourceFn,
    shard_size: int = 65_536,
    batch_size: int = 4096,
    solver: str = "rk4",
    steps: int = 200,
    times: Any = None,
    t0: float = 0.0,
    t1: float = 1.0,
    mesh: jax.sharding.Mesh | None = None,
    axis: str = "data",
    condition_fn: Callable[[Array, int], Array] | None = None,
    dtype: Any = None,
    teacher: dict | None = None,
) -> "PairDataset":
    """Generate teacher pairs (as :func:`generate_pairs`) and stream them to ``.npy`` shards.

    Only one shard is held in host memory at a time. ``shard_size`` must be a multiple of
    ``batch_size``. ``dtype`` optionally casts the stored arrays (e.g. ``np.float16`` / bf16 to
    halve storage, as the Rectified Diffusion spec suggests for images). Returns the reader.
    """
    _checks.check_positive_int("shard_size", shard_size)
    if shard_size % batch_size:
        raise ValueError(f"`shard_size` ({shard_size}) must be a multiple of `batch_size` ({batch_size}).")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if (directory / "meta.json").exists():
        raise FileExistsError(f"{directory} already holds a pair set (meta.json exists).")
    buffers: dict[str, list[np.ndarray]] = {"x0": [], "x1": [], "c": []}
    shard, filled, shape, stored_dtype = 0, 0, None, None

    def flush():
        nonlocal shard, filled
        for name in ("x0", "x1", "c"):
            if buffers[name]:
                _save_atomic(directory / f"{name}-{shard:05d}.npy", np.concatenate(buffers[name]))
            buffers[name] = []
        shard, filled = shard + 1, 0

    for x0, x1, c in _iter_batches(
        v_fn, key, num_pairs, sample_source=sample_source, batch_size=batch_size, solver=solver, steps=steps,
        times=times, t0=t0, t1=t1, mesh=mesh, axis=axis, condition_fn=condition_fn,
    ):
        if dtype is not None:
            x0, x1 = x0.astype(dtype), x1.astype(dtype)
        shape, stored_dtype = x0.shape[1:], x0.dtype
        buffers["x0"].append(x0)
        buffers["x1"].append(x1)
        if c is not None:
            buffers["c"].append(c)
        filled += x0.shape[0]
        if filled >= shard_size:
            flush()
    if filled:
        flush()
    meta = {
        "num_pairs": int(num_pairs),
        "shard_size": int(shard_size),
        "num_shards": int(shard),
        "shape": list(shape),
        "dtype": str(stored_dtype),
        "has_condition": condition_fn is not None,
        "teacher": {"solver": solver, "steps": steps, "t0": t0, "t1": t1, **(teacher or {})},
    }
    tmp = directory / "meta.json.tmp"
    tmp.write_text(json.dumps(meta, indent=2))
    os.replace(tmp, directory / "meta.json")
    return PairDataset(directory)


class PairDataset:
    """Streaming reader of a pair directory written by :func:`write_pairs`.

    Attributes:
      meta: the parsed ``meta.json``.

    Shards are memory-mapped on first use, so opening a dataset reads nothing but ``meta.json``.
    """

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        meta_path = self.directory / "meta.json"
        if not meta_path.exists():
            raise FileNotFoundError(f"{self.directory} is not a complete pair set (no meta.json).")
        self.meta = json.loads(meta_path.read_text())

    def __len__(self) -> int:
        return self.meta["num_pairs"]

    @property
    def num_shards(self) -> int:
        return self.meta["num_shards"]

    def shard(self, i: int) -> tuple[np.ndarray, ...]:
        """Memory-mapped arrays ``(x0, x1[, c])`` of shard ``i``."""
        if not 0 <= i < self.num_shards:
            raise IndexError(f"shard index {i} out of range [0, {self.num_shards}).")
        names = ("x0", "x1", "c") if self.meta["has_condition"] else ("x0", "x1")
        return tuple(np.load(self.directory / f"{n}-{i:05d}.npy", mmap_mode="r") for n in names)

    def load(self) -> tuple[np.ndarray, ...]:
        """All pairs in memory (for small sets)."""
        parts = [self.shard(i) for i in range(self.num_shards)]
        return tuple(np.concatenate([p[j] for p in parts]) for j in range(len(parts[0])))

    def iterate(
        self,
        batch_size: int,
        *,
        seed: int = 0,
        epochs: int | None = 1,
        shuffle: bool = True,
        process_index: int | None = None,
        process_count: int | None = None,
    ) -> Iterator[dict[str, np.ndarray]]:
        """Yield batches ``{"x0", "x1"[, "c"]}`` streaming one shard at a time.

        Epoch ``e`` visits the shards in the order of a permutation drawn from ``(seed, e)`` and
        each shard's rows in a permutation drawn from ``(seed, e, shard)``; batches do not cross
        shard boundaries (a shard's remainder smaller than ``batch_size`` is dropped). ``batch_size``
        is global; process ``p`` of ``P`` gets rows ``[p B/P, (p+1) B/P)`` of each batch.
        ``epochs=None`` streams forever.
        """
        _checks.check_positive_int("batch_size", batch_size)
        pi = jax.process_index() if process_index is None else process_index
        pc = jax.process_count() if process_count is None else process_count
        if batch_size % pc:
            raise ValueError(f"`batch_size` ({batch_size}) must be divisible by `process_count` ({pc}).")
        local = batch_size // pc
        names = ("x0", "x1", "c") if self.meta["has_condition"] else ("x0", "x1")
        epoch = 0
        while epochs is None or epoch < epochs:
            rng = np.random.default_rng([seed, epoch])
            order = rng.permutation(self.num_shards) if shuffle else np.arange(self.num_shards)
            for s in order:
                arrays = self.shard(int(s))
                n = arrays[0].shape[0]
                rows = np.random.default_rng([seed, epoch, int(s)]).permutation(n) if shuffle else np.arange(n)
                for start in range(0, n - batch_size + 1, batch_size):
                    idx = np.sort(rows[start + pi * local : start + (pi + 1) * local])
                    yield {name: np.asarray(a[idx]) for name, a in zip(names, arrays)}
            epoch += 1


__all__ = ["PairDataset", "generate_pairs", "write_pairs"]
