"""Typed schemas of the config groups whose keys code reads directly (Hydra structured configs).

Each schema types its group's keys and holds no default: every value lives in the group's YAML under
``conf/`` (the single source of defaults), which lists ``schema`` first in its defaults so that Hydra
checks types on every override (``trainer.epochs=ten`` is refused when the config is composed).
Code reads these keys as attributes, never with ``.get(key, default)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from omegaconf import MISSING


@dataclass
class TrainAugmentationConfig:
    """Random train-time transforms (``transforms.train``)."""

    scale: Optional[List[float]] = MISSING  # RandomResizedCrop area range; None: plain resize
    ratio: List[float] = MISSING  # aspect-ratio range of the crop
    hflip: float = MISSING  # probabilities
    vflip: float = MISSING
    rot90: float = MISSING
    rotation: float = MISSING  # max degrees of a free rotation
    color_jitter: float = MISSING


@dataclass
class TransformsConfig:
    """Image and mask transforms (``conf/transforms/``)."""

    image_size: Any = MISSING  # int or [height, width]
    train: TrainAugmentationConfig = MISSING


@dataclass
class TrainerConfig:
    """The training loop's settings (``conf/trainer/``); ``auto`` values are resolved by the trainer."""

    epochs: int = MISSING
    batch_size: int = MISSING
    val_batch_size: Optional[int] = MISSING
    num_workers: Any = MISSING  # int or auto
    pin_memory: Any = MISSING  # bool or auto
    persistent_workers: bool = MISSING
    prefetch_factor: int = MISSING
    accumulate_grad_batches: int = MISSING
    amp: Any = MISSING  # bool or auto
    amp_dtype: str = MISSING
    channels_last: Any = MISSING  # bool or auto
    cudnn_benchmark: bool = MISSING
    grad_clip_norm: Optional[float] = MISSING
    device: str = MISSING
    monitor: str = MISSING
    monitor_mode: str = MISSING
    early_stopping_patience: Optional[int] = MISSING
    early_stopping_min_delta: float = MISSING
    resume: Any = MISSING  # bool or auto
    progress_bar: bool = MISSING


@dataclass
class DataConfig:
    """How a source is read and normalised (``conf/data/``)."""

    format: str = MISSING
    val_fraction: float = MISSING
    test_fraction: float = MISSING
    source_splits: bool = MISSING
    classes: Optional[List[Any]] = MISSING
    classes_file: Optional[str] = MISSING
    ignore_index: int = MISSING
    mask_values: Dict[Any, Any] = MISSING
    ignore_classes: List[str] = MISSING
    resize_masks: bool = MISSING
    name: Optional[str] = MISSING
    s3_endpoint_url: Optional[str] = MISSING
    options: Dict[str, Any] = MISSING


GROUP_SCHEMAS = {"transforms": TransformsConfig, "trainer": TrainerConfig, "data": DataConfig}
