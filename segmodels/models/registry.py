"""Model registry and factory, in the spirit of ``timm.create_model``."""
from __future__ import annotations

from typing import Callable

from torch import nn

_MODEL_BUILDERS: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering a builder ``fn(num_classes, **kwargs) -> nn.Module`` under ``name``."""

    def decorator(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _MODEL_BUILDERS:
            raise ValueError(f"model {name!r} is already registered")
        _MODEL_BUILDERS[name] = builder
        return builder

    return decorator


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`, sorted."""
    return sorted(_MODEL_BUILDERS)


def create_model(name: str, num_classes: int, **kwargs) -> nn.Module:
    """Build the registered segmentation model ``name`` with ``num_classes`` output channels.

    The returned module maps a float image batch [N,3,H,W] to logits [N,num_classes,H,W] and carries
    ``architecture`` / ``model_kwargs`` (to rebuild it from a package) and ``mean`` / ``std``
    (the input normalisation its encoder expects).
    """
    if name not in _MODEL_BUILDERS:
        raise ValueError(f"unknown model {name!r}; registered models: {', '.join(list_models())}")
    if int(num_classes) < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes!r}")
    model = _MODEL_BUILDERS[name](num_classes=int(num_classes), **kwargs)
    model.architecture = name
    model.model_kwargs = {k: v for k, v in kwargs.items() if k not in ("pretrained", "pretrained_path")}
    return model
