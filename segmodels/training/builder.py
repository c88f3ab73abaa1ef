"""Builds a training run from the Hydra config: model and spec (``cfg.model``), data sets and loaders
(``cfg.transforms``, ``cfg.trainer``), loss (``cfg.loss``), optimizer (``cfg.optimizer``) and schedule
(``cfg.scheduler``), all gathered in a :class:`TrainState`. ``_target_`` nodes are built with
``hydra.utils.instantiate``, only targets ``conf/`` names (:mod:`segmodels.targets`); a value their target refuses
is a one-line :class:`ConfigError`."""

from __future__ import annotations

import math
import os
import random
from functools import partial
from operator import itemgetter
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler
from torch.utils.data import DataLoader

from segmodels.config import ConfigError
from segmodels.data import DatasetInfo, SegmentationDataset, load_dataset_info, median_frequency_weights
from segmodels.data.streaming import PrefetchingSampler, RemoteFiles
from segmodels.metrics import ConfusionMatrix
from segmodels.models import ModelSpec
from segmodels.models.registry import MODELS
from segmodels.targets import check_targets, project_targets
from segmodels.transforms import build_transforms, image_size_of

from .distributed import DistContext, wrap_for_training
from .precision import MixedPrecision
from .sampling import EpochSampler, SeededDataset
from .state import Monitor, TrainState

AMP_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}
MONITOR_MODES = ("auto", "min", "max")


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's random generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def allowed_targets() -> dict[str, frozenset]:
    """What a config may build, by key: the targets ``conf/`` names, and for ``model`` each registered model's
    builder too."""
    allowed = dict(project_targets())
    builders = (MODELS.get(name) for name in MODELS.names())
    allowed["model"] = allowed.get("model", frozenset()) | {f"{b.__module__}.{b.__qualname__}" for b in builders}
    return allowed


