"""Model registry and factory, in the spirit of ``timm.create_model``."""
from __future__ import annotations

from typing import Callable

from torch import nn

from segmodels.registry import Registry

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")
register_model = MODELS.register
list_models = MODELS.names


def create_model(name: str, num_classes: int, **kwargs) -> nn.Module:
    """Build the registered segmentation model ``name`` with ``num_classes`` output channels.

    The returned module maps a float image batch [N,3,H,W] to logits [N,num_classes,H,W] and carries
    ``architecture`` / ``model_kwargs`` (to rebuild it from a package) and ``mean`` / ``std``
    (the input normalisation its encoder expects).
    """
    builder = MODELS.get(name)
    if int(num_classes) < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes!r}")
    model = builder(num_classes=int(num_classes), **kwargs)
    model.architecture = name
    model.model_kwargs = {k: v for k, v in kwargs.items() if k not in ("pretrained", "pretrained_path")}
    return model
