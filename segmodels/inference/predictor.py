"""Batched prediction: images in (any size), class-id masks out (same size)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn

from segmodels.inference.options import InferenceOptions, InvalidInput
from segmodels.inference.windows import sliding_window_labels
from segmodels.models import ModelSpec
from segmodels.transforms import logits_at_size, model_input, same_size_slices, with_tta

__all__ = ["InferenceOptions", "InvalidInput", "predict", "predict_files", "read_rgb_file", "to_image_tensor"]


def to_image_tensor(image) -> torch.Tensor:
    """An RGB image as uint8 tensor [3,H,W] from a numpy array (HxW grey, HxWx3 or HxWx4) or a PIL image."""
    array = np.asarray(image)
    if array.dtype != np.uint8:
        if np.issubdtype(array.dtype, np.floating) and array.size and array.max() <= 1.0:
            array = array * 255.0
        array = np.clip(array, 0, 255).astype(np.uint8)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise InvalidInput(f"image must be HxW, HxWx3 or HxWx4, got shape {array.shape}")
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    array = array[..., :3]
    if not (array.flags.c_contiguous and array.flags.writeable):
        array = np.array(array, order="C")
    return torch.from_numpy(array).permute(2, 0, 1)


def _batches(items: Sequence, size: int) -> Iterable[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@torch.inference_mode()
def predict(
    model: nn.Module,
    spec: ModelSpec,
    images: Sequence,
    batch_size: int = 8,
    device: torch.device | str | None = None,
    options: InferenceOptions = InferenceOptions(),
) -> list[np.ndarray]:
    """Class-id masks (uint8 when the classes fit, else int64), one per input image and at its size.

    ``options`` (:class:`~segmodels.inference.options.InferenceOptions`) say how: with test-time flips averaged
    or not, and for each image whether it is resized or seen in sliding windows at its own resolution
    (:func:`~segmodels.inference.windows.sliding_window_labels`, ``batch_size`` windows at a time). A resized
    image is prepared as validation prepares it (:func:`~segmodels.transforms.model_input`: normalised with
    ``spec.mean`` / ``spec.std``, letterboxed into ``spec.image_size`` without distortion, padded with the mean
    colour); its logits are cropped and resized back bilinearly to the image's size before the arg-max. Resized
    images of one size in a batch are prepared, resized back and copied to the host together
    (:func:`~segmodels.transforms.same_size_slices`). Mixed precision and channels_last on CUDA.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.eval()
    forward = _forward(with_tta(model, options.tta), device)
    box = list(spec.image_size)
    label_dtype = torch.uint8 if spec.num_classes <= 256 else torch.int64
    tensors = [to_image_tensor(image) for image in images]
    masks: list = [None] * len(tensors)
    resized = []
    for index, tensor in enumerate(tensors):
        if options.slides(tensor.shape[-2:], box):
            masks[index] = sliding_window_labels(
                forward, tensor.to(device), spec.mean, spec.std, box, options.overlap, batch_size, label_dtype
            ).numpy()
        else:
            resized.append(index)
    for chunk in _batches(resized, batch_size):
        sizes = [tensors[i].shape[-2:] for i in chunk]
        inputs: list = [None] * len(chunk)
        for _, indexes in same_size_slices(sizes, 3):
            group = model_input(
                torch.stack([tensors[chunk[i]] for i in indexes]).to(device, non_blocking=True),
                spec.mean,
                spec.std,
                box,
            )
            for i, prepared in zip(indexes, group):
                inputs[i] = prepared
        logits = forward(torch.stack(inputs))
        for size, indexes in same_size_slices(sizes, logits.shape[1]):
            labels = logits_at_size(logits[indexes], size).argmax(dim=1).to(label_dtype).cpu().numpy()
            for i, label in zip(indexes, labels):
                masks[chunk[i]] = label
    return masks


def _forward(model: nn.Module, device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
    """``model`` called on a prepared batch: in bfloat16 and channels_last on CUDA, as is elsewhere."""
    on_cuda = device.type == "cuda"

    def forward(batch: torch.Tensor) -> torch.Tensor:
        if on_cuda:
            batch = batch.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=on_cuda):
            return model(batch)

    return forward


def read_rgb_file(path: Path) -> np.ndarray:
    """The RGB pixels of an image file."""
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def predict_files(
    model: nn.Module,
    spec: ModelSpec,
    paths: Sequence[Path],
    batch_size: int = 8,
    read: Callable[[Path], np.ndarray] = read_rgb_file,
    options: InferenceOptions = InferenceOptions(),
) -> Iterator[tuple[Path, np.ndarray, np.ndarray]]:
    """``(path, RGB image, mask)`` for each image file, read with ``read`` and predicted ``batch_size`` at a time
    with ``options`` (only one batch of images in memory)."""
    for chunk in _batches(paths, batch_size):
        images = [read(path) for path in chunk]
        yield from zip(chunk, images, predict(model, spec, images, batch_size=batch_size, options=options))
