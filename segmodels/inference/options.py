"""How ``predict`` runs a model over an image: test-time augmentation, and resize vs sliding windows."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from segmodels.transforms import tta_flips

MODES = ("auto", "resize", "sliding")
MAX_OVERLAP = 0.75  # windows cost up to 1 / (1 - overlap)^2 times a tiling without overlap: 16x at most
SLIDING_ABOVE = 2.0  # auto: sliding windows when a side of the image is more than this times the model's


class InvalidInput(ValueError):
    """A model input (an image, a request's column or parameter) that cannot be used; the message says why."""


@dataclass(frozen=True)
class InferenceOptions:
    """``tta``: ``false`` | ``hflip`` | ``flips`` (:func:`segmodels.transforms.tta_flips`); ``mode``: ``resize``
    (the image letterboxed into the model's ``image_size``), ``sliding`` (native resolution, overlapping windows of
    ``image_size`` whose logits are blended) or ``auto`` (sliding when a side of the image is more than
    :data:`SLIDING_ABOVE` times the model's, else resize); ``overlap``: the share of a window its neighbour
    covers, 0 to :data:`MAX_OVERLAP`. InvalidInput (one line) for any other value."""

    tta: str = "false"
    mode: str = "auto"
    overlap: float = 0.5

    def __post_init__(self) -> None:
        try:
            tta_flips(self.tta)
        except ValueError as error:
            raise InvalidInput(str(error)) from None
        if self.mode not in MODES:
            raise InvalidInput(f"mode={str(self.mode)[:80]!r}: expected one of {', '.join(MODES)}")
        overlap = self.overlap
        if (
            isinstance(overlap, bool)
            or not isinstance(overlap, (int, float))
            or not (math.isfinite(overlap) and 0 <= overlap <= MAX_OVERLAP)
        ):
            raise InvalidInput(f"overlap={str(overlap)[:80]!r}: expected a number from 0 to {MAX_OVERLAP}")

    @classmethod
    def of(cls, cfg) -> InferenceOptions:
        """The options of an ``inference`` config node (``tta``, ``mode``, ``overlap``)."""
        return cls(tta=cfg.tta, mode=cfg.mode, overlap=float(cfg.overlap))

    def slides(self, size: Sequence[int], window: Sequence[int]) -> bool:
        """Whether an image of ``size`` (height, width) is predicted in sliding windows of ``window``."""
        if self.mode != "auto":
            return self.mode == "sliding"
        return size[0] > SLIDING_ABOVE * window[0] or size[1] > SLIDING_ABOVE * window[1]
