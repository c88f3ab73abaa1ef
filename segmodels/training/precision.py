"""Mixed precision: whether autocast is on and in which low-precision dtype."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class MixedPrecision:
    """Autocast settings: on or off, and the low-precision ``dtype`` (float16 also needs a GradScaler)."""

    enabled: bool
    dtype: torch.dtype

    def autocast(self, device: torch.device):
        """The autocast context for ``device``."""
        return torch.autocast(device.type, dtype=self.dtype, enabled=self.enabled)
