"""Deterministic, stateless batching: the batch at step ``k`` is a pure function of ``k``.

Two batchers (ours; the design follows the "data position is the step" practice of big_vision and
MaxText, so that a resumed run sees exactly the batches an unbroken run would):

- :func:`make_batch_fn` over an in-memory dataset of ``N`` examples: epochs are random
  permutations of the data, the permutation of epoch ``e`` is
  ``jax.random.permutation(data_key(seed, e), N)``, and step ``k`` takes the slice
  ``[(k mod S) B, (k mod S) B + B)`` of the permutation of epoch ``k // S`` (``S`` steps per
  epoch, ``B`` the global batch size). With ``drop_last=True`` the last ``N mod B`` examples of
  each permutation are skipped (they differ from epoch to epoch); with ``drop_last=False`` the last
  batch of an epoch is completed by wrapping around to the start of the same permutation, so every
  example appears at least once per epoch and shapes stay static.
- :func:`make_sampler_batch_fn` for infinite generated data: the global batch at step ``k`` is
  ``sample_fn(data_key(seed, k), B)``.

``data_key`` (:mod:`flowjax.keystreams`) folds a data-stream tag into ``key(seed)`` first, so a batch
never reuses the random bits of the training step that consumes it when both get the same seed.

Both work with a Python ``int`` step or a traced integer inside ``jit``. Checkpointing needs only
the step number.

Per-process sharding: ``batch_size`` is the *global* batch. Process ``p`` of ``P`` receives rows
``[p B / P, (p + 1) B / P)`` of the global batch, so the local batches of all processes partition
the global batch, and the global batch does not depend on ``P`` (the same seed gives the same
training data on 1 host or on 64). Assemble a global array from the local slices with
``jax.make_array_from_process_local_data``.

Example:
    >>> import jax.numpy as jnp
    >>> data = jnp.arange(10.0)[:, None]
    >>> batch_fn = make_batch_fn(data, 4, seed=0)
    >>> batch_fn.steps_per_epoch, batch_fn(0).shape
    (2, (4, 1))
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, PRNGKeyArray, PyTree

from flowjax import _checks, keystreams


def _resolve_process(process_index: int | None, process_count: int | None, batch_size: int) -> tuple[int, int]:
    pi = jax.process_index() if process_index is None else process_index
    pc = jax.process_count() if process_count is None else process_count
    _checks.check_positive_int("process_count", pc)
    if not isinstance(pi, (int, np.integer)) or isinstance(pi, bool) or not 0 <= pi < pc:
        raise ValueError(f"`process_index` must be an integer in [0, {pc}), got {pi!r}.")
    if batch_size % pc:
        raise ValueError(
            f"`batch_size` (the global batch, {batch_size}) must be divisible by `process_count` ({pc})."
        )
    return int(pi), int(pc)


def check_finite_data(name: str, data: PyTree) -> None:
    """Raise ``ValueError`` if any floating leaf of ``data`` holds NaN or Inf (names the first row)."""
    leaves = jax.tree_util.tree_leaves_with_path(data)
    for path, leaf in leaves:
        arr = np.asarray(leaf)
        if not np.issubdtype(arr.dtype, np.floating) and not np.issubdtype(arr.dtype, np.complexfloating):
            continue
        bad = ~np.isfinite(arr)
        if bad.any():
            rows = np.nonzero(bad.reshape(arr.shape[0], -1).any(axis=1))[0] if arr.ndim else np.array([0])
            where = f"{name}{jax.tree_util.keystr(path)}"
            raise ValueError(
                f"`{where}` contains NaN or Inf in {int(rows.size)} example(s) (first at index "
                f"{int(rows[0])}); clean the data before building a batch function."
            )


@dataclasses.dataclass(frozen=True, eq=False)
class BatchFn:
    """Callable ``step -> batch`` over an in-memory dataset; see :func:`make_batch_fn`.

    Attributes:
      data: the dataset (a pytree of arrays with a shared leading axis of ``num_examples``).
      batch_size: the global batch size ``B``.
      local_batch_size: ``B / process_count``, the leading size of what ``__call__`` returns.
      seed: the seed of the epoch permutations.
      drop_last: see :func:`make_batch_fn`.
      process_index, process_count: which slice of each global batch this process receives.
      num_examples: ``N``.
      steps_per_epoch: ``N // B`` (``drop_last``) or ``ceil(N / B)``.

    Calling it inside ``jit`` embeds ``data`` in the program as a constant, which is right for the
    small in-memory sets this is meant for. For a large array, pass it as a ``jit`` argument and
    gather with the indices instead: ``jnp.take(data, batch_fn.indices(step), axis=0)``.
    """

    data: PyTree
    batch_size: int
    local_batch_size: int
    seed: int
    drop_last: bool
    process_index: int
    process_count: int
    num_examples: int
    steps_per_epoch: int

    def epoch(self, step: ArrayLike) -> Array:
        """The epoch number of ``step``."""
        return jnp.asarray(step) // self.steps_per_epoch

    def global_indices(self, step: ArrayLike) -> Array:
        """Indices into the data of the whole global batch at ``step`` (shape ``(B,)``)."""
        return self._indices(step, 0, self.batch_size)

    def indices(self, step: ArrayLike) -> Array:
        """Indices into the data of this process's slice of the batch at ``step``."""
        return self._indices(step, self.process_index * self.local_batch_size, self.local_batch_size)

    def _indices(self, step: ArrayLike, offset: int, size: int) -> Array:
        step = jnp.asarray(step)
        if not jnp.issubdtype(step.dtype, jnp.integer) or step.ndim != 0:
            raise TypeError(f"`step` must be an integer scalar, got dtype {step.dtype} and shape {step.shape}.")
        epoch = step // self.steps_per_epoch
        within = step % self.steps_per_epoch
        key = keystreams.data_key(self.seed, epoch)
        perm = jax.random.permutation(key, self.num_examples)
        positions = within * self.batch_size + offset + jnp.arange(size, dtype=step.dtype)
        # drop_last: positions < S * B <= N, the modulo is a no-op; otherwise it wraps the last batch.
        return perm[positions % self.num_examples]

    def __call__(self, step: ArrayLike) -> PyTree:
        """This process's slice of the global batch at ``step`` (a Python int or a traced integer)."""
        idx = self.indices(step)
        return jax.tree.map(lambda leaf: jnp.take(leaf, idx, axis=0), self.data)


