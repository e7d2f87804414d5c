"""Pallas kernels for the hot loops, each beside a plain ``jnp`` reference it must match."""

from pallas_kernels.attention import BlockSizes
from pallas_kernels.attention import attention
from pallas_kernels.attention import attention_reference

__all__ = [
    "BlockSizes",
    "attention",
    "attention_reference",
]
