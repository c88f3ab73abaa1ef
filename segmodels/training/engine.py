"""The training engine: builds model, data, loss, optimizer and schedule from the Hydra config and trains
with mixed precision (CUDA), channels_last, gradient accumulation, early stopping, per-epoch checkpoints
(resumable) and DDP under torchrun. Logging plugs in through callbacks; this module imports no mlflow."""
from __future__ import annotations

import contextlib
import math
import os
import random
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from segmodels.metrics import ConfusionMatrix
from segmodels.models import ModelSpec, save_package
from segmodels.transforms import build_transforms, image_size_of

from .checkpoint import load_checkpoint, restore_rng_state, rng_state, save_checkpoint
from .distributed import DistContext, setup_distributed
from .sampling import EpochSampler, SeededDataset

CHECKPOINT_FILE = Path("checkpoints") / "last.pt"
BEST_DIR = "best"
FINAL_DIR = "final"


@dataclass
class TrainResult:
    """Outcome of :func:`train`: the best model package, metrics of the best and last epochs, all epochs."""

    package_dir: Path
    best_metrics: dict
    final_metrics: dict
    history: list[dict]
    best_epoch: int
    final_package_dir: Path | None = None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def class_iou_key(class_name: str) -> str:
    """Metric name of a class's validation IoU (characters MLflow rejects become ``_``)."""
    return "val_iou_" + re.sub(r"[^0-9A-Za-z_\-. /]", "_", class_name)


def _auto_workers(requested: Any) -> int:
    if requested in (None, "auto"):
        return min(4, max((os.cpu_count() or 1) - 1, 0))
    return int(requested)


