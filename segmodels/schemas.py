"""Typed schemas of the step configs and of the config groups whose keys code reads (Hydra structured configs).

Each schema types its keys and holds no default: every value lives in the YAML under ``conf/`` (the single
source of defaults), which lists its schema first in its defaults (``schema`` in a group, ``<step>_schema``
in ``conf/<step>.yaml``) so that Hydra checks types on every override (``trainer.epochs=ten`` is refused when
the config is composed).
Code reads these keys as attributes, never with ``.get(key, default)``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, is_dataclass
from typing import Any, get_type_hints

from omegaconf import MISSING


@dataclass
class TrainAugmentationConfig:
    """Random train-time transforms (``transforms.train``)."""

    scale: list[float] | None = MISSING  # RandomResizedCrop area range; None: plain resize
    ratio: list[float] = MISSING  # aspect-ratio range of the crop
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
    val_batch_size: int | None = MISSING
    num_workers: Any = MISSING  # int or auto
    pin_memory: Any = MISSING  # bool or auto
    persistent_workers: bool = MISSING
    prefetch_factor: int = MISSING
    accumulate_grad_batches: int = MISSING
    amp: Any = MISSING  # bool or auto
    amp_dtype: str = MISSING
    channels_last: Any = MISSING  # bool or auto
    cudnn_benchmark: bool = MISSING
    deterministic: bool = MISSING
    grad_clip_norm: float | None = MISSING
    encoder_lr_scale: float = MISSING
    freeze_encoder_epochs: int = MISSING
    device: str = MISSING
    monitor: str = MISSING
    monitor_mode: str = MISSING
    early_stopping_patience: int | None = MISSING
    early_stopping_min_delta: float = MISSING
    resume: Any = MISSING  # bool or auto
    progress_bar: bool = MISSING
    val_tta: str = MISSING  # false | hflip | flips: test-time flips averaged in validation


@dataclass
class DataConfig:
    """How a source is read and normalised (``conf/data/``)."""

    format: str = MISSING
    val_fraction: float = MISSING
    test_fraction: float = MISSING
    source_splits: bool = MISSING
    classes: list[Any] | None = MISSING
    classes_file: str | None = MISSING
    ignore_index: int = MISSING
    mask_values: Any = MISSING  # {raw value: class id} or None
    ignore_classes: list[str] = MISSING
    resize_masks: bool = MISSING
    max_ignored_share: float = MISSING
    orientation_free: bool = MISSING
    name: str | None = MISSING
    s3_endpoint_url: str | None = MISSING
    max_file_bytes: int = MISSING
    max_image_pixels: int | None = MISSING
    follow_external_symlinks: bool = MISSING
    max_extracted_bytes: int = MISSING
    max_compression_ratio: float = MISSING
    max_download_seconds: float = MISSING
    options: dict[str, Any] = MISSING


@dataclass
class LakeFSConfig:
    """Where data and models live in lakeFS (``conf/lakefs/``); endpoint and credentials never go here."""

    repo: str = MISSING
    data_branch: str = MISSING
    data_prefix: str = MISSING
    model_branch: str = MISSING
    model_prefix: str = MISSING
    checkpoint_branch: str = MISSING
    predictions_branch: str = MISSING
    predictions_prefix: str = MISSING


@dataclass
class DemoConfig:
    """The built-in synthetic data set (``ingest.demo``)."""

    num_images: int = MISSING
    image_size: int = MISSING
    seed: int = MISSING


@dataclass
class IngestConfig:
    """``conf/ingest.yaml``."""

    source: str = MISSING
    on_error: str = MISSING
    split_seed: int = MISSING
    demo: DemoConfig = MISSING
    data: DataConfig = MISSING
    lakefs: LakeFSConfig = MISSING


@dataclass
class PlanConfig:
    """``plan`` of ``conf/train.yaml`` (``experiment=auto``: segmodels.planning)."""

    mode: str = MISSING  # off | auto | applied
    budget_minutes: float = MISSING
    rules: dict[str, str] = MISSING


@dataclass
class TrainDataConfig:
    """How train reads its data set (``data`` of ``conf/train.yaml``)."""

    access: str = MISSING  # download | stream
    prefetch: int = MISSING  # streamed samples fetched ahead of the sampler's order


@dataclass
class TrainConfig:
    """``conf/train.yaml``; model, loss, optimizer and scheduler are ``_target_`` nodes."""

    seed: int = MISSING
    data_ref: str = MISSING
    data: TrainDataConfig = MISSING
    model: Any = MISSING
    loss: Any = MISSING
    optimizer: Any = MISSING
    scheduler: Any = MISSING
    trainer: TrainerConfig = MISSING
    transforms: TransformsConfig = MISSING
    plan: PlanConfig = MISSING
    lakefs: LakeFSConfig = MISSING


@dataclass
class RegisterConfig:
    """``conf/register.yaml``."""

    run_id: str = MISSING
    parent_run_id: str = MISSING
    interactive: bool = MISSING
    model_name: str = MISSING
    metric: str = MISSING
    threshold: float = MISSING
    greater_is_better: bool = MISSING
    alias: str = MISSING
    force: bool = MISSING
    challenger_alias: str = MISSING
    previous_alias: str = MISSING
    lakefs: LakeFSConfig = MISSING


@dataclass
class InferenceConfig:
    """How a model sees each image (``inference`` in ``conf/infer.yaml``): ``segmodels.inference.InferenceOptions``."""

    tta: str = MISSING  # false | hflip | flips
    mode: str = MISSING  # auto | resize | sliding
    overlap: float = MISSING


@dataclass
class InferConfig:
    """``conf/infer.yaml``."""

    model_uri: str = MISSING
    data_ref: str = MISSING
    source: str = MISSING
    on_error: str = MISSING
    split: str = MISSING
    output_dir: str = MISSING
    overlay_alpha: float = MISSING
    batch_size: int = MISSING
    commit_predictions: bool = MISSING
    interactive: bool = MISSING
    inference: InferenceConfig = MISSING
    data: DataConfig = MISSING
    lakefs: LakeFSConfig = MISSING


@dataclass
class MainConfig:
    """``conf/main.yaml``: ``steps`` holds the parameters given to main for each step, as strings."""

    env_manager: str = MISSING
    force: str = MISSING
    reuse_dirty: bool = MISSING
    steps: dict[str, Any] = MISSING


@dataclass
class ReproduceConfig:
    """``conf/reproduce.yaml``."""

    run_id: str = MISSING
    compare: str = MISSING  # auto | exact | tolerance
    tolerance: dict[str, float] = MISSING  # rel, abs
    ignore_metrics: list[str] = MISSING


GROUP_SCHEMAS = {"transforms": TransformsConfig, "trainer": TrainerConfig, "data": DataConfig, "lakefs": LakeFSConfig}
STEP_SCHEMAS = {
    "ingest": IngestConfig,
    "train": TrainConfig,
    "register": RegisterConfig,
    "infer": InferConfig,
    "main": MainConfig,
    "reproduce": ReproduceConfig,
}


def is_text_key(step: str, key: str) -> bool:
    """Whether the dotted ``key`` of ``step``'s config is typed ``str`` (a run id, a ref, a path: a value such as
    ``47e11020`` or ``0012`` must stay the text typed, never become a number first)."""
    schema: Any = STEP_SCHEMAS.get(step)
    for part in key.split("."):
        if not is_dataclass(schema) or part not in {field.name for field in fields(schema)}:
            return False
        schema = get_type_hints(schema)[part]
    return schema in (str, str | None)
