"""Validation at the data's resolution, and fine-tuning controls (encoder learning rate, freezing)."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from torch.utils.data import DataLoader

from segmodels.config import ConfigError, load_config
from segmodels.data import ClassStats, SegmentationDataset, load_dataset_info, median_frequency_weights, prepare_dataset
from segmodels.inference import predict
from segmodels.metrics import ConfusionMatrix
from segmodels.training import Callback, train
from segmodels.training.builder import build_model, collate_full_resolution, resolve_class_weights, seed_everything
from segmodels.training.engine import Placement, evaluate
from segmodels.training.precision import MixedPrecision
from segmodels.transforms import build_transforms

TINY = [
    "trainer.epochs=2",
    "trainer.batch_size=4",
    "trainer.num_workers=0",
    "trainer.progress_bar=false",
    "transforms.image_size=32",
    "model.encoder_name=resnet18",
    "model.decoder_channels=[16,16,16,8,8]",
]
VAL_SIZES = [(48, 64), (30, 30), (64, 48), (32, 32), (90, 40)]


def write_pair(folder: Path, split: str, name: str, size: tuple[int, int], rng: np.random.Generator) -> None:
    """An image of coloured blocks and its mask (classes 0-2, a strip of ignored pixels)."""
    height, width = size
    mask = np.zeros((height, width), np.uint8)
    mask[: height // 2, : width // 3] = 1
    mask[height // 3 :, width // 2 :] = 2
    mask[-2:, :] = 255
    colours = np.array([[20, 20, 20], [200, 40, 40], [40, 40, 200]], np.uint8)
    image = colours[np.minimum(mask, 2)] + rng.integers(0, 30, (height, width, 3), dtype=np.uint8)
    for kind, array in (("images", image), ("masks", mask)):
        (folder / kind / split).mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).save(folder / kind / split / f"{name}.png")


@pytest.fixture(scope="module")
def mixed_sizes(tmp_path_factory) -> Path:
    """A prepared data set whose validation images all have different sizes and aspect ratios."""
    root = tmp_path_factory.mktemp("mixed")
    rng = np.random.default_rng(0)
    for index in range(4):
        write_pair(root / "source", "train", f"t{index}", (40, 40), rng)
    for index, size in enumerate(VAL_SIZES):
        write_pair(root / "source", "val", f"v{index}", size, rng)
    cfg = load_config("ingest", ["data.classes=[a,b,c]"])
    return prepare_dataset(root / "source", root / "data", cfg.data, on_error="fail", split_seed=0).root


def numpy_scores(truths: list[np.ndarray], predictions: list[np.ndarray], num_classes: int) -> tuple[np.ndarray, list]:
    """Confusion matrix and per-class IoU computed independently of segmodels.metrics."""
    matrix = np.zeros((num_classes, num_classes), np.int64)
    for truth, prediction in zip(truths, predictions):
        valid = truth != 255
        np.add.at(matrix, (truth[valid].astype(int), prediction[valid].astype(int)), 1)
    ious = []
    for c in range(num_classes):
        union = matrix[c, :].sum() + matrix[:, c].sum() - matrix[c, c]
        ious.append(matrix[c, c] / union if union else float("nan"))
    return matrix, ious


def test_validation_metrics_are_those_of_full_resolution_masks(mixed_sizes):
    """``evaluate`` scores each image against its original mask: the same numbers as the masks ``predict``
    returns at each image's size, compared with the ground truth by plain numpy."""
    cfg = load_config("train", TINY)
    info = load_dataset_info(mixed_sizes)
    seed_everything(0)
    model, spec = build_model(cfg, info)
    dataset = SegmentationDataset(mixed_sizes, "val", build_transforms(cfg.transforms, False, spec.mean, spec.std, 255))
    loader = DataLoader(dataset, batch_size=3, collate_fn=partial(collate_full_resolution, ignore_index=255))
    confusion = ConfusionMatrix(info.num_classes, 255)
    metrics = evaluate(
        model,
        torch.nn.CrossEntropyLoss(ignore_index=255),
        loader,
        Placement(torch.device("cpu"), MixedPrecision(False, torch.bfloat16)),
        confusion=confusion,
        class_names=info.class_names,
    )

    raw = SegmentationDataset(mixed_sizes, "val")
    images = [image.permute(1, 2, 0).numpy() for image, _ in raw]
    truths = [mask.numpy() for _, mask in raw]
    predictions = predict(model, spec, images, batch_size=2)
    assert sorted(p.shape for p in predictions) == sorted(t.shape for t in truths) == sorted(VAL_SIZES)
    matrix, ious = numpy_scores(truths, predictions, info.num_classes)
    assert np.array_equal(confusion.matrix.numpy(), matrix)
    assert matrix.sum() == sum(int((t != 255).sum()) for t in truths)  # every labelled pixel, at full resolution
    for name, iou in zip(info.class_names, ious):
        assert metrics[f"val_iou_{name}"] == pytest.approx(iou, nan_ok=True)
    assert metrics["val_miou"] == pytest.approx(np.nanmean(ious))


