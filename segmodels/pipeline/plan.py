"""``experiment=auto`` for the train step: the config planned from the data commit's fingerprint.

:func:`planned_config` pins the data reference, reads the fingerprint from the data set's ``dataset.yaml`` (the
data set is fetched once per commit; train then finds it cached), makes the plan (:mod:`segmodels.planning`) and
composes the train config again with the plan's values first and the user's overrides after them (the user's
win). The result records ``plan.mode=applied`` (a reproduction composes the recorded values, it does not plan
again), the pinned ``data_ref`` (the data planned for is the data trained on) and every rule under
``plan.rules``; the train run writes them as ``plan.md``.
"""

from __future__ import annotations

import logging
from typing import Sequence

from omegaconf import DictConfig, open_dict

from segmodels.config import load_config
from segmodels.data import load_dataset_info
from segmodels.data.fingerprint import FINGERPRINT_KEY
from segmodels.dataset_store import fetch_dataset
from segmodels.pipeline import StepError
from segmodels.pipeline.refs import pin_data_ref
from segmodels.planning import PlanContext, PlanError, make_plan

log = logging.getLogger(__name__)

PLAN_ARTIFACT = "plan.md"


def user_chose_model(overrides: Sequence[str]) -> bool:
    """Whether the command line picked a model config (``model=...``)."""
    return any(override.lstrip("+~").partition("=")[0] in ("model", "experiment/train/model") for override in overrides)


def planned_config(cfg: DictConfig, overrides: Sequence[str]) -> DictConfig:
    """``cfg`` (composed with ``overrides``, ``plan.mode=auto``) with the plan applied (see the module doc)."""
    import torch

    from segmodels.training.distributed import resolve_device
    from segmodels.versioning import connect

    lakefs = connect()
    data = pin_data_ref(lakefs, cfg.data_ref, cfg.lakefs.repo, cfg.lakefs.data_branch, cfg.lakefs.data_prefix)
    info = load_dataset_info(fetch_dataset(lakefs, data))
    device = resolve_device(cfg.trainer.device, 0).type
    model = _model_choice(overrides)
    if "pretrained_path" in cfg.model and cfg.model.pretrained_path and not user_chose_model(overrides):
        model = model_for_weights(cfg.model.pretrained_path, model)
    context = PlanContext(
        budget_minutes=float(cfg.plan.budget_minutes),
        device=device,
        model=model,
        pretrained=starts_from_weights(cfg.model),
    )

    def speed(model: str, size: list[int], batch: int) -> float:
        from segmodels.training.speed import cached_speed, model_seconds_per_image, speed_key

        def measure() -> float:
            log.info(
                "plan: measuring the training speed of %s at %dx%d, batch %d (once on this machine)",
                model,
                size[0],
                size[1],
                batch,
            )
            return model_seconds_per_image(model, info.num_classes, size, batch, torch.device(device))

        return cached_speed(speed_key(model, size, batch, torch.device(device)), measure)

    try:
        plan = make_plan(info.extra.get(FINGERPRINT_KEY), context, speed, user_chose_model(overrides))
    except PlanError as error:
        raise StepError(f"experiment=auto on {data}: {error}") from None
    log.info("plan for %s:\n%s", data, render_plan(plan.rules()))
    planned = load_config("train", [*plan.overrides(), *overrides, f"data_ref={data}", "plan.mode=applied"])
    with open_dict(planned):
        planned.plan.rules = plan.rules()
    return planned


def model_for_weights(path: str, preferred: str) -> str:
    """The model config whose encoder the weights file fits: ``preferred`` when it does, else the first of
    ``conf/model/`` in name order; a StepError naming the file and the configs tried when none does."""
    import yaml

    from segmodels.config import default_config_dir
    from segmodels.models.encoders import TimmEncoder

    encoders = {}
    for file in sorted((default_config_dir() / "model").glob("*.yaml")):
        document = yaml.safe_load(file.read_text()) or {}
        if "pretrained_path" in document and document.get("encoder_name"):
            encoders[file.stem] = document["encoder_name"]
    tried = set()
    for name in sorted(encoders, key=lambda name: name != preferred):
        if encoders[name] in tried:
            continue
        tried.add(encoders[name])
        try:
            TimmEncoder(encoders[name], pretrained_path=path)
        except ValueError:
            continue
        return name
    raise StepError(
        f"model.pretrained_path={path}: fits the encoder of no model config (tried "
        f"{', '.join(sorted(tried))}); name the model with -P model=<name>"
    )


def starts_from_weights(model: DictConfig) -> bool:
    """Whether a model config's encoder starts from pretrained weights (hub or a local file)."""
    return any(key in model and bool(model[key]) for key in ("pretrained", "pretrained_path"))


def _model_choice(overrides: Sequence[str]) -> str:
    """The model config the command line chose, else train.yaml's default."""
    for override in reversed(list(overrides)):
        key, _, value = override.lstrip("+~").partition("=")
        if key == "model":
            return value
    return default_model()


def default_model() -> str:
    """The model config ``conf/train.yaml`` selects by default."""
    import yaml

    from segmodels.config import default_config_dir

    defaults = yaml.safe_load((default_config_dir() / "train.yaml").read_text())["defaults"]
    return next(entry["model"] for entry in defaults if isinstance(entry, dict) and "model" in entry)


def plan_document(cfg: DictConfig) -> str:
    """``plan.md``: the planned values of a train config, each with its rule, and how to override them."""
    return (
        f"# Training plan (experiment=auto, {cfg.plan.budget_minutes:g}-minute budget)\n\n"
        f"Planned from the fingerprint in the dataset.yaml of {cfg.data_ref}. A value given on the command line "
        f"wins over the plan (e.g. -P trainer.epochs=20).\n\n{render_plan(dict(cfg.plan.rules))}\n"
    )


def render_plan(rules: dict) -> str:
    """The plan as a readable table: key, value and the rule with the figures it read."""
    lines = ["| key | value | rule (figures) |", "|---|---|---|"]
    for key, text in rules.items():
        value, _, rule = str(text).partition(": ")
        lines.append(f"| `{key}` | `{value}` | {rule} |")
    return "\n".join(lines)
