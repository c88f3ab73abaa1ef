"""The training loop: :func:`train` wires config, state and callbacks together; :func:`fit` runs the epochs.

Read this file first: each epoch is ``train_one_epoch`` then ``evaluate`` (``engine.py``), the best epoch is
tracked by ``state.monitor``, and everything else (checkpoints, packages, early stopping, logging) is a
callback (``callbacks.py``). The objects come from the config through ``builder.py``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

from omegaconf import DictConfig
from torch.utils.data import DataLoader

from segmodels.config import ConfigError
from segmodels.data.streaming import RemoteFiles
from segmodels.metrics import ConfusionMatrix
from segmodels.transforms import tta_flips, with_tta

from .builder import auto_flag, build_state
from .callbacks import Callback, Checkpointing, EarlyStopping, EpochSummary, callbacks_for_rank
from .checkpoint import BEST_DIR, CHECKPOINT_FILE, FINAL_DIR, load_checkpoint
from .distributed import setup_distributed
from .engine import Placement, TrainStep, evaluate, train_one_epoch
from .state import TrainResult, TrainState


def train(
    cfg: DictConfig,
    data_root: Path,
    work_dir: Path,
    callbacks: Sequence[Callback] = (),
    files: RemoteFiles | None = None,
) -> TrainResult:
    """Train the model described by ``cfg`` on the normalised data set at ``data_root`` (its images and masks read
    through ``files`` when given: ``data.access=stream``).

    Writes ``work_dir/checkpoints/last.pt`` every epoch (a rerun with the same ``work_dir`` resumes from it
    unless ``trainer.resume=false``), ``work_dir/best/`` (the package of the best epoch by
    ``trainer.monitor``) and ``work_dir/final/``. ``callbacks`` run after the built-in ones. Under torchrun
    every process calls this; the process group is joined here and left on return.
    """
    try:
        tta_flips(cfg.trainer.val_tta, "trainer.val_tta")
    except ValueError as error:
        raise ConfigError(str(error)) from None
    context = setup_distributed(cfg.trainer.device)
    try:
        state = build_state(cfg, Path(data_root), Path(work_dir), context, files)
        start_workers(state.train_loader, state.val_loader)
        checkpoint = state.work_dir / CHECKPOINT_FILE
        if auto_flag("resume", cfg.trainer.resume, True) and checkpoint.is_file():
            state.load_state_dict(load_checkpoint(checkpoint))
            state.resumed_from = checkpoint
        builtin: list[Callback] = [Checkpointing(), EpochSummary()]
        if cfg.trainer.early_stopping_patience is not None:
            builtin.insert(0, EarlyStopping(cfg.trainer.early_stopping_patience))
        return fit(state, callbacks_for_rank([*builtin, *callbacks], context))
    finally:
        context.close()


def start_workers(*loaders: DataLoader) -> None:
    """Fork the loaders' persistent workers now, while the process holds little more than the model.

    A worker forked later (the val loader's, lazily, at the first evaluation) shares copy-on-write all the
    memory training has allocated by then, and the next epoch pays a page copy for every page it writes:
    on 2 CPU cores that made the first epoch after the fork ~25% slower (+0.9 to 1.2 s of system time).
    Starting costs ``prefetch_factor`` batches per worker, decoded and dropped when the first epoch starts.
    """
    for loader in loaders:
        if loader.persistent_workers:
            iter(loader)


def fit(state: TrainState, callbacks: Sequence[Callback]) -> TrainResult:
    """Train from epoch ``state.epoch + 1`` up to ``state.epochs`` or until a callback sets
    ``state.stop_training``, calling every hook of every callback (this process's: see
    :func:`~segmodels.training.callbacks.callbacks_for_rank`)."""
    for callback in callbacks:
        callback.on_fit_start(state)
    while not state.stop_training and state.epoch + 1 < state.epochs:
        state.epoch += 1
        metrics = run_epoch(state)
        state.history.append(metrics)
        if state.monitor.update(metrics, state.epoch):
            state.best_confusion = state.confusion.matrix.cpu().clone()
        for callback in callbacks:
            callback.on_epoch_end(state, dict(metrics))
        state.dist.barrier()
    result = result_of(state)
    for callback in callbacks:
        callback.on_fit_end(state, result)
    state.dist.barrier()
    return result


def run_epoch(state: TrainState) -> dict:
    """Train and evaluate epoch ``state.epoch``; its metrics with ``epoch`` and ``epoch_time_s``."""
    start = time.perf_counter()
    tcfg = state.cfg.trainer
    state.train_loader.sampler.set_epoch(state.epoch)
    show_bar = tcfg.progress_bar and state.dist.is_main
    frozen = state.encoder if state.epoch < tcfg.freeze_encoder_epochs else None
    if state.encoder is not None:
        state.encoder.requires_grad_(frozen is None)
    step = TrainStep(
        state.train_model,
        state.criterion,
        state.optimizer,
        state.scheduler,
        state.scaler,
        accumulate_grad_batches=tcfg.accumulate_grad_batches,
        grad_clip_norm=tcfg.grad_clip_norm,
    )
    placement = Placement(state.device, state.amp, state.channels_last)
    metrics = {
        "epoch": state.epoch,
        **train_one_epoch(
            step,
            state.train_loader,
            placement,
            confusion=ConfusionMatrix(state.confusion.num_classes, state.confusion.ignore_index, state.device),
            progress_label=f"epoch {state.epoch + 1}/{state.epochs} train" if show_bar else None,
            frozen=frozen,
        ),
        **evaluate(
            with_tta(state.model, tcfg.val_tta),
            state.criterion,
            state.val_loader,
            placement,
            confusion=state.confusion,
            class_names=state.spec.class_names,
            progress_label=f"epoch {state.epoch + 1}/{state.epochs} validate" if show_bar else None,
        ),
    }
    metrics["epoch_time_s"] = time.perf_counter() - start
    return metrics


def result_of(state: TrainState) -> TrainResult:
    """The run's result from its history; raises when no epoch was trained or none had a monitor value."""
    if not state.history:
        raise RuntimeError(f"{state.work_dir}: no epoch was trained (trainer.epochs={state.epochs})")
    best = state.monitor.best_epoch
    if best < 0:
        raise RuntimeError(f"{state.work_dir}: trainer.monitor={state.monitor.metric!r} was NaN in every epoch")
    return TrainResult(
        package_dir=state.work_dir / BEST_DIR,
        best_metrics=dict(state.history[best]),
        final_metrics=dict(state.history[-1]),
        history=[dict(h) for h in state.history],
        best_epoch=best,
        final_package_dir=state.work_dir / FINAL_DIR,
    )
