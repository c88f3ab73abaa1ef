"""torch Dataset over a normalised layout: a local folder, or files a reader streams (``segmodels.data.streaming``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import tv_tensors

from segmodels.data.errors import DataValidationError
from segmodels.data.info import load_dataset_info
from segmodels.data.layout import Layout
from segmodels.data.streaming import RemoteFiles


class SegmentationDataset(Dataset):
    """Samples of one split: `(tv_tensors.Image uint8 [3,H,W], tv_tensors.Mask int64 [H,W])`, then `transforms`.
    `root` holds `dataset.yaml`; images and masks are read below it, or through `files` (relative paths) when given."""

    def __init__(self, root, split: str, transforms=None, files: RemoteFiles | None = None):
        layout = Layout(root)
        if split not in layout.splits:
            raise ValueError(f"split {split!r}: expected one of {layout.splits}")
        self.root = layout.root
        self.split = split
        self.transforms = transforms
        self.files = files
        self.info = load_dataset_info(self.root)
        if files is None:
            self.images = layout.images(split)
            self.masks = [layout.mask_for(image) for image in self.images]
            missing = [str(mask) for mask in self.masks if not mask.is_file()]
        else:
            relative = Layout("")
            self.images = [Path(path) for path in files.list(relative.images_dir.joinpath(split).as_posix())]
            self.masks = [relative.mask_for(image) for image in self.images]
            missing = [mask.as_posix() for mask in self.masks if not files.exists(mask.as_posix())]
        if missing:
            raise DataValidationError(f"{missing[0]}: mask missing in prepared data set ({len(missing)} missing)")

    def __len__(self) -> int:
        return len(self.images)

    def prefetch(self, indices) -> None:
        """Start fetching the files of samples `indices` (streamed data sets; nothing to do for local ones)."""
        if self.files is not None:
            self.files.prefetch(path.as_posix() for i in indices for path in (self.images[i], self.masks[i]))

    def _open(self, path: Path):
        return open(path, "rb") if self.files is None else self.files.open(path.as_posix())

    def __getitem__(self, index: int):
        with self._open(self.images[index]) as source, Image.open(source) as image:
            pixels = np.asarray(image.convert("RGB"))
        with self._open(self.masks[index]) as source, Image.open(source) as mask:
            ids = np.asarray(mask)
        image_tensor = tv_tensors.Image(torch.from_numpy(pixels.copy()).permute(2, 0, 1).contiguous())
        mask_tensor = tv_tensors.Mask(torch.from_numpy(ids.astype(np.int64)))
        if self.transforms is not None:
            return self.transforms(image_tensor, mask_tensor)
        return image_tensor, mask_tensor
