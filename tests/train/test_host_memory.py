"""keep_host_buffers_resident: glibc keeps large freed blocks, so re-allocating them stops faulting."""

import ctypes
import ctypes.util
import resource
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from flowjax.train import create_train_state, keep_host_buffers_resident, make_train_step

glibc_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")


_SIZE = 64 << 20  # above glibc's largest mmap threshold (32 MiB)


def _faults_per_large_alloc(reps: int = 4) -> float:
    """Minor page faults per malloc + write + free of a 64 MiB block (raw malloc: numpy would
    advise transparent huge pages for large arrays, which hides the per-page faults)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]

    def once():
        ptr = libc.malloc(_SIZE)
        assert ptr
        ctypes.memset(ptr, 1, _SIZE)
        libc.free(ptr)

    once()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(reps):
        once()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / reps


@glibc_only
def test_large_blocks_are_reused_instead_of_refaulted():
    try:
        assert keep_host_buffers_resident() is True
        resident = _faults_per_large_alloc()
    finally:
        assert keep_host_buffers_resident(False) is True
    default = _faults_per_large_alloc()
    pages = _SIZE / resource.getpagesize()
    assert default > 0.5 * pages  # each mmap'd block is faulted in afresh
    assert resident < 0.05 * pages


@glibc_only
def test_training_step_results_are_unchanged():
    w0 = {"w": jax.random.normal(jax.random.key(0), (64, 64))}
    x = jax.random.normal(jax.random.key(1), (512, 64))
    loss_fn = lambda p, key, b: (jnp.mean((jnp.tanh(b @ p["w"]) - b) ** 2), {})
    opt = optax.adam(1e-2)
    step = jax.jit(make_train_step(loss_fn, opt, ema_decay=None))

    def run():
        s = create_train_state(w0, opt, jax.random.key(2))
        for _ in range(3):
            s, m = step(s, x)
        return np.asarray(s.params["w"]), float(m["loss"])

    ref = run()
    try:
        keep_host_buffers_resident()
        got = run()
    finally:
        keep_host_buffers_resident(False)
    np.testing.assert_array_equal(got[0], ref[0])
    assert got[1] == ref[1]
