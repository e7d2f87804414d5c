"""Analytic oracles and numeric helpers for tests (and for experiments that need exact answers)."""

from flowjax.testing.oracle import GaussianMixtureFlow
from flowjax.testing.oracle import gaussian_flow

__all__ = [
    "GaussianMixtureFlow",
    "gaussian_flow",
]
