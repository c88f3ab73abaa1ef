"""Encoder-decoder segmentation models over timm encoders: U-Net, FPN and DeepLabV3+."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .encoders import TimmEncoder
from .layers import ConvBnAct, SeparableConvBnAct
from .registry import register_model


class EncoderDecoder(nn.Module):
    """timm encoder -> decoder -> 1x1 classifier, logits resized (bilinear) to the input size."""

    def __init__(
        self,
        encoder: TimmEncoder,
        decoder: nn.Module,
        decoder_out_channels: int,
        num_classes: int,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.head = nn.Sequential(
            nn.Dropout2d(dropout) if dropout else nn.Identity(),
            nn.Conv2d(decoder_out_channels, num_classes, kernel_size=1),
        )
        self.mean, self.std = encoder.mean, encoder.std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.head(self.decoder(self.encoder(x)))
        if logits.shape[-2:] != x.shape[-2:]:
            logits = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return logits


class UNetDecoder(nn.Module):
    """U-Net decoder: from the deepest feature up, upsample to the next skip's size, concatenate, 2 convs.

    When the shallowest feature is coarser than stride 1 the remaining blocks upsample without skips
    (as segmentation_models.pytorch does for stride-2 first features), one block per remaining
    ``decoder_channels`` entry.
    """

    def __init__(self, encoder_channels: Sequence[int], decoder_channels: Sequence[int]):
        super().__init__()
        skips = list(encoder_channels[:-1])[::-1]
        if len(decoder_channels) < len(skips):
            raise ValueError(
                f"decoder_channels {list(decoder_channels)} needs at least {len(skips)} entries "
                f"for an encoder with {len(encoder_channels)} feature levels"
            )
        in_channels = [encoder_channels[-1], *decoder_channels[:-1]]
        skip_channels = skips + [0] * (len(decoder_channels) - len(skips))
        self.blocks = nn.ModuleList(
            nn.Sequential(ConvBnAct(cin + cskip, cout), ConvBnAct(cout, cout))
            for cin, cskip, cout in zip(in_channels, skip_channels, decoder_channels)
        )
        self.out_channels = decoder_channels[-1]

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        skips = features[:-1][::-1]
        x = features[-1]
        for i, block in enumerate(self.blocks):
            if i < len(skips):
                x = F.interpolate(x, size=skips[i].shape[-2:], mode="nearest")
                x = torch.cat([x, skips[i]], dim=1)
            else:
                x = F.interpolate(x, scale_factor=2.0, mode="nearest")
            x = block(x)
        return x


class FPNDecoder(nn.Module):
    """Feature Pyramid Network decoder (Kirillov et al., panoptic FPN head): the pyramid levels of stride
    4 and coarser are each upsampled to stride 4 and summed."""

    def __init__(
        self,
        encoder_channels: Sequence[int],
        reductions: Sequence[int],
        pyramid_channels: int = 256,
        segmentation_channels: int = 128,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.levels = [i for i, r in enumerate(reductions) if r >= 4]
        if not self.levels:
            raise ValueError(f"FPN needs encoder features of stride >= 4, got reductions {list(reductions)}")
        self.lateral = nn.ModuleList(nn.Conv2d(encoder_channels[i], pyramid_channels, 1) for i in self.levels)
        self.segmentation = nn.ModuleList()
        base = min(reductions[i] for i in self.levels)
        for i in self.levels:
            upsamples = max(int(reductions[i] // base).bit_length() - 1, 0)
            self.segmentation.append(
                nn.Sequential(
                    ConvBnAct(pyramid_channels, segmentation_channels),
                    *[ConvBnAct(segmentation_channels, segmentation_channels) for _ in range(max(upsamples - 1, 0))],
                )
            )
        self.dropout = nn.Dropout2d(dropout) if dropout else nn.Identity()
        self.out_channels = segmentation_channels

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        selected = [features[i] for i in self.levels]
        laterals = [conv(f) for conv, f in zip(self.lateral, selected)]
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + F.interpolate(
                laterals[i], size=laterals[i - 1].shape[-2:], mode="nearest"
            )
        size = laterals[0].shape[-2:]
        out = sum(
            F.interpolate(block(p), size=size, mode="bilinear", align_corners=False)
            for block, p in zip(self.segmentation, laterals)
        )
        return self.dropout(out)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: 1x1 conv, three dilated separable convs and image pooling."""

    def __init__(self, in_channels: int, out_channels: int, rates: Sequence[int]):
        super().__init__()
        self.branches = nn.ModuleList(
            [ConvBnAct(in_channels, out_channels, kernel_size=1)]
            + [SeparableConvBnAct(in_channels, out_channels, dilation=r) for r in rates]
        )
        self.pool = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.ReLU(inplace=True)
        )
        self.project = nn.Sequential(
            ConvBnAct(out_channels * (len(rates) + 2), out_channels, kernel_size=1), nn.Dropout(0.5)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.pool(x).expand(-1, -1, *x.shape[-2:])
        return self.project(torch.cat([b(x) for b in self.branches] + [pooled], dim=1))


class DeepLabV3PlusDecoder(nn.Module):
    """DeepLabV3+ decoder: ASPP on the deepest feature, fused with the stride-4 feature (48-channel projection)."""

    def __init__(
        self,
        encoder_channels: Sequence[int],
        reductions: Sequence[int],
        channels: int = 256,
        atrous_rates: Sequence[int] = (12, 24, 36),
    ):
        super().__init__()
        if 4 not in reductions:
            raise ValueError(f"DeepLabV3+ needs an encoder feature of stride 4, got reductions {list(reductions)}")
        self.low_level = list(reductions).index(4)
        self.aspp = ASPP(encoder_channels[-1], channels, atrous_rates)
        self.low_project = ConvBnAct(encoder_channels[self.low_level], 48, kernel_size=1)
        self.fuse = SeparableConvBnAct(channels + 48, channels)
        self.out_channels = channels

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        low = self.low_project(features[self.low_level])
        high = F.interpolate(self.aspp(features[-1]), size=low.shape[-2:], mode="bilinear", align_corners=False)
        return self.fuse(torch.cat([high, low], dim=1))


@register_model("unet")
def unet(
    num_classes: int,
    encoder_name: str = "resnet18",
    pretrained: bool = False,
    pretrained_path: str | None = None,
    encoder_depth: int | None = None,
    decoder_channels: Sequence[int] = (256, 128, 64, 32, 16),
    dropout: float = 0.0,
) -> EncoderDecoder:
    """U-Net over a timm encoder (``encoder_depth`` feature levels, default all)."""
    encoder = TimmEncoder(encoder_name, pretrained=pretrained, pretrained_path=pretrained_path, depth=encoder_depth)
    decoder_channels = list(decoder_channels)
    decoder = UNetDecoder(encoder.channels, decoder_channels)
    return EncoderDecoder(encoder, decoder, decoder.out_channels, num_classes, dropout)


@register_model("fpn")
def fpn(
    num_classes: int,
    encoder_name: str = "resnet34",
    pretrained: bool = False,
    pretrained_path: str | None = None,
    pyramid_channels: int = 256,
    segmentation_channels: int = 128,
    dropout: float = 0.2,
) -> EncoderDecoder:
    """FPN over a timm encoder."""
    encoder = TimmEncoder(encoder_name, pretrained=pretrained, pretrained_path=pretrained_path)
    decoder = FPNDecoder(encoder.channels, encoder.reductions, pyramid_channels, segmentation_channels, dropout)
    return EncoderDecoder(encoder, decoder, decoder.out_channels, num_classes)


@register_model("deeplabv3plus")
def deeplabv3plus(
    num_classes: int,
    encoder_name: str = "resnet34",
    pretrained: bool = False,
    pretrained_path: str | None = None,
    encoder_output_stride: int = 16,
    decoder_channels: int = 256,
    atrous_rates: Sequence[int] = (12, 24, 36),
) -> EncoderDecoder:
    """DeepLabV3+ over a timm encoder (dilated to ``encoder_output_stride``)."""
    encoder = TimmEncoder(
        encoder_name, pretrained=pretrained, pretrained_path=pretrained_path, output_stride=encoder_output_stride
    )
    decoder = DeepLabV3PlusDecoder(encoder.channels, encoder.reductions, decoder_channels, list(atrous_rates))
    return EncoderDecoder(encoder, decoder, decoder.out_channels, num_classes)
