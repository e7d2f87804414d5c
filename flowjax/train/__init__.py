"""Training: state, pure step, optimizer defaults (Trainer, checkpoints and sharding build on these)."""

from flowjax.train.fit import fit
from flowjax.train.state import TrainState
from flowjax.train.state import create_train_state
from flowjax.train.state import make_optimizer
from flowjax.train.state import make_train_step
from flowjax.train.state import step_key

__all__ = [
    "TrainState",
    "create_train_state",
    "fit",
    "make_optimizer",
    "make_train_step",
    "step_key",
]
