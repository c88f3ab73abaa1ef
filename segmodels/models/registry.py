"""Model registry and factory, in the spirit of ``timm.create_model``."""

from __future__ import annotations

from typing import Callable, Sequence

from torch import nn

from segmodels.registry import Registry

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")
register_model = MODELS.register
list_models = MODELS.names


def create_model(
    name: str, num_classes: int, mean: Sequence[float] | None = None, std: Sequence[float] | None = None, **kwargs
) -> nn.Module:
    """Build the registered segmentation model ``name`` with ``num_classes`` output channels.

    The returned module maps a float image batch [N,3,H,W] to logits [N,num_classes,H,W] and carries
    ``architecture`` / ``model_kwargs`` (to rebuild it from a package) and ``mean`` / ``std``
    (the input normalisation: its encoder's, or ``mean`` / ``std`` when given, e.g. the data set's own for an
    encoder trained from scratch).
    """
    builder = MODELS.get(name)
    if int(num_classes) < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes!r}")
    model = builder(num_classes=int(num_classes), **kwargs)
    if mean is not None or std is not None:
        if mean is None or std is None or len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"mean={mean!r}, std={std!r}: give both, three values each, std > 0")
        model.mean, model.std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
    model.architecture = name
    model.model_kwargs = {k: v for k, v in kwargs.items() if k not in ("pretrained", "pretrained_path")}
    return model
