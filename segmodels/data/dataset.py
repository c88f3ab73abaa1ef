"""torch Dataset over a normalised layout folder."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import tv_tensors

from segmodels.data.errors import DataValidationError
from segmodels.data.info import load_dataset_info
from segmodels.data.layout import Layout


class SegmentationDataset(Dataset):
    """Samples of one split: `(tv_tensors.Image uint8 [3,H,W], tv_tensors.Mask int64 [H,W])`, then `transforms`."""

    def __init__(self, root, split: str, transforms=None):
        layout = Layout(root)
        if split not in layout.splits:
            raise ValueError(f"split {split!r}: expected one of {layout.splits}")
        self.root = layout.root
        self.split = split
        self.transforms = transforms
        self.info = load_dataset_info(self.root)
        self.images = layout.images(split)
        self.masks = [layout.mask_for(image) for image in self.images]
        missing = [str(mask) for mask in self.masks if not mask.is_file()]
        if missing:
            raise DataValidationError(f"{missing[0]}: mask missing in prepared data set ({len(missing)} missing)")

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        with Image.open(self.images[index]) as image:
            pixels = np.asarray(image.convert("RGB"))
        with Image.open(self.masks[index]) as mask:
            ids = np.asarray(mask)
        image_tensor = tv_tensors.Image(torch.from_numpy(pixels.copy()).permute(2, 0, 1).contiguous())
        mask_tensor = tv_tensors.Mask(torch.from_numpy(ids.astype(np.int64)))
        if self.transforms is not None:
            return self.transforms(image_tensor, mask_tensor)
        return image_tensor, mask_tensor
