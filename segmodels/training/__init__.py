"""Training: ``train(cfg, data_root, work_dir, callbacks) -> TrainResult``.

Where things are: ``loop.py`` (the loop; read it first), ``engine.py`` (``train_one_epoch``, ``evaluate``,
``TrainStep``, ``Placement``), ``builder.py`` (config -> model, data, loss, optimizer, schedule), ``callbacks.py``
(the ``Callback`` protocol; checkpoints, early stopping, the epoch line; which run on which rank), ``state.py``
(what callbacks see), ``distributed.py`` (ranks and DDP), ``precision.py`` (mixed precision), ``checkpoint.py``,
``sampling.py``, ``schedulers.py``, ``launch.py``. Each imports only modules below it: no import cycle, not even
for type checking."""

from .builder import seed_everything
from .callbacks import Callback, Checkpointing, EarlyStopping, EpochSummary
from .engine import Placement, TrainStep, evaluate, train_one_epoch
from .loop import fit, train
from .state import TrainResult, TrainState

__all__ = [
    "Callback",
    "Checkpointing",
    "EarlyStopping",
    "EpochSummary",
    "Placement",
    "TrainResult",
    "TrainState",
    "TrainStep",
    "evaluate",
    "fit",
    "seed_everything",
    "train",
    "train_one_epoch",
]
