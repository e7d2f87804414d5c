"""Test configuration: x64 available for oracle tests, strict rank promotion, 8 fake CPU devices, and
fast compilation for the default (not slow) run."""

import os

# Eight fake CPU devices so that sharded code paths run in the default test suite. Must be set
# before JAX initialises its backends (it does so lazily, at the first computation).
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")

from experiments.run import FAST_COMPILE_FLAG  # noqa: E402  (the same setting as smoke runs)


def pytest_configure(config):
    # The default run is hundreds of tiny programs, so XLA:CPU's LLVM optimisation passes are most of
    # its time: at level 0 a sample of five heavy test files took 164 s instead of 220 s, same
    # results. Only the backend's code generation changes (HLO passes and numerics semantics do not).
    # Runs that select slow tests (cpu-preset claims: long training) keep the optimised backend, as
    # does an XLA_FLAGS that already chooses a level. Subprocesses inherit the setting.
    markexpr = config.getoption("markexpr") or ""
    selects_slow = "slow" in markexpr.replace("not slow", "")
    flags = os.environ.get("XLA_FLAGS", "")
    if not selects_slow and "xla_backend_optimization_level" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {FAST_COMPILE_FLAG}".strip()
