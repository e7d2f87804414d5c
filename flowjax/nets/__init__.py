"""Velocity networks (Flax) and their shared helpers, each used through a pure ``apply``."""

from flowjax.nets.autoencoder import ConvAutoencoder
from flowjax.nets.autoencoder import LatentAutoencoder
from flowjax.nets.autoencoder import load_pretrained
from flowjax.nets.autoencoder import train_autoencoder
from flowjax.nets.causal_transformer import CausalTransformer
from flowjax.nets.causal_transformer import init_kv_cache
from flowjax.nets.dit import DiT
from flowjax.nets.embeddings import pair_time_embedding
from flowjax.nets.embeddings import sincos_embedding_1d
from flowjax.nets.embeddings import sincos_embedding_2d
from flowjax.nets.embeddings import timestep_embedding
from flowjax.nets.init import init_variables
from flowjax.nets.mlp import MLP
from flowjax.nets.mlp import TimeEmbedding
from flowjax.nets.mlp import count_params
from flowjax.nets.mlp import drop_labels
from flowjax.nets.mlp import init_params
from flowjax.nets.st_transformer import STTransformer
from flowjax.nets.transformer_layers import LOGICAL_AXIS_RULES
from flowjax.nets.transformer_layers import param_shardings
from flowjax.nets.unet import UNet
from flowjax.nets.arcflow import ArcFlowMLP
from flowjax.nets.arcflow import init_arcflow_from_teacher
from flowjax.nets.lora import apply_lora
from flowjax.nets.lora import init_lora
from flowjax.nets.visual_bridge import BridgeMixer
from flowjax.nets.visual_bridge import TaskEmbedding
from flowjax.nets.visual_bridge import circular_task_features
from flowjax.nets.latent_conditioning import ConcatConditioned
from flowjax.nets.latent_conditioning import SpatialRescaler
from flowjax.nets.latent_conditioning import one_hot_map
from flowjax.nets.source import ClassConditionalSource
from flowjax.nets.source import PerceiverSource

from flowjax.nets.contracting import ICNNPotential
from flowjax.nets.contracting import LinearContractingResidual
from flowjax.nets.contracting import gradient_contracting_residual
from flowjax.nets.contracting import linear_contracting_residual
from flowjax.nets.blockwise import BlockwiseMLP
from flowjax.nets.blockwise import ConditionalMLP
__all__ = [
    "BridgeMixer",
    "TaskEmbedding",
    "circular_task_features",
    "ConcatConditioned",
    "SpatialRescaler",
    "one_hot_map",
    "BlockwiseMLP",
    "ConditionalMLP",
    "ICNNPotential",
    "LinearContractingResidual",
    "gradient_contracting_residual",
    "linear_contracting_residual",
    "ClassConditionalSource",
    "PerceiverSource",
    "LOGICAL_AXIS_RULES",
    "CausalTransformer",
    "ConvAutoencoder",
    "LatentAutoencoder",
    "load_pretrained",
    "train_autoencoder",
    "DiT",
    "MLP",
    "STTransformer",
    "TimeEmbedding",
    "UNet",
    "count_params",
    "drop_labels",
    "init_kv_cache",
    "init_params",
    "pair_time_embedding",
    "param_shardings",
    "sincos_embedding_1d",
    "sincos_embedding_2d",
    "timestep_embedding",
    "ArcFlowMLP",
    "init_arcflow_from_teacher",
    "apply_lora",
    "init_lora",
]
