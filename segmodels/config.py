"""Hydra configuration: compose a step's config from ``conf/`` with command-line overrides."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from segmodels.schemas import GROUP_SCHEMAS, STEP_SCHEMAS

RECIPES_DIR = "experiment"  # conf/experiment/<step>/<recipe>.yaml


class ConfigError(ValueError):
    """A configuration value or override that cannot be used."""


def default_config_dir() -> Path:
    """The project's ``conf/`` folder: ``$PWD/conf`` when present (``mlflow run`` runs steps in the
    project folder), else the one beside the installed package's source tree."""
    here = Path.cwd() / "conf"
    if here.is_dir():
        return here
    return Path(__file__).resolve().parents[1] / "conf"


def register_schemas() -> None:
    """Store each typed group schema as option ``schema`` of its group and each step's as ``<step>_schema``
    (the YAML files extend them)."""
    store = ConfigStore.instance()
    for group, schema in GROUP_SCHEMAS.items():
        store.store(group=group, name="schema", node=schema)
    for step, schema in STEP_SCHEMAS.items():
        store.store(name=f"{step}_schema", node=schema)


def step_recipe_overrides(name: str, overrides: Iterable[str], config_dir: Path) -> list[str]:
    """``overrides`` with ``experiment=<recipe>`` turned into ``experiment/<name>=<recipe>``: a recipe
    (``conf/experiment/<step>/<recipe>.yaml``, lightning-hydra-template's experiment files) has one part per
    step, because each step's config has its own groups (ingest's ``data``, train's ``model``...)."""
    if not (config_dir / RECIPES_DIR / name).is_dir():
        return list(overrides)
    return [
        f"{RECIPES_DIR}/{name}={override.partition('=')[2]}" if override.partition("=")[0] == RECIPES_DIR else override
        for override in overrides
    ]


def load_config(name: str, overrides: Iterable[str] = (), config_dir: Path | None = None) -> DictConfig:
    """Compose ``conf/<name>.yaml`` with ``overrides`` (``experiment=<recipe>`` selects the recipe's part for
    this step: :func:`step_recipe_overrides`); raise :class:`ConfigError` with Hydra's reason."""
    config_dir = Path(config_dir or default_config_dir()).resolve()
    if not (config_dir / f"{name}.yaml").is_file():
        raise ConfigError(f"no config {name}.yaml in {config_dir}")
    register_schemas()
    try:
        with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
            cfg = compose(config_name=name, overrides=step_recipe_overrides(name, overrides, config_dir))
        OmegaConf.resolve(cfg)
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(f"config {name}: {one_line_reason(exc)}") from exc
    return cfg


def one_line_reason(exc: BaseException) -> str:
    """Hydra's reason on one line: its first line, the cause's (e.g. a type error) and any options listed."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    reason = (lines[0] if lines else type(exc).__name__).rstrip(".")
    cause = exc.__cause__
    if cause is not None and str(cause).strip():
        reason += f": {str(cause).strip().splitlines()[0]}"
    if "Available options" in str(exc):
        start = next(i for i, line in enumerate(lines) if line.startswith("Available options"))
        options = [
            line
            for line in lines[start + 1 :]
            if not line.startswith(("Config search path", "provider=")) and line != "schema"
        ]
        reason += f" (available: {', '.join(options)})"
    return reason


def flatten_config(cfg: DictConfig, prefix: str = "") -> dict[str, str]:
    """Flatten a config to ``{"optimizer.lr": "0.001", ...}`` (strings, as MLflow stores params)."""
    flat: dict[str, str] = {}
    container = OmegaConf.to_container(cfg, resolve=True)

    def walk(node, path):
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{path}.{key}" if path else str(key))
        else:
            flat[path] = str(node)

    walk(container, prefix)
    return flat
