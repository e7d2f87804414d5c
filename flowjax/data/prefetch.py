"""Host-side batch preparation ahead of the training step, on worker threads.

Some batches cost more to make on the host than the step costs to run: exact minibatch OT at
batch 2048 spends ~0.75 s in POT's network simplex against ~20 ms for the 2-D CFM step itself
(``benchmarks/otcfm_step.py``). Because a batch of a pure ``batch_fn(step)`` does not depend on the
parameters, the batches of the next steps can be made while the current step runs, and several at
once: the solvers release the GIL (POT's ``ot.emd``, scipy, NumPy's BLAS), so ``workers`` threads
make ``workers`` batches at a time.

:func:`prefetch` wraps such a ``batch_fn``. The result is still a function of the step (a resumed
run sees exactly the batches an unbroken run would; :class:`flowjax.train.Trainer` needs nothing
else) and returns exactly what ``batch_fn`` returns: it only changes *when* the work happens.

Example:
    >>> import numpy as np
    >>> batches = prefetch(lambda step: np.full((2,), step), workers=2)
    >>> [int(batches(k)[0]) for k in range(3)]
    [0, 1, 2]
    >>> batches.close()
"""

from __future__ import annotations

import concurrent.futures
import threading
from typing import Any, Callable

import jax
import numpy as np

from flowjax import _checks


def _host_step(step: Any) -> int:
    if isinstance(step, jax.core.Tracer):
        raise TypeError(
            "a prefetched batch_fn runs on host threads and cannot be traced; call it with a Python "
            "int step (flowjax.train.fit does so when `batch_fn_in_jit` is False or 'auto')."
        )
    arr = np.asarray(step) if not isinstance(step, (bool, np.bool_)) else None
    if arr is None or arr.ndim != 0 or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"`step` must be an integer, got {step!r}.")
    step = int(step)
    if step < 0:
        raise ValueError(f"`step` must be non-negative, got {step}.")
    return step


class Prefetched:
    """``batch_fn`` with the batches of the next ``depth`` steps made ahead on ``workers`` threads.

    Calls are expected in increasing step order (as the training loop makes them). Once two calls
    come in order, each call schedules the batches up to ``depth`` steps ahead; a call for a step
    that was not scheduled (the first call, a resume, a jump back) drops what was scheduled and
    makes just that step. The last batch returned is kept, so asking for the same step
    twice in a row costs nothing. An exception raised by ``batch_fn`` for a step is raised by the
    call for that step.

    Use :meth:`close` (or ``with prefetch(...) as batches:``) to stop the threads; batches still
    being made finish in the background and are discarded.
    """

    def __init__(self, batch_fn: Callable[[int], Any], *, workers: int = 2, depth: int | None = None):
        if not callable(batch_fn):
            raise TypeError(f"`batch_fn` must be callable, got {type(batch_fn).__name__}.")
        _checks.check_positive_int("workers", workers)
        depth = 2 * workers if depth is None else depth
        _checks.check_positive_int("depth", depth)
        if depth < workers:
            raise ValueError(f"`depth` ({depth}) must be at least `workers` ({workers}), or workers sit idle.")
        self.batch_fn, self.workers, self.depth = batch_fn, workers, depth
        self._pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="flowjax-prefetch")
        self._pending: dict[int, concurrent.futures.Future] = {}
        self._next_to_submit = 0
        self._last: tuple[int, Any] | None = None
        self._lock = threading.Lock()  # calls from several threads stay consistent
        self._closed = False

    def _restart_at(self, step: int) -> None:
        for fut in self._pending.values():
            fut.cancel()
        self._pending.clear()
        self._next_to_submit = step

    def __call__(self, step: Any) -> Any:
        step = _host_step(step)
        with self._lock:
            if self._closed:
                raise RuntimeError("this prefetched batch_fn was closed.")
            if self._last is not None and self._last[0] == step:
                return self._last[1]
            sequential = step in self._pending or (self._last is not None and step == self._last[0] + 1)
            if step not in self._pending:
                self._restart_at(step)
            for stale in [s for s in self._pending if s < step]:
                self._pending.pop(stale).cancel()
            # Look ahead only once the calls run in order: a lone call (fit's example batch, the
            # step a resumed run starts from) would otherwise schedule `depth` batches for nothing.
            horizon = step + (self.depth if sequential else 1)
            while self._next_to_submit < horizon:
                s = self._next_to_submit
                self._pending[s] = self._pool.submit(self.batch_fn, s)
                self._next_to_submit += 1
            future = self._pending.pop(step)
        batch = future.result()  # re-raises batch_fn's exception for this step
        with self._lock:
            self._last = (step, batch)
        return batch

    def close(self) -> None:
        """Stop scheduling, cancel the batches not yet started and release the threads."""
        with self._lock:
            self._closed = True
            self._restart_at(0)
            self._last = None
        self._pool.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> "Prefetched":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def prefetch(batch_fn: Callable[[int], Any], *, workers: int = 2, depth: int | None = None) -> Prefetched:
    """``batch_fn(step)`` made ahead of time on ``workers`` host threads (see :class:`Prefetched`).

    Args:
      batch_fn: a host function of the step (it may call NumPy, scipy, POT or eager JAX); the
        same step must always give the same batch, as for any ``batch_fn`` of the training loop.
      workers: threads making batches at once. The speed-up needs ``batch_fn`` to release the
        GIL for most of its time (compiled solvers, BLAS); pure-Python work gains nothing.
      depth: how many steps ahead to schedule (default ``2 * workers``); each scheduled batch is
        held in memory until used.

    Returns:
      A callable ``batches(step)`` returning ``batch_fn(step)``, with ``close()``.
    """
    return Prefetched(batch_fn, workers=workers, depth=depth)


__all__ = ["Prefetched", "prefetch"]
