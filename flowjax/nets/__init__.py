"""Velocity networks (Flax) and their shared helpers, each used through a pure ``apply``."""

from flowjax.nets.embeddings import pair_time_embedding
from flowjax.nets.embeddings import timestep_embedding
from flowjax.nets.mlp import MLP
from flowjax.nets.mlp import TimeEmbedding
from flowjax.nets.mlp import count_params
from flowjax.nets.mlp import drop_labels
from flowjax.nets.mlp import init_params
from flowjax.nets.unet import UNet
from flowjax.nets.arcflow import ArcFlowMLP
from flowjax.nets.arcflow import init_arcflow_from_teacher
from flowjax.nets.lora import apply_lora
from flowjax.nets.lora import init_lora

__all__ = [
    "MLP",
    "TimeEmbedding",
    "UNet",
    "count_params",
    "drop_labels",
    "init_params",
    "pair_time_embedding",
    "timestep_embedding",
    "ArcFlowMLP",
    "init_arcflow_from_teacher",
    "apply_lora",
    "init_lora",
]
