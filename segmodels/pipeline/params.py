"""Entry-point parameters: the one place that maps an MLproject ``-P name=value`` to the config key it sets.

``mlflow run . -e train -P lr=0.001`` runs ``python steps/train.py --lr 0.001`` (the MLproject declares no
parameters, so MLflow appends every given one and records only those). A step's command line holds:

- ``--<name> <value>``: a named parameter of :data:`STEP_PARAMS`, or any config key, top level included
  (``--seed 1``, ``--trainer.epochs 3``), so a new config key is a parameter without touching this table;
- ``<key>=<value>``: a Hydra override, as ``segmodels step train optimizer.lr=0.001`` takes them;
- ``--overrides "<hydra overrides>"``: free Hydra overrides, space separated (``loss=ce_dice trainer.amp=false``).

An empty value keeps the config's default. ``main`` takes the parameters of every step and hands each
step its own (:func:`route_main_params`).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import fields
from typing import Mapping, Sequence

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException

from segmodels.config import ConfigError
from segmodels.redaction import shown
from segmodels.schemas import STEP_SCHEMAS, is_text_key

FREE_OVERRIDES = "overrides"
# read by segmodels.training.launch before the step starts; their defaults are conf/launcher.yaml's
LAUNCHER_PARAMS = {"train": ("nproc", "nnodes", "node_rank", "rdzv_endpoint", "rdzv_id", "rdzv_timeout_s")}

STEP_PARAMS: dict[str, dict[str, str]] = {
    "ingest": {
        "source": "source",
        "repo": "lakefs.repo",
        "branch": "lakefs.data_branch",
        "format": "data",
        "on_error": "on_error",
        "experiment": "experiment",
    },
    "train": {
        "data_ref": "data_ref",
        "repo": "lakefs.repo",
        "experiment": "experiment",
        "model": "model",
        "lr": "optimizer.lr",
        "epochs": "trainer.epochs",
        "batch_size": "trainer.batch_size",
        "image_size": "transforms.image_size",
        "budget_minutes": "plan.budget_minutes",
    },
    "register": {
        "run_id": "run_id",
        "model_name": "model_name",
        "metric": "metric",
        "threshold": "threshold",
        "alias": "alias",
        "force": "force",
        "parent_run_id": "parent_run_id",
        "interactive": "interactive",
    },
    "infer": {
        "model_uri": "model_uri",
        "data_ref": "data_ref",
        "source": "source",
        "on_error": "on_error",
        "repo": "lakefs.repo",
        "split": "split",
        "output_dir": "output_dir",
        "commit_predictions": "commit_predictions",
        "interactive": "interactive",
        "tta": "inference.tta",
        "mode": "inference.mode",
    },
    "main": {"env_manager": "env_manager", "force": "force", "reuse_dirty": "reuse_dirty"},
    "reproduce": {"run_id": "run_id"},
}
# a dotted key of each step's config, named by its errors
EXAMPLE_CONFIG_KEY = {
    "ingest": "data.resize_masks",
    "train": "trainer.epochs",
    "register": "lakefs.repo",
    "infer": "lakefs.data_branch",
    "reproduce": "tolerance.rel",
}
CHAIN = ("ingest", "train", "register", "infer")
FILLED_BY_MAIN = {"train": {"data_ref"}, "register": {"run_id"}, "infer": {"model_uri", "data_ref"}}
NOT_IN_CHAIN = {"infer": {"source"}}  # a step's parameters main never passes on (`source` goes to ingest)
MAIN_FREE_OVERRIDES_STEP = "train"  # main's own `-P overrides=...` are train's

HYDRA_SPECIAL = re.compile(r"[\s=,'\"\[\]{}()\\]")
CONFIG_KEY = re.compile(r"^[A-Za-z_][\w-]*(\.[A-Za-z_][\w-]*)+$")


def hydra_value(value: str) -> str:
    """``value`` as Hydra override syntax: a list or dict literal as is (Hydra parses it, so
    ``[192,256]`` becomes a list), a plain word or number as is, anything else a quoted string."""
    if value.startswith(("[", "{")) or not HYDRA_SPECIAL.search(value):
        return value
    return quoted(value)


def quoted(value: str) -> str:
    """``value`` as a Hydra quoted string literal (kept a string whatever it looks like)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def parse_command_line(step: str, argv: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """Split a step's command line into named parameters (``--name value``) and Hydra overrides
    (``key=value`` arguments and the words of ``--overrides``)."""
    params: dict[str, str] = {}
    overrides: list[str] = []
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg.startswith("--"):
            name, sep, value = arg[2:].partition("=")
            if not sep:
                if not args:
                    raise ConfigError(f"parameter {name!r} has no value")
                value = args.pop(0)
            if name == FREE_OVERRIDES and step != "main":  # main hands `overrides` on to train
                overrides += free_overrides(value)
            else:
                params[name] = value
        elif "=" in arg:
            key, _, value = arg.partition("=")
            if value != "":
                overrides.append(checked_override(step, key, key, value))
        else:
            raise ConfigError(f"argument {arg!r} is not of the form --name value or key=value")
    return params, overrides


def free_overrides(text: str) -> list[str]:
    """The Hydra overrides in a space-separated string (quotes group words, as in a shell)."""
    try:
        words = shlex.split(text or "")
    except ValueError as exc:
        raise ConfigError(f"overrides={text!r}: {exc}") from None
    for word in words:
        if "=" not in word:
            raise ConfigError(f"override {word!r} is not of the form key=value")
    return words


def param_overrides(step: str, params: Mapping[str, str]) -> list[str]:
    """Hydra overrides for ``step`` from its named parameters; an unknown name is a ConfigError."""
    table = STEP_PARAMS[step]
    overrides = []
    for name, value in params.items():
        if name in table:
            key = table[name]
        elif is_config_key(step, name):
            key = name
        else:
            known = ", ".join([*table, *LAUNCHER_PARAMS.get(step, ()), FREE_OVERRIDES])
            raise ConfigError(
                f"unknown parameter {shown(name)!r} for {step}; expected one of {known}, "
                f"or a config key such as {EXAMPLE_CONFIG_KEY[step]}"
            )
        if value != "":
            overrides.append(checked_override(step, name, key, value))
    return overrides


def is_config_key(step: str, name: str) -> bool:
    """Whether ``name`` names a key of ``step``'s config: a top-level key of it (``seed``), or any dotted key (Hydra
    refuses one the config lacks in one line naming it)."""
    return bool(CONFIG_KEY.match(name)) or name in {field.name for field in fields(STEP_SCHEMAS[step])}


def checked_override(step: str, name: str, key: str, value: str) -> str:
    """The Hydra override setting ``key`` to ``value`` (quoted when ``step``'s schema types the key ``str``, so
    that a run id like ``47e11020`` is not read as a float first); a value Hydra cannot parse is a ConfigError
    naming the parameter (Hydra's own message names neither)."""
    literal = quoted(value) if is_text_key(step, key) else hydra_value(value)
    override = f"{key}={literal}"
    try:
        OverridesParser.create().parse_override(override)
    except HydraException as exc:
        reason = str(exc).strip().splitlines()[0]
        raise ConfigError(f"{name}={value!r}: not a valid value ({reason})") from None
    return override


def step_overrides(step: str, argv: Sequence[str]) -> list[str]:
    """All Hydra overrides a step's command line asks for (named parameters first)."""
    params, overrides = parse_command_line(step, argv)
    if step == "main":
        return main_overrides(params) + overrides
    return param_overrides(step, params) + overrides


def route_main_params(params: Mapping[str, str]) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """Split ``main``'s parameters into its own and each chain step's: ``<step>.<name>`` goes to that
    step, a bare name to every step that declares it (``overrides`` to train only)."""
    own: dict[str, str] = {}
    per_step: dict[str, dict[str, str]] = {step: {} for step in CHAIN}
    for name, value in params.items():
        step, dot, bare = name.partition(".")
        if dot and step in per_step:
            targets = [step]
            name = bare
        elif name in STEP_PARAMS["main"]:
            own[name] = value
            continue
        elif name == FREE_OVERRIDES:
            targets = [MAIN_FREE_OVERRIDES_STEP]
            recipe = recipe_in(value)
            if recipe is not None and "ingest.experiment" not in params:  # a recipe has a part for ingest too
                per_step["ingest"].setdefault("experiment", recipe)
        else:
            targets = [s for s in CHAIN if name in STEP_PARAMS[s] or name in LAUNCHER_PARAMS.get(s, ())]
        if not targets:
            known = sorted({*STEP_PARAMS["main"], FREE_OVERRIDES, *(p for s in CHAIN for p in STEP_PARAMS[s])})
            raise ConfigError(
                f"unknown parameter {name!r} for main; expected one of {', '.join(known)}, "
                f"or <step>.<name> (e.g. infer.split=val)"
            )
        for step in targets:
            if name in FILLED_BY_MAIN.get(step, ()) or name in NOT_IN_CHAIN.get(step, ()):
                if len(targets) == 1:
                    raise ConfigError(_not_for_main(step, name, value))
                continue
            per_step[step][name] = value
    return own, per_step


def _not_for_main(step: str, name: str, value: str) -> str:
    """Why main refuses ``<step>.<name>``, and what to run instead."""
    if name in FILLED_BY_MAIN.get(step, ()):
        return f"parameter {name!r} of {step} is filled in by main from the previous step"
    return (
        f"parameter {name!r} of {step} is not part of main's chain (its {step} reads the data ingest committed); "
        f"run the step on its own: mlflow run . -e {step} -P {name}={shlex.quote(value)} --env-manager local"
    )


def recipe_in(overrides: str) -> str | None:
    """The recipe an ``experiment=<name>`` word of free ``overrides`` selects, if any."""
    words = [word.partition("=") for word in free_overrides(overrides)]
    return next((value for key, _, value in words if key == "experiment"), None)


def main_overrides(params: Mapping[str, str]) -> list[str]:
    """Hydra overrides of main's config: its own parameters, and each step's under ``steps.<step>``
    (kept as the strings MLflow passes, so each step gets exactly what was given)."""
    own, per_step = route_main_params(params)
    overrides = param_overrides("main", own)
    for step, step_params in per_step.items():
        overrides += [f"+steps.{step}.{name}={quoted(value)}" for name, value in step_params.items() if value != ""]
    return overrides
