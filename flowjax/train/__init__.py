"""Training: state, pure step, Trainer loop, fit, checkpoints, sharding, preflight checks."""

from flowjax.train import checkpoint
from flowjax.train import host_memory
from flowjax.train import preflight
from flowjax.train import sharding
from flowjax.train.checkpoint import CheckpointCorruptError
from flowjax.train.checkpoint import CheckpointError
from flowjax.train.checkpoint import CheckpointMismatchError
from flowjax.train.checkpoint import Checkpointer
from flowjax.train.fit import fit
from flowjax.train.host_memory import keep_host_buffers_resident
from flowjax.train.preflight import PreflightError
from flowjax.train.sharding import make_mesh
from flowjax.train.state import TrainState
from flowjax.train.state import create_train_state
from flowjax.train.state import make_optimizer
from flowjax.train.state import make_train_step
from flowjax.train.state import nonfinite_leaf_name
from flowjax.train.state import step_key
from flowjax.train.trainer import NonFiniteError
from flowjax.train.trainer import Preempted
from flowjax.train.trainer import Trainer

__all__ = [
    "CheckpointCorruptError",
    "CheckpointError",
    "CheckpointMismatchError",
    "Checkpointer",
    "NonFiniteError",
    "Preempted",
    "PreflightError",
    "TrainState",
    "Trainer",
    "checkpoint",
    "create_train_state",
    "fit",
    "host_memory",
    "keep_host_buffers_resident",
    "make_mesh",
    "make_optimizer",
    "make_train_step",
    "nonfinite_leaf_name",
    "preflight",
    "sharding",
    "step_key",
]
