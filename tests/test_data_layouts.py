"""Folder layouts as tools publish them: image/mask folders found by their usual names, SegNet's per-split
folders (CamVid), ISBI's image/ + label/; real data skipped when ../shared/realdata is absent."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_data_sources import prepare

from segmodels.data import DataValidationError, detect_format

REALDATA = Path(__file__).resolve().parents[1].parent / "shared" / "realdata"
CAMVID = REALDATA / "camvid"
ISBI = REALDATA / "isbi2012" / "data" / "membrane" / "train"
CAMVID_CLASSES = [
    "Sky",
    "Building",
    "Pole",
    "Road",
    "Pavement",
    "Tree",
    "SignSymbol",
    "Fence",
    "Car",
    "Pedestrian",
    "Bicyclist",
]

realdata = pytest.mark.skipif(not REALDATA.is_dir(), reason=f"{REALDATA} absent")


def split_files(root: Path, folder: str = "images") -> dict[str, set[str]]:
    """{split: file stems} of a prepared layout."""
    return {
        split.name: {path.stem for path in split.iterdir()}
        for split in sorted((root / folder).iterdir())
        if split.is_dir()
    }


def prepared_masks(root: Path) -> dict[str, np.ndarray]:
    return {path.stem: np.asarray(Image.open(path)) for path in sorted((root / "masks").rglob("*.png"))}


def make_pairs(
    root: Path, images: str, masks: str, names=("a", "b", "c", "d", "e"), size=(12, 10)
) -> dict[str, np.ndarray]:
    """Tiny RGB images in root/images and grey class-id masks (0..2) in root/masks; returns the masks by name."""
    rng = np.random.default_rng(0)
    (root / images).mkdir(parents=True)
    (root / masks).mkdir(parents=True)
    expected = {}
    for index, name in enumerate(names):
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(root / images / f"{name}.png")
        mask = np.zeros(size[::-1], np.uint8)
        mask[2:6, index : index + 5] = 1 + index % 2
        Image.fromarray(mask).save(root / masks / f"{name}.png")
        expected[name] = mask
    return expected


# -- folder names found by themselves ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "images, masks",
    [
        ("image", "label"),
        ("img", "masks"),
        ("JPEGImages", "SegmentationClass"),
        ("images", "annotations"),
        ("Images", "GT"),
        ("imgs", "ground_truth"),
    ],
)
def test_folder_names_are_recognised(images, masks, tmp_path):
    expected = make_pairs(tmp_path / "src", images, masks)
    prepared = prepare(tmp_path / "src", tmp_path / "out", "data=folder", "data.classes=[bg,one,two]")
    assert prepared.stats.num_images == 5 and not prepared.report
    assert sum(prepared.info.splits.values()) == 5
    masks_out = prepared_masks(prepared.root)
    assert set(masks_out) == set(expected)
    for name, mask in expected.items():
        assert np.array_equal(masks_out[name], mask)


def test_auto_detection_uses_the_same_names_and_voc_stays_voc(tmp_path):
    make_pairs(tmp_path / "isbi", "image", "label")
    assert detect_format(tmp_path / "isbi") == "folder"
    make_pairs(tmp_path / "segnet", "train", "trainannot")
    assert detect_format(tmp_path / "segnet") == "folder"
    # JPEGImages + SegmentationClass is VOC's layout (ImageSets or not): VOC is tried first, folder last
    make_pairs(tmp_path / "voc", "JPEGImages", "SegmentationClass")
    assert detect_format(tmp_path / "voc") == "voc"
    (tmp_path / "voc" / "ImageSets" / "Segmentation").mkdir(parents=True)
    assert detect_format(tmp_path / "voc") == "voc"
    make_pairs(tmp_path / "other", "frames", "gtFine")
    assert detect_format(tmp_path / "other") == "folder"  # unknown names, but the file stems pair them
    for mask in (tmp_path / "other" / "gtFine").iterdir():
        mask.rename(mask.with_name(f"m_{mask.name}"))
    with pytest.raises(DataValidationError, match=r"cannot detect the annotation format .*images\|image\|img"):
        detect_format(tmp_path / "other")


def test_explicit_folder_names_still_win(tmp_path):
    expected = make_pairs(tmp_path / "src", "frames", "gtFine")
    make_pairs(tmp_path / "src", "images", "masks", names=("x", "y"))  # recognised names, but not the ones asked for
    prepared = prepare(
        tmp_path / "src",
        tmp_path / "out",
        "data=folder",
        "data.options.images_dir=frames",
        "data.options.masks_dir=gtFine",
        "data.classes=[bg,one,two]",
    )
    assert set(prepared_masks(prepared.root)) == set(expected)
    # one folder given, the other found by name
    expected = make_pairs(tmp_path / "one", "frames", "Labels")
    only_images = prepare(
        tmp_path / "one",
        tmp_path / "out2",
        "data=folder",
        "data.options.images_dir=frames",
        "data.classes=[bg,one,two]",
    )
    assert set(prepared_masks(only_images.root)) == set(expected) and not only_images.report


def test_first_split_folder_inside_recognised_folders(tmp_path):
    make_pairs(tmp_path / "src", "image/train", "label/train", names=("a", "b", "c"))
    make_pairs(tmp_path / "src", "image/val", "label/val", names=("d", "e"))
    prepared = prepare(tmp_path / "src", tmp_path / "out", "data=folder", "data.classes=[bg,one,two]")
    assert split_files(prepared.root) == {"train": {"a", "b", "c"}, "val": {"d", "e"}}
    assert prepared.info.splits == {"train": 3, "val": 2, "test": 0}


def test_no_folder_pair_names_what_it_looked_for(tmp_path):
    make_pairs(tmp_path / "src", "frames", "gtFine")
    for mask in (tmp_path / "src" / "gtFine").iterdir():  # stems that do not pair: nothing found below either
        mask.rename(mask.with_name(f"m_{mask.name}"))
    with pytest.raises(DataValidationError) as caught:
        prepare(tmp_path / "src", tmp_path / "out", "data=folder")
    message = str(caught.value)
    assert "\n" not in message
    assert (
        "no image/mask folder pair found (looked for images|image|img|imgs|JPEGImages with masks|mask|labels" in message
    )
    assert "<split>annot" in message and "set data.options.images_dir and masks_dir" in message
    assert "folders there: frames, gtFine" in message
    with pytest.raises(DataValidationError, match="name {split} in both or in neither"):
        prepare(
            tmp_path / "src",
            tmp_path / "out",
            "data=folder",
            "data.options.images_dir='{split}'",
            "data.options.masks_dir=gtFine",
        )


def test_segnet_split_folders(tmp_path):
    source = tmp_path / "src"
    make_pairs(source, "train", "trainannot", names=("t1", "t2", "t3"))
    make_pairs(source, "val", "valannot", names=("v1", "v2"))
    make_pairs(source, "test", "testannot", names=("s1",))
    expected = {"train": {"t1", "t2", "t3"}, "val": {"v1", "v2"}, "test": {"s1"}}
    classes = "data.classes=[bg,one,two]"
    explicit = prepare(
        source,
        tmp_path / "explicit",
        "data=folder",
        "data.options.images_dir='{split}'",
        "data.options.masks_dir='{split}annot'",
        classes,
    )
    assert split_files(explicit.root) == split_files(explicit.root, "masks") == expected
    found = prepare(source, tmp_path / "found", "data=folder", classes)  # the same layout found by itself
    assert split_files(found.root) == expected
    shutil.rmtree(source / "test")  # a mask without its image is reported
    with pytest.raises(DataValidationError) as caught:
        prepare(source, tmp_path / "out", "data=folder", classes)
    [issue] = caught.value.report.issues
    assert issue.file.endswith("testannot/s1.png") and "extra mask" in issue.reason


# -- real data --------------------------------------------------------------------------------------------------


def camvid_full(root: Path) -> dict[str, list[str]]:
    """CamVid in SegNet's full layout (train/ trainannot/ val/ valannot/ test/ testannot/) made of the 101
    published val frames: 60 train, 20 val, 21 test."""
    names = sorted(path.name for path in (CAMVID / "val").glob("*.png"))
    assert len(names) == 101
    splits = {"train": names[:60], "val": names[60:80], "test": names[80:]}
    for split, files in splits.items():
        for folder, source in ((split, "val"), (f"{split}annot", "valannot")):
            (root / folder).mkdir(parents=True)
            for name in files:
                shutil.copyfile(CAMVID / source / name, root / folder / name)
    return splits


@realdata
def test_camvid_full_segnet_layout_keeps_its_splits(tmp_path):
    splits = camvid_full(tmp_path / "CamVid")
    prepared = prepare(tmp_path / "CamVid", tmp_path / "out", "data=camvid")
    assert prepared.info.class_names == CAMVID_CLASSES and prepared.info.num_classes == 11
    assert prepared.stats.num_images == 101 and not prepared.report
    expected = {split: {Path(name).stem for name in files} for split, files in splits.items()}
    assert split_files(prepared.root) == split_files(prepared.root, "masks") == expected
    assert prepared.info.splits == {"train": 60, "val": 20, "test": 21}
    masks = prepared_masks(prepared.root)
    for split, files in splits.items():
        for name in files:
            source = np.asarray(Image.open(tmp_path / "CamVid" / f"{split}annot" / name))
            assert np.array_equal(masks[Path(name).stem], np.where(source == 11, 255, source)), name
    assert prepared.stats.pixels[11] == 0 and prepared.stats.pixels[255] > 0


@realdata
def test_camvid_published_val_subset(tmp_path):
    prepared = prepare(CAMVID, tmp_path / "out", "data=camvid")
    assert prepared.info.class_names == CAMVID_CLASSES
    assert prepared.stats.num_images == 101 and not prepared.report
    # the source names one split only (val/): split by seed, so there is something to train on
    assert prepared.info.splits["train"] > prepared.info.splits["val"] > 0


@realdata
def test_isbi_binary_without_folder_options(tmp_path):
    prepared = prepare(ISBI, tmp_path / "out", "data=binary")
    assert prepared.info.class_names == ["background", "foreground"]
    assert prepared.stats.num_images == 30 and not prepared.report
    masks = prepared_masks(prepared.root)
    assert len(masks) == 30
    for name, mask in masks.items():
        source = np.asarray(Image.open(ISBI / "label" / f"{name}.png"))
        assert np.array_equal(mask, (source == 255).astype(np.uint8)), name
    assert set(np.unique(np.concatenate([m.ravel() for m in masks.values()])).tolist()) == {0, 1}
