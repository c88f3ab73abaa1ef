"""torchvision's DeepLabV3 and LRASPP, wrapped to return a logits tensor."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torchvision.models import segmentation as tv_segmentation

from .encoders import load_pretrained_weights
from .registry import register_model

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class TorchvisionSegmentation(nn.Module):
    """Adapter: torchvision segmentation models return ``{"out": logits}``; this returns the logits."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.mean, self.std = IMAGENET_MEAN, IMAGENET_STD

    @property
    def encoder(self) -> nn.Module:
        """The backbone (what ``trainer.encoder_lr_scale`` and ``trainer.freeze_encoder_epochs`` act on)."""
        return self.model.backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)["out"]


def _torchvision_builder(factory: Callable[..., nn.Module], weights: str, backbone_weights: str):
    def build(
        num_classes: int,
        pretrained: bool = False,
        pretrained_backbone: bool = False,
        pretrained_path: str | None = None,
        **kwargs,
    ) -> TorchvisionSegmentation:
        model = factory(
            weights=weights if pretrained else None,
            weights_backbone=backbone_weights if pretrained_backbone else None,
            num_classes=None if pretrained else num_classes,
            **kwargs,
        )
        if pretrained:
            classifier = model.classifier
            last = classifier[-1] if isinstance(classifier, nn.Sequential) else classifier.high_classifier
            replacement = nn.Conv2d(last.in_channels, num_classes, kernel_size=1)
            if isinstance(classifier, nn.Sequential):
                classifier[-1] = replacement
            else:
                classifier.high_classifier = replacement
                classifier.low_classifier = nn.Conv2d(classifier.low_classifier.in_channels, num_classes, 1)
        if pretrained_path is not None:
            load_pretrained_weights(model.backbone, pretrained_path)
        return TorchvisionSegmentation(model)

    return build


register_model("tv_deeplabv3_resnet50")(_torchvision_builder(tv_segmentation.deeplabv3_resnet50, "DEFAULT", "DEFAULT"))
register_model("tv_lraspp_mobilenet_v3_large")(
    _torchvision_builder(tv_segmentation.lraspp_mobilenet_v3_large, "DEFAULT", "DEFAULT")
)
