"""Pallas kernels for the hot loops, each beside a plain ``jnp`` reference it must match.

Import the kernels from their modules (``from pallas_kernels.attention import attention``,
``from pallas_kernels.rollout import rollout``): a package-level ``attention`` would shadow the
``pallas_kernels.attention`` module.
"""
