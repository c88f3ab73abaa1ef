"""The callback protocol and the built-in callbacks (checkpoints and packages, early stopping, the per-epoch
line), and which of them each process runs. The loop calls every hook of every callback; a subclass overrides the
hooks it needs."""

from __future__ import annotations

from typing import Sequence

from tqdm.auto import tqdm

from segmodels.models import save_package

from .checkpoint import BEST_DIR, CHECKPOINT_FILE, save_checkpoint
from .distributed import DistContext
from .state import TrainResult, TrainState


class Callback:
    """Base class of training callbacks; every hook does nothing here.

    A callback runs on the main process only, unless ``every_rank`` is True: leave it False for callbacks
    that write files or log, set it for callbacks that steer training (every process must do the same).
    Callbacks run in the order given; the built-in ones run before the caller's, so the epoch's checkpoint
    is on disk when a caller's ``on_epoch_end`` runs.
    """

    every_rank = False

    def on_fit_start(self, state: TrainState) -> None:
        """Before the first epoch of this process, after any checkpoint was restored into ``state``."""

    def on_epoch_end(self, state: TrainState, metrics: dict) -> None:
        """After epoch ``state.epoch`` was trained and evaluated (``metrics`` is a copy of its history entry)."""

    def on_fit_end(self, state: TrainState, result: TrainResult) -> None:
        """After the last epoch."""


def callbacks_for_rank(callbacks: Sequence[Callback], context: DistContext) -> list[Callback]:
    """The callbacks this process runs: all on the main process; elsewhere only those marked ``every_rank``
    (the ones that steer training, such as early stopping, which every process must do alike)."""
    return [callback for callback in callbacks if context.is_main or callback.every_rank]


class Checkpointing(Callback):
    """Writes ``work_dir/checkpoints/last.pt`` after every epoch (a rerun resumes from it), the model package
    ``work_dir/best/`` whenever the monitored metric improves, and ``work_dir/final/`` at the end."""

    def on_epoch_end(self, state: TrainState, metrics: dict) -> None:
        if state.monitor.best_epoch == state.epoch:
            save_package(state.model, state.spec, state.work_dir / BEST_DIR)
        save_checkpoint(state.state_dict(), state.work_dir / CHECKPOINT_FILE)

    def on_fit_end(self, state: TrainState, result: TrainResult) -> None:
        save_package(state.model, state.spec, result.final_package_dir)


class EarlyStopping(Callback):
    """Stops training once the monitored metric has not improved for ``patience`` epochs (also on a rerun
    that resumes a run which had stopped)."""

    every_rank = True

    def __init__(self, patience: int):
        self.patience = patience

    def on_fit_start(self, state: TrainState) -> None:
        self._stop_when_stale(state)

    def on_epoch_end(self, state: TrainState, metrics: dict) -> None:
        self._stop_when_stale(state)

    def _stop_when_stale(self, state: TrainState) -> None:
        if state.monitor.stale_epochs >= self.patience:
            state.stop_training = True


class EpochSummary(Callback):
    """Prints one line per epoch (loss, mIoU, lr, images/s) and where a resumed run continued from."""

    def on_fit_start(self, state: TrainState) -> None:
        if state.resumed_from is not None:
            tqdm.write(f"resumed from {state.resumed_from} after epoch {state.epoch}")

    def on_epoch_end(self, state: TrainState, metrics: dict) -> None:
        tqdm.write(
            f"epoch {state.epoch + 1}/{state.epochs}: train_loss {metrics['train_loss']:.4f} "
            f"val_loss {metrics['val_loss']:.4f} val_miou {metrics['val_miou']:.4f} "
            f"lr {metrics['lr']:.2e} {metrics['train_images_per_s']:.1f} img/s"
        )