class EncoderWatcher(Callback):
    """Copies of the encoder's and decoder's state after each epoch."""

    def __init__(self):
        self.states: list[tuple[dict, dict]] = []
        self.group_lrs: list[float] = []

    def on_fit_start(self, state):
        self.group_lrs = [group["initial_lr"] for group in state.optimizer.param_groups]
        self.states.append(self.snapshot(state))

    def on_epoch_end(self, state, metrics):
        self.states.append(self.snapshot(state))

    @staticmethod
    def snapshot(state):
        return (
            {k: v.clone() for k, v in state.model.encoder.state_dict().items()},
            {k: v.clone() for k, v in state.model.decoder.state_dict().items()},
        )


def changed(before: dict, after: dict) -> bool:
    return any(not torch.equal(before[k], after[k]) for k in before if not k.endswith("num_batches_tracked"))


def test_frozen_encoder_keeps_weights_and_statistics_then_trains_at_its_own_lr(mixed_sizes, tmp_path):
    watcher = EncoderWatcher()
    cfg = load_config(
        "train", [*TINY, "trainer.encoder_lr_scale=0.1", "trainer.freeze_encoder_epochs=1", "optimizer.lr=0.01"]
    )
    train(cfg, mixed_sizes, tmp_path / "work", callbacks=[watcher])
    (encoder0, decoder0), (encoder1, decoder1), (encoder2, _) = watcher.states
    assert not changed(encoder0, encoder1)  # frozen: weights and BatchNorm running statistics
    assert changed(decoder0, decoder1)
    assert changed(encoder1, encoder2)  # unfrozen in the second epoch
    assert sorted(set(watcher.group_lrs)) == pytest.approx([0.001, 0.01])


@pytest.mark.parametrize("override", ["trainer.encoder_lr_scale=-1", "trainer.freeze_encoder_epochs=-2"])
def test_negative_fine_tuning_values_are_refused(mixed_sizes, tmp_path, override):
    with pytest.raises(ConfigError, match="trainer.encoder_lr_scale"):
        train(load_config("train", [*TINY, override]), mixed_sizes, tmp_path / "work")


def test_auto_class_weights_are_the_train_splits_median_frequency_weights(mixed_sizes, tmp_path):
    class Capture(Callback):
        def on_fit_start(self, state):
            self.weights, self.loss_weight = state.class_weights, state.criterion.weight.tolist()

    capture = Capture()
    train(
        load_config("train", [*TINY, "trainer.epochs=1", "loss.class_weights=auto"]),
        mixed_sizes,
        tmp_path / "work",
        callbacks=[capture],
    )
    expected = median_frequency_weights(load_dataset_info(mixed_sizes))
    assert capture.weights == expected and capture.loss_weight == pytest.approx(expected)
    assert len(set(expected)) > 1  # the fixture's classes are imbalanced


def test_auto_class_weights_reach_combo_members_and_nothing_else():
    cfg = OmegaConf.create(
        {
            "_target_": "segmodels.losses.create_loss",
            "name": "combo",
            "losses": [{"name": "ce", "class_weights": "auto"}, {"name": "dice"}],
        }
    )

    class Info:  # the statistics of a two-class train split: class 1 is 3x rarer
        name, num_classes = "fixture", 2
        class_stats = {"train": ClassStats(pixels=(300, 100), image_pixels=(400, 400), images=(1, 1), ignored_pixels=0)}

    resolved, weights = resolve_class_weights(cfg, Info())
    assert weights == pytest.approx([0.5 / 0.75, 0.5 / 0.25])  # median frequency 0.5; frequencies 0.75, 0.25
    assert resolved.losses[0].class_weights == weights and "class_weights" not in resolved.losses[1]
    assert resolve_class_weights(OmegaConf.create({"name": "ce", "class_weights": None}), Info())[1] is None
