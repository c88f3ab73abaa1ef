"""Train/eval presets: image and mask move together, masks stay class ids (nearest), normalisation."""

from __future__ import annotations

import pytest
import torch
from torchvision import tv_tensors

from segmodels.config import ConfigError, load_config
from segmodels.transforms import (
    build_transforms,
    fit_within,
    image_size_of,
    letterbox,
    logits_at_size,
    same_size_slices,
)

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def transforms_config(*overrides: str):
    """The shipped ``transforms`` config with ``overrides`` (keys below ``transforms.``)."""
    return load_config("train", [f"transforms.{o}" for o in overrides]).transforms


def sample():
    """Image whose red channel encodes the mask (class id * 60), so alignment can be checked after warping."""
    mask = torch.zeros(40, 60, dtype=torch.int64)
    mask[5:25, 10:30] = 1
    mask[20:38, 35:58] = 2
    mask[0, 0] = 255
    image = torch.zeros(3, 40, 60, dtype=torch.uint8)
    image[0] = (mask.clamp(max=3) * 60).to(torch.uint8)
    return tv_tensors.Image(image), tv_tensors.Mask(mask)


def test_eval_preset_letterboxes_the_image_and_keeps_the_mask_at_full_resolution():
    t = build_transforms(transforms_config("image_size=[30,30]"), train=False, mean=MEAN, std=STD, ignore_index=255)
    source_image, source_mask = sample()  # 40 x 60
    image, mask = t(source_image, source_mask)
    assert image.dtype == torch.float32 and image.shape == (3, 30, 30)
    assert torch.equal(mask, source_mask)  # metrics are computed on the original mask
    assert image[1, :20].min().item() == pytest.approx(-2.0)  # (0 - 0.5) / 0.25: content, 40x60 -> 20x30
    assert torch.all(image[:, 20:] == 0)  # padding: the mean colour after normalisation