def make_batch_fn(
    data: PyTree,
    batch_size: int,
    *,
    seed: int,
    drop_last: bool = True,
    process_index: int | None = None,
    process_count: int | None = None,
) -> BatchFn:
    """Build a stateless batch function over an in-memory dataset.

    Args:
      data: an array of shape ``(N, ...)`` or a pytree of such arrays (e.g. ``{"x": images,
        "label": labels}``) sharing the leading axis. Floating leaves must be finite.
      batch_size: the *global* batch size ``B`` (``1 <= B``; ``B <= N`` when ``drop_last``).
      seed: seed of the per-epoch permutations.
      drop_last: skip the incomplete tail of each epoch's permutation (``True``) or complete the
        last batch by wrapping around the permutation (``False``).
      process_index, process_count: this process's rank and the number of processes; default
        ``jax.process_index()`` and ``jax.process_count()``. ``B`` must be divisible by
        ``process_count``.

    Returns:
      A :class:`BatchFn` ``batch_fn`` with ``batch_fn(step)`` the local slice (leading size
      ``B / process_count``) of the global batch at ``step``; a pure function of ``step``.

    Raises:
      ValueError: NaN/Inf in the data, inconsistent leading axes, bad sizes or process arguments.
    """
    _checks.check_positive_int("batch_size", batch_size)
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise TypeError(f"`seed` must be an integer, got {seed!r}.")
    leaves = jax.tree_util.tree_leaves(data)
    if not leaves:
        raise ValueError("`data` must contain at least one array.")
    sizes = set()
    for leaf in leaves:
        if not hasattr(leaf, "shape") or len(leaf.shape) == 0:
            raise ValueError("every leaf of `data` must be an array with a leading example axis.")
        sizes.add(int(leaf.shape[0]))
    if len(sizes) != 1:
        raise ValueError(f"all leaves of `data` must share the leading axis size, got sizes {sorted(sizes)}.")
    n = sizes.pop()
    if n < 1:
        raise ValueError("`data` must hold at least one example.")
    check_finite_data("data", data)
    if drop_last and batch_size > n:
        raise ValueError(f"`batch_size` ({batch_size}) exceeds the number of examples ({n}) with drop_last=True.")
    pi, pc = _resolve_process(process_index, process_count, batch_size)
    steps = n // batch_size if drop_last else -(-n // batch_size)
    data = jax.tree.map(jnp.asarray, data)
    return BatchFn(
        data=data,
        batch_size=int(batch_size),
        local_batch_size=int(batch_size) // pc,
        seed=int(seed),
        drop_last=bool(drop_last),
        process_index=pi,
        process_count=pc,
        num_examples=n,
        steps_per_epoch=steps,
    )


