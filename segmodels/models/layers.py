"""Building blocks shared by the decoders."""

from __future__ import annotations

from torch import nn


class ConvBnAct(nn.Sequential):
    """Conv2d (no bias) -> BatchNorm2d -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, dilation: int = 1, groups: int = 1):
        padding = dilation * (kernel_size - 1) // 2
        super().__init__(
            nn.Conv2d(
                in_channels, out_channels, kernel_size, padding=padding, dilation=dilation, groups=groups, bias=False
            ),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class SeparableConvBnAct(nn.Sequential):
    """Depthwise 3x3 conv followed by a pointwise ConvBnAct (DeepLabV3+'s separable conv)."""

    def __init__(self, in_channels: int, out_channels: int, dilation: int = 1):
        super().__init__(
            nn.Conv2d(in_channels, in_channels, 3, padding=dilation, dilation=dilation, groups=in_channels, bias=False),
            ConvBnAct(in_channels, out_channels, kernel_size=1),
        )
