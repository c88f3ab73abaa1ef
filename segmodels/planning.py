"""A training plan from a data set's fingerprint (``experiment=auto``): nnU-Net's idea on this project's models.

:func:`make_plan` is a pure function: the fingerprint of ``dataset.yaml`` (:mod:`segmodels.data.fingerprint`), a
:class:`PlanContext` (budget, device, whether the encoder starts from weights) and a ``speed`` function (seconds per
train image of a model at a size and batch) in; a :class:`Plan` out: config values, each with the rule that chose
it and the fingerprint figures it read. The plan's values become Hydra overrides placed *before* the user's own,
so every planned value can still be set on the command line. No rule names a data set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

SIDE_MULTIPLE = 32  # encoders downsample by 32
MAX_PIXELS = {"cpu": 320 * 240, "cuda": 512 * 512}  # training input pixels a device trains at in reasonable time
MIN_OBJECT_PX = 16  # a typical object should span at least this many pixels of the training input
MAX_BATCH = {"cpu": 8, "cuda": 16}
RARE_SHARE = 0.05  # a class with a smaller share of the train pixels is rare: Dice joins cross-entropy
IMBALANCE = 3.0  # largest / smallest class share above which classes are weighted (median frequency)
SMALL_DATA = 500  # train images below which the small default network is kept
EPOCHS = (3, 300)
TRAIN_SHARE_OF_BUDGET = 0.85  # the rest: validation passes, start-up, saving the model

Speed = Callable[[str, list[int], int], float]  # (model config name, [h, w], batch) -> seconds per train image


class PlanError(ValueError):
    """The fingerprint lacks what a plan needs; the message says what and how to get it."""


@dataclass(frozen=True)
class PlanContext:
    """What the plan knows besides the data: the time budget, the device kind and the model chosen so far."""

    budget_minutes: float
    device: str  # cpu | cuda
    model: str  # the model config's name (conf/model/<name>.yaml)
    pretrained: bool  # the encoder starts from weights (model.pretrained or model.pretrained_path)


@dataclass(frozen=True)
class PlannedValue:
    key: str  # a Hydra override key (a group, e.g. loss, or a dotted key)
    value: Any
    rule: str
    evidence: str  # the fingerprint figures the rule read


@dataclass
class Plan:
    values: list[PlannedValue] = field(default_factory=list)

    def set(self, key: str, value: Any, rule: str, evidence: str = "") -> Any:
        self.values.append(PlannedValue(key, value, rule, evidence))
        return value

    def overrides(self) -> list[str]:
        """Hydra overrides setting every planned value (``++`` adds keys a model config does not declare)."""
        return [
            f"{'' if value.key in GROUPS else '++'}{value.key}={hydra_literal(value.value)}" for value in self.values
        ]

    def rules(self) -> dict[str, str]:
        """``key -> "value: rule (evidence)"``, as the run's config records it (``plan.rules``)."""
        return {
            value.key: f"{hydra_literal(value.value)}: {value.rule}"
            + (f" ({value.evidence})" if value.evidence else "")
            for value in self.values
        }


GROUPS = {"model", "loss"}


