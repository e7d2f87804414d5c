"""Test configuration: x64 available for oracle tests, strict rank promotion, 8 fake CPU devices."""

import os

# Eight fake CPU devices so that sharded code paths run in the default test suite. Must be set
# before JAX initialises its backends.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")
