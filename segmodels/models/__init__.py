"""Segmentation models: registry/factory, timm-encoder decoders, torchvision models and model packages."""

from . import segmentation, torchvision_models  # noqa: F401  (register the builders)
from .encoders import TimmEncoder, load_pretrained_weights
from .package import ModelSpec, load_package, load_spec, save_package
from .registry import create_model, list_models, register_model

__all__ = [
    "ModelSpec",
    "TimmEncoder",
    "create_model",
    "list_models",
    "load_package",
    "load_pretrained_weights",
    "load_spec",
    "register_model",
    "save_package",
]