@dataclasses.dataclass(frozen=True, eq=False)
class SamplerBatchFn:
    """Callable ``step -> batch`` over generated data; see :func:`make_sampler_batch_fn`."""

    sample_fn: Callable[[PRNGKeyArray, int], PyTree]
    batch_size: int
    local_batch_size: int
    seed: int
    process_index: int
    process_count: int

    def key(self, step: ArrayLike) -> PRNGKeyArray:
        """The key the global batch at ``step`` is drawn with: ``keystreams.data_key(seed, step)``."""
        return keystreams.data_key(self.seed, jnp.asarray(step))

    def global_batch(self, step: ArrayLike) -> PyTree:
        return self.sample_fn(self.key(step), self.batch_size)

    def __call__(self, step: ArrayLike) -> PyTree:
        """This process's rows of the global batch at ``step``."""
        start = self.process_index * self.local_batch_size
        batch = self.global_batch(step)
        if self.process_count == 1:
            return batch
        return jax.tree.map(lambda leaf: leaf[start : start + self.local_batch_size], batch)


def make_sampler_batch_fn(
    sample_fn: Callable[[PRNGKeyArray, int], Any],
    batch_size: int,
    *,
    seed: int,
    process_index: int | None = None,
    process_count: int | None = None,
    validate: bool = True,
) -> SamplerBatchFn:
    """Batches from a sampler: global batch at step ``k`` is ``sample_fn(data_key(seed, k), B)``.

    Every process draws the whole global batch and keeps its rows, so the data do not depend on
    the number of processes (for samplers such as :func:`flowjax.data.sample_toy2d` drawing a
    global batch costs next to nothing).

    Args:
      sample_fn: ``sample_fn(key, n)`` returning an array (or pytree) with leading size ``n``,
        e.g. ``functools.partial(sample_toy2d, "moons")``.
      batch_size: the global batch size ``B``, divisible by ``process_count``.
      seed: integer seed.
      process_index, process_count: as in :func:`make_batch_fn`.
      validate: draw the batch of step 0 once now and check its leading size and finiteness.

    Returns:
      A :class:`SamplerBatchFn`; ``batch_fn(step)`` works with traced steps under ``jit``.
    """
    if not callable(sample_fn):
        raise TypeError(f"`sample_fn` must be callable, got {type(sample_fn).__name__}.")
    _checks.check_positive_int("batch_size", batch_size)
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise TypeError(f"`seed` must be an integer, got {seed!r}.")
    pi, pc = _resolve_process(process_index, process_count, batch_size)
    out = SamplerBatchFn(
        sample_fn=sample_fn,
        batch_size=int(batch_size),
        local_batch_size=int(batch_size) // pc,
        seed=int(seed),
        process_index=pi,
        process_count=pc,
    )
    if validate:
        first = out.global_batch(0)
        for leaf in jax.tree_util.tree_leaves(first):
            if not hasattr(leaf, "shape") or leaf.ndim == 0 or leaf.shape[0] != batch_size:
                raise ValueError(
                    f"`sample_fn(key, {batch_size})` must return arrays with leading size {batch_size}, "
                    f"got shape {getattr(leaf, 'shape', None)}."
                )
        check_finite_data("sample_fn(key(seed), batch_size)", first)
    return out


__all__ = ["BatchFn", "SamplerBatchFn", "check_finite_data", "make_batch_fn", "make_sampler_batch_fn"]