def _decay_groups(model: nn.Module) -> list[dict]:
    """Parameter groups without weight decay for norms and biases (1-D tensors)."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (no_decay if param.ndim <= 1 else decay).append(param)
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]


class Trainer:
    """One training run; callbacks receive it as ``trainer`` (``model``, ``spec``, ``info``, ``confusion`` (this
    epoch's), ``best_confusion`` (matrix of the best epoch), ``history``, ``epoch``, ``work_dir``,
    :meth:`sample_predictions`)."""

    def __init__(self, cfg: DictConfig, data_root: Path, work_dir: Path, callbacks: Sequence[Any] = ()):
        from segmodels.data import SegmentationDataset, load_dataset_info

        self.cfg, self.data_root, self.work_dir = cfg, Path(data_root), Path(work_dir)
        self.callbacks = list(callbacks)
        tcfg = cfg.trainer
        self.dist: DistContext = setup_distributed(tcfg.get("device", "auto"))
        self.device = self.dist.device
        self.seed = int(cfg.get("seed", 0))
        seed_everything(self.seed)
        torch.backends.cudnn.benchmark = bool(tcfg.get("cudnn_benchmark", True))

        self.info = load_dataset_info(self.data_root)
        model = instantiate(cfg.model, num_classes=self.info.num_classes, _convert_="all")
        self.spec = ModelSpec.from_model(
            model, num_classes=self.info.num_classes, class_names=list(self.info.class_names),
            colors=[list(c) for c in self.info.colors], ignore_index=self.info.ignore_index,
            image_size=list(image_size_of(cfg.transforms)),
            metadata={"dataset": self.info.name, "seed": self.seed},
        )
        on_cuda = self.device.type == "cuda"
        self.channels_last = _auto_flag(tcfg.get("channels_last", "auto"), on_cuda)
        self.amp_dtype = {"float16": torch.float16, "bfloat16": torch.bfloat16}[tcfg.get("amp_dtype", "bfloat16")]
        self.use_amp = _auto_flag(tcfg.get("amp", "auto"), on_cuda)
        self.model = model.to(self.device, memory_format=torch.channels_last if self.channels_last
                              else torch.contiguous_format)
        self.train_model: nn.Module = self.model
        if self.dist.distributed:
            self.train_model = DistributedDataParallel(
                self.model, device_ids=[self.device.index] if on_cuda else None)

        mean, std = self.spec.mean, self.spec.std
        self.train_set = SegmentationDataset(self.data_root, "train", build_transforms(cfg.transforms, True, mean, std, self.info.ignore_index))
        self.val_set = SegmentationDataset(self.data_root, "val", build_transforms(cfg.transforms, False, mean, std, self.info.ignore_index))
        if len(self.train_set) == 0 or len(self.val_set) == 0:
            raise ValueError(f"{self.data_root}: training needs non-empty train and val splits "
                             f"(train={len(self.train_set)}, val={len(self.val_set)})")
        self.train_sampler = EpochSampler(len(self.train_set), self.seed, shuffle=True,
                                          rank=self.dist.rank, world_size=self.dist.world_size)
        batch_size = int(tcfg.batch_size)
        self.train_loader = self._loader(SeededDataset(self.train_set), self.train_sampler, batch_size,
                                         drop_last=len(self.train_sampler) > batch_size)
        val_indices = list(range(self.dist.rank, len(self.val_set), self.dist.world_size))
        self.val_loader = self._loader(self.val_set, val_indices, int(tcfg.get("val_batch_size") or batch_size),
                                       drop_last=False)

        self.criterion = instantiate(cfg.loss, ignore_index=self.info.ignore_index, _convert_="all").to(self.device)
        self.optimizer = instantiate(cfg.optimizer, params=_decay_groups(self.model), _convert_="all")
        self.accumulate = max(int(tcfg.get("accumulate_grad_batches", 1)), 1)
        self.epochs = int(tcfg.epochs)
        self.steps_per_epoch = math.ceil(len(self.train_loader) / self.accumulate)
        self.scheduler = instantiate(cfg.scheduler, optimizer=self.optimizer,
                                     total_steps=self.steps_per_epoch * self.epochs,
                                     steps_per_epoch=self.steps_per_epoch)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.use_amp and self.amp_dtype == torch.float16)
        self.grad_clip = tcfg.get("grad_clip_norm")
        self.monitor = str(tcfg.get("monitor", "val_miou"))
        self.mode = tcfg.get("monitor_mode", "auto")
        if self.mode == "auto":
            self.mode = "min" if self.monitor.endswith("loss") else "max"
        self.patience = tcfg.get("early_stopping_patience")
        self.min_delta = float(tcfg.get("early_stopping_min_delta", 0.0))
        self.confusion = ConfusionMatrix(self.info.num_classes, self.info.ignore_index, device=self.device)
        self.history: list[dict] = []
        self.epoch = -1
        self.best_value: float | None = None
        self.best_epoch = -1
        self.best_confusion: torch.Tensor | None = None
        self.stale_epochs = 0
        self.stopped = False

    def _loader(self, dataset, sampler, batch_size: int, drop_last: bool) -> DataLoader:
        tcfg = self.cfg.trainer
        workers = _auto_workers(tcfg.get("num_workers", "auto"))
        pin = _auto_flag(tcfg.get("pin_memory", "auto"), self.device.type == "cuda")
        extra = {}
        if workers > 0:
            extra = {"persistent_workers": bool(tcfg.get("persistent_workers", True)),
                     "prefetch_factor": int(tcfg.get("prefetch_factor", 2))}
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, pin_memory=pin,
                          drop_last=drop_last, **extra)

    # ----------------------------------------------------------------------------------------- state
    @property
    def checkpoint_path(self) -> Path:
        return self.work_dir / CHECKPOINT_FILE

    def state_dict(self) -> dict:
        return {
            "epoch": self.epoch, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
            "history": self.history, "best_value": self.best_value, "best_epoch": self.best_epoch,
            "best_confusion": self.best_confusion,
            "stale_epochs": self.stale_epochs, "stopped": self.stopped, "rng": rng_state(),
            "config": OmegaConf.to_container(self.cfg, resolve=True),
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.history = state["epoch"], state["history"]
        self.best_value, self.best_epoch = state["best_value"], state["best_epoch"]
        self.best_confusion = state["best_confusion"]
        self.stale_epochs, self.stopped = state["stale_epochs"], state["stopped"]
        restore_rng_state(state["rng"])

    def _maybe_resume(self) -> None:
        if not _auto_flag(self.cfg.trainer.get("resume", "auto"), True) or not self.checkpoint_path.is_file():
            return
        self.load_state_dict(load_checkpoint(self.checkpoint_path))
        if self.dist.is_main:
            tqdm.write(f"resumed from {self.checkpoint_path} after epoch {self.epoch}")

    # ----------------------------------------------------------------------------------------- loops
    def _to_device(self, images: torch.Tensor, masks: torch.Tensor):
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        return (images.to(self.device, non_blocking=True, memory_format=fmt),
                masks.to(self.device, non_blocking=True))

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.use_amp)

    def train_epoch(self, epoch: int) -> dict:
        """One pass over the training shard; returns ``train_loss``, ``lr`` and ``train_images_per_s``."""
        self.train_model.train()
        self.train_sampler.set_epoch(epoch)
        loss_sum = torch.zeros((), device=self.device, dtype=torch.float64)
        seen = 0
        lr = self.optimizer.param_groups[0]["lr"]
        num_batches = len(self.train_loader)
        bar = tqdm(total=num_batches, desc=f"epoch {epoch + 1}/{self.epochs}", unit="batch", leave=False,
                   # None: shown on a terminal only, so logs and CI output get the per-epoch lines alone
                   disable=None if self.dist.is_main and self.cfg.trainer.get("progress_bar", True) else True)
        start = time.perf_counter()
        for step, (images, masks) in enumerate(self.train_loader):
            images, masks = self._to_device(images, masks)
            update = (step + 1) % self.accumulate == 0 or step + 1 == num_batches
            sync = contextlib.nullcontext() if update or not self.dist.distributed else self.train_model.no_sync()
            with sync:
                with self._autocast():
                    loss = self.criterion(self.train_model(images), masks)
                self.scaler.scale(loss / self.accumulate).backward()
            if update:
                if self.grad_clip:
                    self.scaler.unscale_(self.optimizer)
                    nn.utils.clip_grad_norm_(self.model.parameters(), float(self.grad_clip))
                self.scaler.step(self.optimizer)
                self.scaler.update()
                self.optimizer.zero_grad(set_to_none=True)
                self.scheduler.step()
            loss_sum += loss.detach() * images.shape[0]
            seen += images.shape[0]
            bar.update()
            bar.set_postfix_str(f"{seen * self.dist.world_size / (time.perf_counter() - start):.1f} img/s",
                                refresh=False)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        elapsed = time.perf_counter() - start
        bar.close()
        totals = self.dist.all_reduce_sum(torch.stack([loss_sum, torch.tensor(float(seen), device=self.device,
                                                                               dtype=torch.float64)]))
        return {"train_loss": float(totals[0] / totals[1]), "lr": lr,
                "train_images_per_s": float(totals[1]) / elapsed, "train_time_s": elapsed}

    @torch.inference_mode()
    def validate(self) -> dict:
        """Loss and confusion-matrix metrics over the validation split (summed over processes)."""
        self.model.eval()
        self.confusion.reset()
        loss_sum = torch.zeros((), device=self.device, dtype=torch.float64)
        seen = 0
        for images, masks in self.val_loader:
            images, masks = self._to_device(images, masks)
            with self._autocast():
                logits = self.model(images)
                loss_sum += self.criterion(logits, masks).double() * images.shape[0]
            seen += images.shape[0]
            self.confusion.update(logits.argmax(dim=1), masks)
        self.confusion.all_reduce()
        totals = self.dist.all_reduce_sum(torch.stack([loss_sum, torch.tensor(float(seen), device=self.device,
                                                                               dtype=torch.float64)]))
        scores = self.confusion.compute()
        metrics = {"val_loss": float(totals[0] / totals[1]), "val_miou": scores["miou"], "val_dice": scores["dice"],
                   "val_pixel_accuracy": scores["pixel_accuracy"], "val_mean_accuracy": scores["mean_accuracy"]}
        for name, iou in zip(self.spec.class_names, scores["iou_per_class"]):
            metrics[class_iou_key(name)] = iou
        return metrics

    def _improved(self, value: float) -> bool:
        if self.best_value is None or math.isnan(self.best_value):
            return not math.isnan(value)
        if self.mode == "max":
            return value > self.best_value + self.min_delta
        return value < self.best_value - self.min_delta

    def fit(self) -> TrainResult:
        """Train (resuming from ``work_dir/checkpoints/last.pt`` when present) and return the result."""
        self._maybe_resume()
        try:
            while not self.stopped and self.epoch + 1 < self.epochs:
                self.epoch += 1
                epoch_start = time.perf_counter()
                metrics = {"epoch": self.epoch, **self.train_epoch(self.epoch), **self.validate()}
                metrics["epoch_time_s"] = time.perf_counter() - epoch_start
                if self.monitor not in metrics:
                    raise ValueError(f"trainer.monitor={self.monitor!r} is not a metric; "
                                     f"choose one of {sorted(metrics)}")
                self.history.append(metrics)
                if self._improved(metrics[self.monitor]):
                    self.best_value, self.best_epoch, self.stale_epochs = metrics[self.monitor], self.epoch, 0
                    self.best_confusion = self.confusion.matrix.cpu().clone()
                    if self.dist.is_main:
                        save_package(self.model, self.spec, self.work_dir / BEST_DIR)
                else:
                    self.stale_epochs += 1
                    self.stopped = self.patience is not None and self.stale_epochs >= int(self.patience)
                if self.dist.is_main:
                    save_checkpoint(self.state_dict(), self.checkpoint_path)
                    tqdm.write(_epoch_line(metrics, self.epochs))
                    for callback in self.callbacks:
                        if hasattr(callback, "on_epoch_end"):
                            callback.on_epoch_end(self.epoch, dict(metrics), self)
                self.dist.barrier()
            result = self._result()
            if self.dist.is_main:
                save_package(self.model, self.spec, result.final_package_dir)
                for callback in self.callbacks:
                    if hasattr(callback, "on_train_end"):
                        callback.on_train_end(result)
            self.dist.barrier()
            return result
        finally:
            self.dist.close()

    def _result(self) -> TrainResult:
        if not self.history:
            raise RuntimeError(f"{self.work_dir}: no epoch was trained (trainer.epochs={self.epochs})")
        if self.best_epoch < 0:
            raise RuntimeError(f"{self.work_dir}: trainer.monitor={self.monitor!r} was NaN in every epoch")
        return TrainResult(package_dir=self.work_dir / BEST_DIR, best_metrics=dict(self.history[self.best_epoch]),
                           final_metrics=dict(self.history[-1]), history=[dict(h) for h in self.history],
                           best_epoch=self.best_epoch, final_package_dir=self.work_dir / FINAL_DIR)

    def sample_predictions(self, count: int = 4) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """``(image HxWx3 uint8, target mask, predicted mask)`` for the first ``count`` validation images."""
        from segmodels.data import SegmentationDataset
        from segmodels.inference import predict

        raw = SegmentationDataset(self.data_root, "val")
        samples = [raw[i] for i in range(min(count, len(raw)))]
        images = [image.permute(1, 2, 0).numpy() for image, _ in samples]
        predictions = predict(self.model, self.spec, images)
        return [(image, mask.numpy(), pred) for image, (_, mask), pred in zip(images, samples, predictions)]


def _auto_flag(value: Any, auto: bool) -> bool:
    return auto if value in (None, "auto") else bool(value)


def _epoch_line(metrics: dict, epochs: int) -> str:
    return (f"epoch {metrics['epoch'] + 1}/{epochs}: train_loss {metrics['train_loss']:.4f} "
            f"val_loss {metrics['val_loss']:.4f} val_miou {metrics['val_miou']:.4f} "
            f"lr {metrics['lr']:.2e} {metrics['train_images_per_s']:.1f} img/s")


def train(cfg: DictConfig, data_root: Path, work_dir: Path, callbacks: Iterable[Any] = ()) -> TrainResult:
    """Train the model described by ``cfg`` on the normalised data set at ``data_root``.

    Writes ``work_dir/checkpoints/last.pt`` every epoch (a rerun with the same ``work_dir`` resumes from it),
    ``work_dir/best/`` (the package of the best epoch by ``trainer.monitor``) and ``work_dir/final/``.
    """
    return Trainer(cfg, Path(data_root), Path(work_dir), list(callbacks)).fit()
