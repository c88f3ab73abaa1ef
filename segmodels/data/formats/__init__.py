"""Annotation format readers; importing this package registers them (detection follows this order)."""

from segmodels.data.formats.base import (
    FORMATS,
    Sample,
    SourceReader,
    create_reader,
    decode_mask_image,
    detect_format,
    list_formats,
    register_format,
)
from segmodels.data.formats import voc, coco, labelme, folder  # noqa: F401,E402  (registration order = detection order)

__all__ = [
    "FORMATS",
    "Sample",
    "SourceReader",
    "create_reader",
    "decode_mask_image",
    "detect_format",
    "list_formats",
    "register_format",
]
