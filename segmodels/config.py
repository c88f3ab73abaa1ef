"""Hydra configuration: compose a step's config from ``conf/`` with command-line overrides."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Iterable, Sequence

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from segmodels.schemas import GROUP_SCHEMAS


class ConfigError(ValueError):
    """A configuration value or override that cannot be used."""


def default_config_dir() -> Path:
    """The project's ``conf/`` folder: ``$PWD/conf`` when present (``mlflow run`` runs steps in the
    project folder), else the one beside the installed package's source tree."""
    here = Path.cwd() / "conf"
    if here.is_dir():
        return here
    return Path(__file__).resolve().parents[1] / "conf"


HYDRA_SPECIAL = re.compile(r"[\s=,'\"\[\]{}()\\]")


def hydra_value(value: str) -> str:
    """``value`` as Hydra override syntax: as is when plain, else a quoted string literal."""
    if not HYDRA_SPECIAL.search(value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def split_overrides(args: Sequence[str], free_overrides: str = "") -> list[str]:
    """Hydra overrides from ``key=value`` arguments (values taken literally, as MLflow passes
    params) and a free-form string of Hydra overrides.

    An argument with an empty value (``lr=``) means "keep the config's default" and is dropped:
    MLproject parameters default to empty so that ``conf/`` stays the single source of defaults.
    """
    overrides = []
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep:
            raise ConfigError(f"override {arg!r} is not of the form key=value")
        if value != "":
            overrides.append(f"{key}={hydra_value(value)}")
    for arg in shlex.split(free_overrides or ""):
        if "=" not in arg:
            raise ConfigError(f"override {arg!r} is not of the form key=value")
        overrides.append(arg)
    return overrides


def register_schemas() -> None:
    """Store each typed group schema as option ``schema`` of its group (the group's YAML files extend it)."""
    store = ConfigStore.instance()
    for group, schema in GROUP_SCHEMAS.items():
        store.store(group=group, name="schema", node=schema)


def load_config(name: str, overrides: Iterable[str] = (), config_dir: Path | None = None) -> DictConfig:
    """Compose ``conf/<name>.yaml`` with ``overrides``; raise :class:`ConfigError` with Hydra's reason."""
    config_dir = Path(config_dir or default_config_dir()).resolve()
    if not (config_dir / f"{name}.yaml").is_file():
        raise ConfigError(f"no config {name}.yaml in {config_dir}")
    register_schemas()
    try:
        with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
            cfg = compose(config_name=name, overrides=list(overrides))
        OmegaConf.resolve(cfg)
    except (HydraException, OmegaConfBaseException) as exc:
        reason = str(exc).strip().splitlines()[0]
        raise ConfigError(f"config {name}: {reason}") from exc
    return cfg


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
