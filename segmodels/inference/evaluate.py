"""Scoring a model on a split of a normalised data set at each image's full resolution."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from segmodels.data import Layout, load_dataset_info
from segmodels.inference.options import InferenceOptions
from segmodels.inference.predictor import predict_files
from segmodels.metrics import ConfusionMatrix
from segmodels.models import ModelSpec


def evaluate_split(
    model: nn.Module,
    spec: ModelSpec,
    data_root: Path | str,
    split: str,
    batch_size: int = 8,
    options: InferenceOptions = InferenceOptions(),
) -> dict:
    """:meth:`ConfusionMatrix.compute` of the model's masks, predicted with ``options`` (test-time flips, resize or
    sliding windows), against the ground truth of ``split`` (images without a mask are skipped); raises ValueError
    when the split has no labelled image."""
    layout = Layout(data_root)
    info = load_dataset_info(layout.root)
    labelled = [path for path in layout.images(split) if layout.mask_for(path).is_file()]
    if not labelled:
        raise ValueError(f"no labelled {split!r} image in the data set at {layout.root}")
    total = ConfusionMatrix(info.num_classes, ignore_index=info.ignore_index)
    for path, _, mask in predict_files(model, spec, labelled, batch_size, options=options):
        truth = np.asarray(Image.open(layout.mask_for(path)), dtype=np.int64)
        total.update(torch.from_numpy(mask.astype(np.int64)), torch.from_numpy(truth))
    return total.compute()
