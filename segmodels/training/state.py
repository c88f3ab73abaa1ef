"""What a training run holds (:class:`TrainState`, handed to every callback hook), how it tracks its best epoch
(:class:`Monitor`) and what it returns (:class:`TrainResult`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler
from torch.utils.data import DataLoader

from segmodels.config import ConfigError
from segmodels.metrics import ConfusionMatrix
from segmodels.models import ModelSpec

from .checkpoint import restore_rng_state, rng_state
from .distributed import DistContext
from .precision import MixedPrecision


@dataclass
class TrainResult:
    """Outcome of a run: the best model package, metrics of the best and last epochs, all epochs."""

    package_dir: Path
    best_metrics: dict
    final_metrics: dict
    history: list[dict]
    best_epoch: int
    final_package_dir: Path


@dataclass
class Monitor:
    """The best value so far of the metric ``metric`` (``mode`` ``min`` or ``max``); an epoch improves on it
    by more than ``min_delta``, else it counts as stale."""

    metric: str
    mode: str
    min_delta: float
    best_value: float | None = None
    best_epoch: int = -1
    stale_epochs: int = 0

    def update(self, metrics: dict, epoch: int) -> bool:
        """Record ``epoch``'s value of the metric; return whether it is the new best."""
        if self.metric not in metrics:
            raise ConfigError(f"trainer.monitor={self.metric!r} is not a metric; choose one of {sorted(metrics)}")
        value = metrics[self.metric]
        if self._improves(value):
            self.best_value, self.best_epoch, self.stale_epochs = value, epoch, 0
            return True
        self.stale_epochs += 1
        return False

    def _improves(self, value: float) -> bool:
        if self.best_value is None or math.isnan(self.best_value):
            return not math.isnan(value)
        if self.mode == "max":
            return value > self.best_value + self.min_delta
        return value < self.best_value - self.min_delta

    def state_dict(self) -> dict:
        return {"best_value": self.best_value, "best_epoch": self.best_epoch, "stale_epochs": self.stale_epochs}

    def load_state_dict(self, state: dict) -> None:
        self.best_value, self.best_epoch, self.stale_epochs = (
            state["best_value"],
            state["best_epoch"],
            state["stale_epochs"],
        )


@dataclass
class TrainState:
    """One run's objects and progress. Callbacks read it; a callback may set ``stop_training``.

    ``model`` is the bare model (saved in packages and checkpoints); ``train_model`` is what trains (the model
    wrapped in ``DistributedDataParallel`` under torchrun, else ``model`` itself). ``confusion`` holds the
    last evaluation's matrix, ``best_confusion`` (CPU) the best epoch's. ``epoch`` is the last finished epoch
    (-1 before the first); ``resumed_from`` the checkpoint this run continued, if any.
    """

    cfg: DictConfig
    data_root: Path
    work_dir: Path
    dist: DistContext
    model: nn.Module
    train_model: nn.Module
    spec: ModelSpec
    criterion: nn.Module
    optimizer: Optimizer
    scheduler: LRScheduler
    scaler: torch.amp.GradScaler
    train_loader: DataLoader
    val_loader: DataLoader
    amp: MixedPrecision
    channels_last: bool
    confusion: ConfusionMatrix
    monitor: Monitor
    epochs: int
    steps_per_epoch: int
    class_weights: list[float] | None = None  # the loss's resolved class_weights=auto, when asked for
    encoder: nn.Module | None = None  # what trainer.encoder_lr_scale / freeze_encoder_epochs act on, when set
    epoch: int = -1
    history: list[dict] = field(default_factory=list)
    best_confusion: torch.Tensor | None = None
    stop_training: bool = False
    resumed_from: Path | None = None

    @property
    def device(self) -> torch.device:
        return self.dist.device

    def state_dict(self) -> dict:
        """What a checkpoint holds: weights, optimizer, schedule, scaler, progress and random states."""
        return {
            "epoch": self.epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "history": self.history,
            "monitor": self.monitor.state_dict(),
            "best_confusion": self.best_confusion,
            "rng": rng_state(),
            "config": OmegaConf.to_container(self.cfg, resolve=True),
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from a checkpoint written by :meth:`state_dict`."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.history = state["epoch"], state["history"]
        self.monitor.load_state_dict(state["monitor"])
        self.best_confusion = state["best_confusion"]
        restore_rng_state(state["rng"])