def instantiate_group(group: str, node: DictConfig, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate(node, **kwargs)`` for the config group ``group``, after refusing a ``_target_``
    that ``conf/`` does not name there (:func:`allowed_targets`; nested ones in values that are data too). A target
    that cannot be found or refuses a value raises :class:`ConfigError` with one line: the group, its values and
    the reason, e.g. ``optimizer: lr='abc', weight_decay=0.0001 (torch.optim.AdamW): TypeError: '<=' not ...``."""
    check_targets(OmegaConf.to_container(node, resolve=True), group, allowed_targets())
    try:
        return instantiate(node, **kwargs, _convert_="all")
    except (InstantiationException, TypeError, ValueError) as exc:
        cause = exc.__cause__ if isinstance(exc, InstantiationException) and exc.__cause__ is not None else exc
        reason = " ".join(line.strip() for line in str(cause).splitlines() if line.strip())
        values = ", ".join(f"{key}={value!r}" for key, value in node.items() if key != "_target_")
        raise ConfigError(f"{group}: {values} ({node._target_}): {type(cause).__name__}: {reason}") from exc


def auto_flag(key: str, value: Any, auto: bool) -> bool:
    """The boolean ``trainer.<key>``: ``auto`` resolves to ``auto``; anything but true/false/auto is refused."""
    if value == "auto":
        return auto
    if isinstance(value, bool):
        return value
    raise ConfigError(f"trainer.{key}={value!r}: expected true, false or auto")


def resolve_num_workers(value: Any) -> int:
    """``trainer.num_workers``: a count, or ``auto`` for min(4, CPU cores - 1)."""
    if value == "auto":
        return min(4, max((os.cpu_count() or 1) - 1, 0))
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise ConfigError(f"trainer.num_workers={value!r}: expected a count >= 0 or auto")


def build_model(cfg: DictConfig, info: DatasetInfo) -> tuple[nn.Module, ModelSpec]:
    """The model of ``cfg.model`` for the data set's classes, and the spec its package will carry."""
    model = instantiate_group("model", cfg.model, num_classes=info.num_classes)
    spec = ModelSpec.from_model(
        model,
        num_classes=info.num_classes,
        class_names=list(info.class_names),
        colors=[list(c) for c in info.colors],
        ignore_index=info.ignore_index,
        image_size=list(image_size_of(cfg.transforms)),
        metadata={"dataset": info.name, "seed": cfg.seed},
    )
    return model, spec


def build_loaders(
    cfg: DictConfig,
    data_root: Path,
    info: DatasetInfo,
    spec: ModelSpec,
    context: DistContext,
    files: RemoteFiles | None = None,
) -> tuple[DataLoader, DataLoader]:
    """Train and validation loaders over this process's shard of each split. The train loader's sampler is an
    :class:`EpochSampler` (call ``set_epoch`` before each epoch): reproducible order and augmentations. With
    ``files`` (``data.access=stream``) samples are read through it, ``data.prefetch`` samples ahead of each sampler."""
    train_set = SegmentationDataset(
        data_root, "train", build_transforms(cfg.transforms, True, spec.mean, spec.std, info.ignore_index), files
    )
    val_set = SegmentationDataset(
        data_root, "val", build_transforms(cfg.transforms, False, spec.mean, spec.std, info.ignore_index), files
    )
    if len(train_set) == 0 or len(val_set) == 0:
        raise ValueError(
            f"{data_root}: training needs non-empty train and val splits (train={len(train_set)}, val={len(val_set)})"
        )
    tcfg = cfg.trainer
    train_sampler = EpochSampler(len(train_set), cfg.seed, context.rank, context.world_size)
    val_indices = list(range(context.rank, len(val_set), context.world_size))
    if files is not None:
        train_sampler = PrefetchingSampler(train_sampler, train_set, cfg.data.prefetch, itemgetter(1))
        val_indices = PrefetchingSampler(val_indices, val_set, cfg.data.prefetch)
    train_loader = _loader(
        SeededDataset(train_set),
        train_sampler,
        tcfg,
        batch_size=tcfg.batch_size,
        drop_last=len(train_sampler) > tcfg.batch_size,
        device=context.device,
    )
    val_batch_size = tcfg.batch_size if tcfg.val_batch_size is None else tcfg.val_batch_size
    val_loader = _loader(
        val_set,
        val_indices,
        tcfg,
        batch_size=val_batch_size,
        drop_last=False,
        device=context.device,
        collate_fn=partial(collate_full_resolution, ignore_index=info.ignore_index),
    )
    return train_loader, val_loader


def collate_full_resolution(batch: list, ignore_index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(images [N,3,H,W], masks [N,Hmax,Wmax], sizes [N,2])`` from ``(image, mask)`` pairs whose masks may
    differ in size: masks padded bottom and right with ``ignore_index``, ``sizes`` their own (height, width)."""
    images = torch.stack([image for image, _ in batch])
    sizes = torch.tensor([list(mask.shape[-2:]) for _, mask in batch], dtype=torch.int64)
    height, width = sizes.max(dim=0).values.tolist()
    masks = torch.full((len(batch), height, width), ignore_index, dtype=torch.int64)
    for index, (_, mask) in enumerate(batch):
        masks[index, : mask.shape[-2], : mask.shape[-1]] = mask
    return images, masks, sizes


def _loader(
    dataset, sampler, tcfg: DictConfig, *, batch_size: int, drop_last: bool, device: torch.device, collate_fn=None
) -> DataLoader:
    workers = resolve_num_workers(tcfg.num_workers)
    worker_options = {}
    if workers > 0:
        worker_options = {"persistent_workers": tcfg.persistent_workers, "prefetch_factor": tcfg.prefetch_factor}
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        pin_memory=auto_flag("pin_memory", tcfg.pin_memory, device.type == "cuda"),
        drop_last=drop_last,
        collate_fn=collate_fn,
        **worker_options,
    )


def model_encoder(model: nn.Module, tcfg: DictConfig) -> nn.Module | None:
    """The model's ``encoder`` when ``trainer.encoder_lr_scale`` or ``trainer.freeze_encoder_epochs`` act on it
    (None when neither is set); a model without one is a ConfigError."""
    if tcfg.encoder_lr_scale == 1.0 and tcfg.freeze_encoder_epochs == 0:
        return None
    if tcfg.encoder_lr_scale < 0 or tcfg.freeze_encoder_epochs < 0:
        raise ConfigError(
            f"trainer.encoder_lr_scale={tcfg.encoder_lr_scale}, trainer.freeze_encoder_epochs="
            f"{tcfg.freeze_encoder_epochs}: expected values >= 0"
        )
    encoder = getattr(model, "encoder", None)
    if not isinstance(encoder, nn.Module):
        raise ConfigError(
            f"trainer.encoder_lr_scale / freeze_encoder_epochs: model {type(model).__name__} has no encoder to act on"
        )
    return encoder


def resolve_class_weights(loss_cfg: DictConfig, info: DatasetInfo) -> tuple[DictConfig, list[float] | None]:
    """``loss_cfg`` with every ``class_weights: auto`` (its own or a combo member's) replaced by the median-frequency
    weights of the data set's train split (:func:`segmodels.data.median_frequency_weights`), and those weights
    (None when nothing asked for them)."""
    resolved = OmegaConf.to_container(loss_cfg, resolve=True)
    nodes = [resolved, *(member for member in resolved.get("losses") or () if isinstance(member, dict))]
    auto = [node for node in nodes if node.get("class_weights") == "auto"]
    if not auto:
        return loss_cfg, None
    weights = median_frequency_weights(info)
    for node in auto:
        node["class_weights"] = weights
    return OmegaConf.create(resolved), weights


def build_optimizer(cfg: DictConfig, model: nn.Module, encoder: nn.Module | None = None) -> Optimizer:
    """The optimizer of ``cfg.optimizer`` over ``model``'s parameters, without weight decay for norms and
    biases (1-D tensors); ``encoder``'s parameters (when given) at ``optimizer.lr x trainer.encoder_lr_scale``."""
    in_encoder = {id(param) for param in encoder.parameters()} if encoder is not None else set()
    groups: dict[tuple[bool, bool], list] = {}
    for param in model.parameters():
        if param.requires_grad:
            groups.setdefault((id(param) in in_encoder, param.ndim <= 1), []).append(param)
    param_groups = []
    for (encoder_param, no_decay), params in sorted(groups.items()):
        group: dict = {"params": params}
        if no_decay:
            group["weight_decay"] = 0.0
        if encoder_param:
            group["lr"] = cfg.optimizer.lr * cfg.trainer.encoder_lr_scale
        param_groups.append(group)
    return instantiate_group("optimizer", cfg.optimizer, params=param_groups)


def build_scheduler(cfg: DictConfig, optimizer: Optimizer, steps_per_epoch: int) -> LRScheduler:
    """The per-optimizer-step schedule of ``cfg.scheduler`` over ``cfg.trainer.epochs`` epochs."""
    return instantiate_group(
        "scheduler",
        cfg.scheduler,
        optimizer=optimizer,
        total_steps=steps_per_epoch * cfg.trainer.epochs,
        steps_per_epoch=steps_per_epoch,
    )


def build_monitor(tcfg: DictConfig) -> Monitor:
    """Best-epoch tracking of ``trainer.monitor``; mode ``auto`` is ``min`` for a loss, else ``max``."""
    if tcfg.monitor_mode not in MONITOR_MODES:
        raise ConfigError(f"trainer.monitor_mode={tcfg.monitor_mode!r}: expected one of {MONITOR_MODES}")
    mode = tcfg.monitor_mode
    if mode == "auto":
        mode = "min" if tcfg.monitor.endswith("loss") else "max"
    return Monitor(tcfg.monitor, mode, tcfg.early_stopping_min_delta)


def use_deterministic_kernels(enabled: bool) -> None:
    """Make torch refuse nondeterministic kernels (or allow them again); cuBLAS needs its workspace setting
    in the environment before its first call for that."""
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled)


def build_state(
    cfg: DictConfig, data_root: Path, work_dir: Path, context: DistContext, files: RemoteFiles | None = None
) -> TrainState:
    """Everything a run needs, seeded with ``cfg.seed``, on ``context.device``, before its first epoch; samples
    are read through ``files`` when given (:func:`build_loaders`)."""
    tcfg = cfg.trainer
    if tcfg.accumulate_grad_batches < 1:
        raise ConfigError(f"trainer.accumulate_grad_batches={tcfg.accumulate_grad_batches}: expected >= 1")
    if tcfg.amp_dtype not in AMP_DTYPES:
        raise ConfigError(f"trainer.amp_dtype={tcfg.amp_dtype!r}: expected one of {sorted(AMP_DTYPES)}")
    seed_everything(cfg.seed)
    use_deterministic_kernels(tcfg.deterministic)
    torch.backends.cudnn.benchmark = tcfg.cudnn_benchmark and not tcfg.deterministic
    device = context.device
    on_cuda = device.type == "cuda"
    amp = MixedPrecision(auto_flag("amp", tcfg.amp, on_cuda), AMP_DTYPES[tcfg.amp_dtype])
    channels_last = auto_flag("channels_last", tcfg.channels_last, on_cuda)

    info = load_dataset_info(data_root)
    loss_cfg, class_weights = resolve_class_weights(cfg.loss, info)
    model, spec = build_model(cfg, info)
    model = model.to(device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    train_loader, val_loader = build_loaders(cfg, data_root, info, spec, context, files)
    encoder = model_encoder(model, tcfg)
    optimizer = build_optimizer(cfg, model, encoder)
    steps_per_epoch = math.ceil(len(train_loader) / tcfg.accumulate_grad_batches)
    return TrainState(
        cfg=cfg,
        data_root=data_root,
        work_dir=work_dir,
        dist=context,
        model=model,
        train_model=wrap_for_training(model, context, tcfg.freeze_encoder_epochs > 0),
        spec=spec,
        encoder=encoder,
        criterion=instantiate_group("loss", loss_cfg, ignore_index=info.ignore_index).to(device),
        class_weights=class_weights,
        optimizer=optimizer,
        scheduler=build_scheduler(cfg, optimizer, steps_per_epoch),
        scaler=torch.amp.GradScaler(device.type, enabled=amp.enabled and amp.dtype == torch.float16),
        train_loader=train_loader,
        val_loader=val_loader,
        amp=amp,
        channels_last=channels_last,
        confusion=ConfusionMatrix(info.num_classes, info.ignore_index, device=device),
        monitor=build_monitor(tcfg),
        epochs=tcfg.epochs,
        steps_per_epoch=steps_per_epoch,
    )
