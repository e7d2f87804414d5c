"""Velocity networks (Flax) and their shared helpers."""

from flowjax.nets.embeddings import pair_time_embedding, timestep_embedding

__all__ = [
    "pair_time_embedding",
    "timestep_embedding",
]
