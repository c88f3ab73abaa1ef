"""Model package: one folder with ``model.pt`` (state dict) and ``model.yaml`` (how to rebuild and use it)."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import yaml
from torch import nn

from segmodels.data.safe_yaml import load_yaml

from .registry import create_model

WEIGHTS_FILE = "model.pt"
SPEC_FILE = "model.yaml"


@dataclass
class ModelSpec:
    """Everything needed to rebuild a trained model and feed it: architecture, classes and preprocessing."""

    architecture: str
    num_classes: int
    model_kwargs: dict = field(default_factory=dict)
    class_names: list[str] = field(default_factory=list)
    colors: list[list[int]] = field(default_factory=list)
    ignore_index: int = 255
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])
    image_size: list[int] = field(default_factory=lambda: [256, 256])
    metadata: dict = field(default_factory=dict)

    @classmethod
    def from_model(cls, model: nn.Module, **fields) -> ModelSpec:
        """Spec of a model built by :func:`create_model`; ``fields`` fill the remaining entries."""
        return cls(
            architecture=model.architecture,
            model_kwargs=dict(model.model_kwargs),
            mean=list(model.mean),
            std=list(model.std),
            **fields,
        )


def _plain(value):
    """Convert tuples to lists (recursively) so the spec is plain YAML."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def save_package(model: nn.Module, spec: ModelSpec, package_dir: str | Path) -> Path:
    """Write ``model.pt`` and ``model.yaml`` into ``package_dir`` (each file replaced atomically)."""
    package_dir = Path(package_dir)
    package_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = package_dir / (WEIGHTS_FILE + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, package_dir / WEIGHTS_FILE)
    tmp = package_dir / (SPEC_FILE + ".tmp")
    tmp.write_text(yaml.safe_dump(_plain(asdict(spec)), sort_keys=False))
    os.replace(tmp, package_dir / SPEC_FILE)
    return package_dir


def load_spec(package_dir: str | Path) -> ModelSpec:
    """Read ``model.yaml`` of a package."""
    path = Path(package_dir) / SPEC_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not a model package (model.yaml missing)")
    raw = load_yaml(path.read_text()) or {}
    known = set(ModelSpec.__dataclass_fields__)
    unknown = set(raw) - known
    if unknown or "architecture" not in raw or "num_classes" not in raw:
        raise ValueError(
            f"{path}: invalid model spec (unknown keys {sorted(unknown)}, architecture and num_classes required)"
        )
    return ModelSpec(**raw)


def load_package(package_dir: str | Path, map_location: str | torch.device = "cpu") -> tuple[nn.Module, ModelSpec]:
    """Rebuild the model of a package, load its weights and return ``(model in eval mode, spec)``."""
    spec = load_spec(package_dir)
    weights = Path(package_dir) / WEIGHTS_FILE
    if not weights.is_file():
        raise FileNotFoundError(f"{weights}: model package has no weights file")
    model = create_model(spec.architecture, spec.num_classes, **spec.model_kwargs)
    model.load_state_dict(torch.load(weights, map_location=map_location, weights_only=True))
    return model.eval(), spec
