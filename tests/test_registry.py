"""The one registry type behind models, losses and data formats."""

from __future__ import annotations

import pytest

from segmodels.losses import LOSSES
from segmodels.models.registry import MODELS
from segmodels.registry import Registry


def test_registry_registers_lists_and_refuses_duplicates_and_unknown_names():
    registry: Registry[int] = Registry("widget")
    registry.register("b")(2)
    registry.register("a")(1)
    assert registry.names() == ["a", "b"] and list(registry) == ["a", "b"]
    assert registry.get("a") == 1 and "b" in registry and "c" not in registry
    with pytest.raises(ValueError, match="widget 'a' is already registered"):
        registry.register("a")(3)
    assert registry.get("a") == 1
    with pytest.raises(ValueError, match="unknown widget 'c'; registered: a, b"):
        registry.get("c")


def test_models_and_losses_share_the_registry_type():
    assert isinstance(MODELS, Registry) and isinstance(LOSSES, Registry)
    assert {"unet", "fpn", "deeplabv3plus"} <= set(MODELS.names())
    with pytest.raises(ValueError, match="loss 'ce' is already registered"):
        LOSSES.register("ce")(object)