@pytest.mark.parametrize(
    "size, box", [((40, 60), (30, 30)), ((360, 480), (192, 256)), ((50, 20), (64, 64)), ((64, 64), (64, 64))]
)
def test_letterbox_and_logits_at_size_round_trip(size, box):
    """Letterboxing keeps the aspect ratio; mapping its output back crops the padding and restores the size."""
    height, width = fit_within(*size, box)
    assert height <= box[0] and width <= box[1] and (height == box[0] or width == box[1])
    assert abs(height / width - size[0] / size[1]) < 0.05
    image = torch.rand(3, *size)
    boxed = letterbox(image, box)
    assert boxed.shape == (3, *box) and torch.all(boxed[:, height:] == 0) and torch.all(boxed[:, :, width:] == 0)
    classes = torch.zeros(2, *size)
    classes[1, :, : size[1] // 2] = 1  # left half class 1, right half class 0
    classes[0] = 1 - classes[1]
    restored = logits_at_size(letterbox(classes, box), size)
    assert restored.shape == (2, *size)
    assert (restored.argmax(0) == classes.argmax(0)).float().mean() > 0.95


def test_train_crops_keep_the_aspect_ratio_of_image_size():
    """A wide output takes wide crops: a circle stays a circle (ratio jitter 1.0), not an ellipse."""
    cfg = transforms_config(
        "image_size=[30,60]",
        "train.scale=[0.5,1.0]",
        "train.ratio=[1.0,1.0]",
        "train.hflip=0",
        "train.vflip=0",
        "train.color_jitter=0",
    )
    t = build_transforms(cfg, train=True, mean=(0, 0, 0), std=(1, 1, 1), ignore_index=255)
    yy, xx = torch.meshgrid(torch.arange(200), torch.arange(400), indexing="ij")
    disc = ((yy - 100) ** 2 + (xx - 200) ** 2 < 40**2).long()
    torch.manual_seed(0)
    for _ in range(5):
        _, mask = t(tv_tensors.Image(torch.zeros(3, 200, 400, dtype=torch.uint8)), tv_tensors.Mask(disc))
        rows, cols = torch.nonzero(mask, as_tuple=True)
        if len(rows) and rows.min() > 0 and cols.min() > 0 and rows.max() < 29 and cols.max() < 59:
            extent_h, extent_w = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
            assert abs(extent_h - extent_w) <= 2


def test_shipped_defaults_do_not_turn_images_upside_down():
    cfg = transforms_config()
    assert cfg.train.vflip == 0 and cfg.train.rot90 == 0


def test_train_preset_keeps_image_and_mask_aligned():
    cfg = transforms_config(
        "image_size=32",
        "train.scale=[0.3,1.0]",
        "train.hflip=0.5",
        "train.vflip=0.5",
        "train.rotation=20",
        "train.color_jitter=0.0",
    )
    t = build_transforms(cfg, train=True, mean=(0, 0, 0), std=(1, 1, 1), ignore_index=255)
    torch.manual_seed(0)
    for _ in range(10):
        image, mask = t(*sample())
        assert image.shape == (3, 32, 32) and mask.shape == (32, 32)
        assert set(mask.unique().tolist()) <= {0, 1, 2, 255}
        outside = torch.nn.functional.pad((mask != 2).float()[None], (1, 1, 1, 1), value=1.0)
        interior = (mask == 2) & (torch.nn.functional.max_pool2d(outside, 3, 1)[0] == 0)
        if interior.any():  # away from region and image edges the image still says class 2 where the mask does
            assert torch.allclose(image[0][interior], torch.tensor(120 / 255), atol=0.05)


def test_image_size_validation():
    assert image_size_of(transforms_config("image_size=48")) == (48, 48)
    assert image_size_of(transforms_config("image_size=[192,256]")) == (192, 256)
    for bad in ("[1,2,3]", "abc", "0", "[0,5]", "'[192,256]'"):
        with pytest.raises(ValueError, match="image_size"):
            image_size_of(transforms_config(f"image_size={bad}"))
    with pytest.raises(ConfigError, match=r"transforms.image_size=\[1, 2, 3\]"):
        image_size_of(transforms_config("image_size=[1,2,3]"))


@pytest.mark.parametrize("ignore_index", [255, 7])
def test_rotation_fills_masks_with_the_data_sets_ignore_index(ignore_index):
    """Pixels a rotation brings in from outside the image are ignored, with the data set's own ignore value."""
    cfg = transforms_config(
        "image_size=[40,60]",
        "train.scale=null",
        "train.hflip=0",
        "train.vflip=0",
        "train.rotation=45",
        "train.color_jitter=0",
    )
    t = build_transforms(cfg, train=True, mean=(0, 0, 0), std=(1, 1, 1), ignore_index=ignore_index)
    image, mask = sample()
    mask[0, 0] = 0
    torch.manual_seed(1)
    filled = set()
    for _ in range(5):
        filled |= set(t(image, mask)[1].unique().tolist()) - {0, 1, 2}
    assert filled == {ignore_index}


def test_shipped_transforms_config_is_typed():
    with pytest.raises(ConfigError, match="hflip"):
        transforms_config("train.hflip=often")


def test_same_size_slices_group_by_size_in_input_order_within_the_byte_budget(monkeypatch):
    sizes = [(4, 5), (2, 2), (4, 5), (4, 5), (2, 2), (9, 1)]
    assert list(same_size_slices(sizes, 3)) == [((4, 5), [0, 2, 3]), ((2, 2), [1, 4]), ((9, 1), [5])]
    monkeypatch.setattr("segmodels.transforms.FULL_SIZE_LOGITS_BYTES", 2 * 4 * 3 * 4 * 5)  # two 4x5 images
    assert list(same_size_slices(sizes, 3)) == [((4, 5), [0, 2]), ((4, 5), [3]), ((2, 2), [1, 4]), ((9, 1), [5])]
    monkeypatch.setattr("segmodels.transforms.FULL_SIZE_LOGITS_BYTES", 1)  # never less than one image a slice
    assert [indexes for _, indexes in same_size_slices(sizes, 3)] == [[0], [2], [3], [1], [4], [5]]