def hydra_literal(value: Any) -> str:
    """``value`` in Hydra override syntax (lists and dicts nested, strings bare)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(hydra_literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{hydra_literal(v)}" for k, v in value.items()) + "}"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def plan_image_size(plan: Plan, fingerprint: dict, device: str) -> tuple[list[int], float]:
    """Training and evaluation size: the median image, scaled down (aspect kept) to the device's pixel budget,
    sides a multiple of 32; returns it and the share of a median image's area it shows at native resolution."""
    median = (fingerprint.get("size") or {}).get("median")
    if not median:
        raise PlanError("the fingerprint has no image sizes")
    height, width = (int(v) for v in median)
    cap = MAX_PIXELS[device]
    if height * width <= cap:  # within the budget: the nearest multiple of 32 on each side
        size = [max(SIDE_MULTIPLE, round(side / SIDE_MULTIPLE + 0.01) * SIDE_MULTIPLE) for side in (height, width)]
    else:  # scaled down, aspect kept, rounded down so that it stays within the budget
        scale = math.sqrt(cap / (height * width))
        size = [max(SIDE_MULTIPLE, int(side * scale // SIDE_MULTIPLE) * SIDE_MULTIPLE) for side in (height, width)]
    plan.set(
        "transforms.image_size",
        size,
        f"the median image, scaled down to at most {cap:,} px ({device}) with its aspect kept, sides the nearest "
        f"multiple of {SIDE_MULTIPLE} within that",
        f"median image {height}x{width}",
    )
    return size, min(1.0, size[0] * size[1] / (height * width))


def _class_shares(fingerprint: dict) -> list[float]:
    return [float(entry.get("share") or 0.0) for entry in fingerprint.get("classes") or []]


def plan_augmentation(plan: Plan, fingerprint: dict, size: list[int], native_share: float) -> None:
    """Crop scale (objects stay visible), flips and turns (vertical ones only for orientation-free data), jitter."""
    shares = _class_shares(fingerprint)
    classes = fingerprint.get("classes") or []
    background = max(range(len(shares)), key=shares.__getitem__) if shares else None
    diameters = [
        (i, entry.get("object_px"))
        for i, entry in enumerate(classes)
        if i != background and shares[i] > 0 and entry.get("object_px")
    ]
    median_height = int(fingerprint["size"]["median"][0])
    lower, evidence = 0.8 * native_share, f"native-resolution crop = {native_share:.2f} of the image"
    if diameters:
        smallest_class, smallest = min(diameters, key=lambda item: item[1])
        at_training = smallest * size[0] / median_height
        evidence += (
            f"; smallest typical object: class {smallest_class}, {smallest:.0f} px "
            f"({at_training:.0f} px at training size)"
        )
        if at_training < MIN_OBJECT_PX:
            lower = min(lower, (at_training / MIN_OBJECT_PX) ** 2)
    lower = round(min(0.8, max(0.08, lower)), 2)
    plan.set(
        "transforms.train.scale",
        [lower, 1.0],
        f"crops from {lower} of the image (slightly past native resolution, and zoomed in until typical objects "
        f"span >= {MIN_OBJECT_PX} px) to the whole image",
        evidence,
    )
    plan.set("transforms.train.ratio", [0.9, 1.1], "conservative aspect jitter")
    plan.set("transforms.train.hflip", 0.5, "horizontal flips: every data set")
    free = bool(fingerprint.get("orientation_free"))
    turns = 0.5 if free else 0.0
    rule = "declared orientation-free at ingest" if free else "images have an up and down (data.orientation_free=false)"
    plan.set("transforms.train.vflip", turns, f"vertical flips: {rule}", f"orientation_free={free}")
    plan.set("transforms.train.rot90", turns, f"90-degree turns: {rule}", f"orientation_free={free}")
    plan.set("transforms.train.rotation", 0, "no free rotation (its padding is not data)")
    grey = fingerprint.get("channels") == "grey"
    plan.set(
        "transforms.train.color_jitter",
        0.0 if grey else 0.1,
        "no colour jitter for grey images (saturation jitter does not apply)" if grey else "mild colour jitter",
        f"channels={fingerprint.get('channels')}",
    )


def plan_normalisation(plan: Plan, fingerprint: dict, pretrained: bool) -> None:
    """The data's own per-channel mean / std for an encoder trained from scratch; a pretrained encoder keeps the
    statistics it was trained with."""
    if pretrained:
        return
    intensity = fingerprint.get("intensity") or {}
    if not intensity.get("mean") or not intensity.get("std"):
        return
    evidence = f"train sample of {intensity.get('sampled')} images"
    plan.set(
        "model.mean",
        [round(float(v), 4) for v in intensity["mean"]],
        "the data's own channel means: the encoder trains from scratch",
        evidence,
    )
    plan.set(
        "model.std",
        [round(float(v), 4) for v in intensity["std"]],
        "the data's own channel standard deviations: the encoder trains from scratch",
        evidence,
    )


def plan_loss(plan: Plan, fingerprint: dict) -> None:
    """Cross-entropy, with median-frequency class weights when the classes are imbalanced, plus Dice when a class
    is rare."""
    present = [share for share in _class_shares(fingerprint) if share > 0]
    if not present:
        raise PlanError("the fingerprint has no class shares")
    smallest, largest = min(present), max(present)
    imbalance = largest / smallest
    weights = "auto" if imbalance > IMBALANCE else None
    evidence = f"class shares {min(present):.3f} to {max(present):.3f} (x{imbalance:.1f})"
    weight_rule = (
        f"median-frequency class weights: largest/smallest share > {IMBALANCE:g}"
        if weights
        else f"no class weights: largest/smallest share <= {IMBALANCE:g}"
    )
    if smallest < RARE_SHARE:
        plan.set("loss", "ce_dice", f"cross-entropy + Dice: a class holds < {RARE_SHARE:.0%} of the pixels", evidence)
        ce = {"name": "ce", "weight": 1.0, **({"class_weights": "auto"} if weights else {})}
        plan.set("loss.losses", [ce, {"name": "dice", "weight": 0.5}], weight_rule, evidence)
    else:
        plan.set("loss", "ce", f"cross-entropy: every class holds >= {RARE_SHARE:.0%} of the pixels", evidence)
        plan.set("loss.class_weights", weights or "null", weight_rule, evidence)


def epochs_for_budget(seconds_per_image: float, train: int, val: int, budget_minutes: float) -> tuple[int, float]:
    """The epochs (within EPOCHS) that TRAIN_SHARE_OF_BUDGET of the budget holds, and the seconds of one epoch (a
    validation image costs about a third of a train step)."""
    per_epoch = seconds_per_image * (train + val / 3)
    budget = budget_minutes * 60 * TRAIN_SHARE_OF_BUDGET
    return int(min(EPOCHS[1], max(EPOCHS[0], budget // max(per_epoch, 1e-9)))), per_epoch


def plan_schedule(plan: Plan, fingerprint: dict, context: PlanContext, size: list[int], speed: Speed) -> None:
    """Batch size from the device and data set size; epochs from the time budget and the measured speed; lr and
    warm-up for a pretrained or a scratch encoder."""
    images = fingerprint.get("images") or {}
    train, val = int(images.get("train") or 0), int(images.get("val") or 0)
    if train < 1:
        raise PlanError("the fingerprint counts no train images")
    batch = max(2, min(MAX_BATCH[context.device], train // 4))
    plan.set(
        "trainer.batch_size",
        batch,
        f"{MAX_BATCH[context.device]} on {context.device}, at most a quarter of the train images, at least 2",
        f"{train} train images",
    )
    seconds = speed(context.model, size, batch)
    epochs, per_epoch = epochs_for_budget(seconds, train, val, context.budget_minutes)
    plan.set(
        "trainer.epochs",
        epochs,
        f"{TRAIN_SHARE_OF_BUDGET:.0%} of the {context.budget_minutes:g}-minute budget / the measured epoch time, "
        f"within {EPOCHS[0]}..{EPOCHS[1]}",
        f"{seconds * 1000:.0f} ms per train image at {size[0]}x{size[1]}, batch {batch}; "
        f"{train} train + {val} val images: {per_epoch:.1f} s per epoch",
    )
    if context.pretrained:
        plan.set("optimizer.lr", 0.001, "pretrained encoder: a smaller lr keeps its features")
        plan.set("trainer.encoder_lr_scale", 0.3, "pretrained encoder moves slower than the new decoder")
        warmup = max(1, round(0.05 * epochs))
    else:
        plan.set("optimizer.lr", 0.003, "encoder from scratch: every layer learns at the full lr")
        plan.set("trainer.encoder_lr_scale", 1.0, "encoder from scratch: one lr for all layers")
        warmup = max(1, round(0.02 * epochs))
    plan.set(
        "scheduler.warmup_epochs",
        warmup,
        f"warm-up {'5' if context.pretrained else '2'}% of the epochs, at least one",
        f"{epochs} epochs",
    )


def plan_model(plan: Plan, fingerprint: dict, context: PlanContext, user_chose_model: bool) -> str:
    """The model: the user's choice or the one of their weights file; else the small default network, or a deeper
    one for large data sets on a GPU."""
    train = int((fingerprint.get("images") or {}).get("train") or 0)
    if user_chose_model:
        return context.model
    if context.pretrained:
        plan.set("model", context.model, "the model whose encoder the given weights file fits (model.pretrained_path)")
        return context.model
    model = "unet_resnet34" if train >= SMALL_DATA and context.device == "cuda" else "unet_resnet18"
    plan.set(
        "model",
        model,
        f"U-Net/ResNet-18 below {SMALL_DATA} train images or on CPU, else ResNet-34",
        f"{train} train images, {context.device}",
    )
    return model


def make_plan(fingerprint: dict | None, context: PlanContext, speed: Speed, user_chose_model: bool = False) -> Plan:
    """The plan of a data set (see the module doc); PlanError when the fingerprint lacks what it needs."""
    if not fingerprint:
        raise PlanError(
            "the data commit's dataset.yaml has no fingerprint (ingested by an older segmodels): "
            "ingest it again (mlflow run . -e ingest -P source=...) or train without experiment=auto"
        )
    plan = Plan()
    model = plan_model(plan, fingerprint, context, user_chose_model)
    size, native_share = plan_image_size(plan, fingerprint, context.device)
    plan_augmentation(plan, fingerprint, size, native_share)
    plan_normalisation(plan, fingerprint, context.pretrained)
    plan_loss(plan, fingerprint)
    plan_schedule(
        plan, fingerprint, PlanContext(context.budget_minutes, context.device, model, context.pretrained), size, speed
    )
    return plan
