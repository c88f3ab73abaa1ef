"""The training loop end to end on a tiny demo data set: result, packages, checkpoint, callbacks, config errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from segmodels.config import ConfigError, load_config
from segmodels.models import load_package
from segmodels.training import Callback, EarlyStopping, TrainResult, train

TINY = [
    "trainer.epochs=2",
    "trainer.batch_size=4",
    "trainer.num_workers=0",
    "trainer.progress_bar=false",
    "transforms.image_size=32",
    "model.encoder_name=resnet18",
    "model.decoder_channels=[16,16,16,8,8]",
]


def compose_train(overrides=()):
    return load_config("train", [*TINY, *overrides])


@pytest.fixture(scope="module")
def tiny_data(tiny_demo_dataset) -> Path:
    return tiny_demo_dataset(num_images=16, seed=1)


class Recorder(Callback):
    def __init__(self):
        self.started, self.epochs, self.results = 0, [], []

    def on_fit_start(self, state):
        self.started += 1

    def on_epoch_end(self, state, metrics):
        self.epochs.append((state.epoch, metrics, state.spec.num_classes))

    def on_fit_end(self, state, result):
        self.results.append(result)


@pytest.mark.slow  # three epochs and packaging: ~13 s (test_a_callback_setting_stop_training_ends_the_run: fast)
def test_train_returns_result_packages_and_calls_back(tiny_data, tmp_path):
    recorder = Recorder()
    result = train(compose_train(), tiny_data, tmp_path / "work", callbacks=[recorder])
    assert isinstance(result, TrainResult)
    assert [e for e, _, _ in recorder.epochs] == [0, 1] and recorder.results == [result]
    assert len(result.history) == 2 and result.final_metrics == result.history[-1]
    assert result.best_metrics == result.history[result.best_epoch]
    for key in ("train_loss", "val_loss", "val_miou", "val_dice", "val_pixel_accuracy", "lr", "val_iou_circle"):
        assert key in result.final_metrics
    assert 0.0 <= result.final_metrics["val_miou"] <= 1.0
    model, spec = load_package(result.package_dir)
    assert spec.architecture == "unet" and spec.num_classes == 4 and spec.image_size == [32, 32]
    assert spec.class_names == ["background", "circle", "square", "triangle"]
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 4, 32, 32)
    assert (tmp_path / "work" / "final" / "model.pt").is_file()
    assert (tmp_path / "work" / "checkpoints" / "last.pt").is_file()


def test_rerun_with_finished_checkpoint_resumes_without_training(tiny_data, tmp_path):
    first = train(compose_train(), tiny_data, tmp_path / "work")
    again = train(compose_train(), tiny_data, tmp_path / "work")
    assert again.history == first.history


class StepCounter(Callback):
    def __init__(self):
        self.steps = []

    def on_epoch_end(self, state, metrics):
        self.steps.append((state.scheduler.last_epoch, state.steps_per_epoch, len(state.train_loader)))


@pytest.mark.slow  # two epochs: ~9 s (test_a_callback_setting_stop_training_ends_the_run trains in the fast tier)
def test_gradient_accumulation_steps_the_optimizer_once_per_group(tiny_data, tmp_path):
    counter = StepCounter()
    train(
        compose_train(["trainer.batch_size=2", "trainer.accumulate_grad_batches=2"]),
        tiny_data,
        tmp_path / "w",
        callbacks=[counter],
    )
    (after_first, per_epoch, batches), (after_second, _, _) = counter.steps
    assert batches == 6 and per_epoch == 3  # 12 train images, batch 2, one optimizer step per 2 batches
    assert (after_first, after_second) == (3, 6)


@pytest.mark.slow  # up to 5 epochs: ~10 s (test_a_callback_setting_stop_training_ends_the_run trains in the fast tier)
def test_early_stopping_when_monitor_does_not_improve(tiny_data, tmp_path):
    result = train(
        compose_train(
            ["trainer.epochs=5", "optimizer.lr=0.0", "scheduler=constant", "trainer.early_stopping_patience=2"]
        ),
        tiny_data,
        tmp_path / "w",
    )
    assert len(result.history) == 3 and result.best_epoch == 0


def test_unknown_monitor_is_named(tiny_data, tmp_path):
    with pytest.raises(ValueError, match="trainer.monitor='val_nope'"):
        train(compose_train(["trainer.monitor=val_nope"]), tiny_data, tmp_path / "w")


def test_a_custom_callback_sees_every_epoch_once(tiny_data, tmp_path):
    recorder = Recorder()
    result = train(compose_train(["trainer.epochs=3"]), tiny_data, tmp_path / "w", callbacks=[recorder])
    assert recorder.started == 1 and recorder.results == [result]
    assert [e for e, _, _ in recorder.epochs] == [0, 1, 2]
    assert [metrics for _, metrics, _ in recorder.epochs] == result.history


def test_early_stopping_callback_stops_training(tiny_data, tmp_path):
    recorder = Recorder()
    cfg = compose_train(["trainer.epochs=5", "optimizer.lr=0.0", "scheduler=constant"])
    assert cfg.trainer.early_stopping_patience is None
    result = train(cfg, tiny_data, tmp_path / "w", callbacks=[EarlyStopping(patience=1), recorder])
    assert len(result.history) == 2 and [e for e, _, _ in recorder.epochs] == [0, 1]


def test_a_callback_setting_stop_training_ends_the_run(tiny_data, tmp_path):
    class StopAfterFirst(Callback):
        def on_epoch_end(self, state, metrics):
            state.stop_training = True

    result = train(compose_train(["trainer.epochs=4"]), tiny_data, tmp_path / "w", callbacks=[StopAfterFirst()])
    assert len(result.history) == 1 and (tmp_path / "w" / "final" / "model.pt").is_file()


@pytest.mark.parametrize(
    "override, named",
    [
        ("optimizer.lr=abc", "optimizer: lr='abc'"),
        ("+optimizer.betas_typo=1", "optimizer: "),
        ("scheduler.warmup_epochs=soon", "scheduler: warmup_epochs='soon'"),
    ],
)
def test_a_bad_optimizer_or_scheduler_value_is_a_one_line_config_error(tiny_data, tmp_path, override, named):
    with pytest.raises(ConfigError) as error:
        train(compose_train([override]), tiny_data, tmp_path / "w")
    message = str(error.value)
    assert message.startswith(named) and "\n" not in message, message
    assert not (tmp_path / "w" / "checkpoints").exists()


@pytest.mark.parametrize("deterministic", [True, False])
def test_deterministic_kernels_follow_the_trainer_config(tiny_data, tmp_path, deterministic):
    seen = []

    class DeterminismProbe(Callback):
        def on_fit_start(self, state):
            seen.append((torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark))

    cfg = compose_train(["trainer.epochs=1", f"trainer.deterministic={str(deterministic).lower()}"])
    train(cfg, tiny_data, tmp_path / "work", callbacks=[DeterminismProbe()])
    assert seen == [(deterministic, not deterministic)]
    torch.use_deterministic_algorithms(False)
