"""Keep XLA's per-call CPU buffers resident (glibc ``mallopt``): faster single-dispatch steps on CPU.

Found by profiling ``benchmarks/cfm_step.py`` (ours, not from a paper): on the CPU backend each
call of a compiled step allocates its temporary buffer arena afresh (49 MB for the CFM step at
batch 4096, MLP 3x256). glibc serves allocations above its mmap threshold (at most 32 MB) with a
fresh ``mmap`` and returns them with ``munmap`` on free, so every call page-faults the whole arena
again: 12,000 minor faults per step, measured with ``getrusage``. A ``lax.scan`` over several steps
per dispatch allocates the arena once per dispatch, which is why ``steps_per_dispatch > 1`` was
faster. :func:`keep_host_buffers_resident` tells glibc to serve large blocks from the heap and not
to trim it, so the arena's pages are reused from call to call: 11 faults per step, and one step per
dispatch as fast as ``scan`` x16 (measured 172 -> 124 ms/step on the loaded 2-core machine).

It changes only where memory comes from, never a computed value. The cost: memory freed by the
process stays mapped to it (its resident size stays at its high-water mark), which is why it is
opt-in and process-wide, like choosing another allocator (``LD_PRELOAD`` of tcmalloc, or the
``MALLOC_MMAP_MAX_=0`` / ``MALLOC_TRIM_THRESHOLD_`` environment variables before start-up).
"""

from __future__ import annotations

import ctypes
import ctypes.util

# glibc <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_DEFAULT_MMAP_MAX = 65536
_DEFAULT_TRIM_THRESHOLD = 128 * 1024


def _libc():
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        return libc if hasattr(libc, "mallopt") else None
    except OSError:
        return None


def keep_host_buffers_resident(enable: bool = True) -> bool:
    """Make glibc keep large freed blocks for reuse (``M_MMAP_MAX=0``, a high ``M_TRIM_THRESHOLD``).

    Call once, before the first training step, in a process that trains on the CPU backend with one
    step per dispatch. ``enable=False`` restores glibc's defaults (its dynamic mmap threshold is not
    restored). Process-wide; affects every library in the process.

    Returns:
      True if ``mallopt`` accepted both settings, False where it is unavailable (not glibc, e.g.
      macOS or musl), in which case nothing changed.
    """
    libc = _libc()
    if libc is None:
        return False
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mallopt.restype = ctypes.c_int
    trim = 2**31 - 1 if enable else _DEFAULT_TRIM_THRESHOLD  # mallopt takes a C int
    mmap_max = 0 if enable else _DEFAULT_MMAP_MAX
    ok_trim = libc.mallopt(_M_TRIM_THRESHOLD, trim) == 1
    ok_mmap = libc.mallopt(_M_MMAP_MAX, mmap_max) == 1
    return ok_trim and ok_mmap


__all__ = ["keep_host_buffers_resident"]
