"""Which callables a config may build: only the ``_target_`` values the project's own ``conf/`` names, at the keys
where it names them.

``hydra.utils.instantiate`` imports and calls whatever a ``_target_`` names (``os.system``, ``builtins.open``,
``distutils.spawn.spawn``...), nested ones too. A config composed from ``conf/`` holds only the targets its files
hold; a config read back from elsewhere (a run's recorded ``config/train.yaml``, an override) may hold others, or a
``_target_`` node where ``conf/`` has a plain value (``model.pretrained_path``). :func:`check_targets` refuses both
before anything is built.
"""

from __future__ import annotations

import re
from collections import defaultdict
from functools import cache
from pathlib import Path
from typing import Any, Iterator, Mapping

import yaml

from segmodels.config import ConfigError, default_config_dir

TARGET_KEY = "_target_"
_PACKAGE = re.compile(r"^#\s*@package\s+(\S+)", re.MULTILINE)

Allowed = Mapping[str, frozenset]  # config key of a _target_ node ("" for the root) -> the targets allowed there


def target_nodes(node: Any, key: str = "") -> Iterator[tuple[str, Any]]:
    """``(key, target)`` of every mapping holding ``_target_`` in ``node`` (mappings and lists, any depth); ``key``
    is dotted (``model``, ``optimizer._args_.0``)."""
    if isinstance(node, Mapping):
        if TARGET_KEY in node:
            yield key, node[TARGET_KEY]
        children = node.items()
    elif isinstance(node, (list, tuple)):
        children = enumerate(node)
    else:
        return
    for name, child in children:
        yield from target_nodes(child, f"{key}.{name}" if key else str(name))


def package_key(relative: str, text: str) -> str:
    """Where a ``conf/`` file's values land in the composed config: its ``# @package`` (``_global_``: the root),
    else its group (the folders above it: ``optimizer/adamw.yaml`` -> ``optimizer``; a step file -> the root)."""
    declared = _PACKAGE.search(text[:1000])
    group = ".".join(Path(relative).parent.parts)
    if declared is None or declared.group(1) == "_group_":
        return group
    return "" if declared.group(1) == "_global_" else declared.group(1).replace("_group_", group)


def conf_targets(files: Mapping[str, str]) -> dict[str, frozenset]:
    """The targets a ``conf/`` folder names, by config key: ``files`` maps each YAML file's path under ``conf/`` to
    its text (the project's own files: this checkout's, or a commit's of its repository)."""
    allowed: dict[str, set] = defaultdict(set)
    for relative, text in files.items():
        base = package_key(relative, text)
        for key, target in target_nodes(yaml.safe_load(text)):
            allowed[".".join(filter(None, (base, key)))].add(target)
    return {key: frozenset(targets) for key, targets in allowed.items()}


@cache
def _folder_targets(conf: Path) -> dict[str, frozenset]:
    return conf_targets({path.relative_to(conf).as_posix(): path.read_text() for path in sorted(conf.rglob("*.yaml"))})


def project_targets() -> dict[str, frozenset]:
    """The targets this project's ``conf/`` (:func:`segmodels.config.default_config_dir`) names, by config key."""
    return _folder_targets(default_config_dir().resolve())


def check_targets(node: Any, key: str, allowed: Allowed) -> None:
    """Refuse (a one-line :class:`ConfigError` naming the key and the target) a ``_target_`` node in ``node`` (the
    config at ``key``) that is not where ``allowed`` has one or names another target."""
    for inner, target in target_nodes(node):
        path = ".".join(filter(None, (key, inner)))
        if path not in allowed:
            raise ConfigError(
                f"{path or 'the config'}: a {TARGET_KEY} node ({TARGET_KEY}={str(target)[:80]!r}) where "
                f"conf/ has plain values: refusing to build it"
            )
        if not isinstance(target, str) or target not in allowed[path]:
            raise ConfigError(
                f"{path}.{TARGET_KEY}={str(target)[:80]!r}: not a target conf/ names for {path} "
                f"({', '.join(sorted(allowed[path]))[:200]}): refusing to build it"
            )
