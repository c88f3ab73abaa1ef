"""Readers against real data written by other tools (skipped when ../shared/realdata is absent)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_data_sources import prepare

from segmodels.data import DataValidationError, SegmentationDataset

REALDATA = Path(__file__).resolve().parents[1].parent / "shared" / "realdata"
LABELME = REALDATA / "labelme" / "examples"

pytestmark = pytest.mark.skipif(not REALDATA.is_dir(), reason=f"{REALDATA} absent")


def read_masks(root):
    return {path.stem: np.asarray(Image.open(path)) for path in sorted((root / "masks").rglob("*.png"))}


def labelme_export(kind):
    """labelme's own VOC export, read straight from its files (not through our readers)."""
    folder = LABELME / kind / "data_dataset_voc" / "SegmentationClass"
    return {path.stem: np.asarray(Image.open(path)) for path in sorted(folder.glob("*.png"))}


@pytest.mark.parametrize("kind", ["semantic_segmentation", "instance_segmentation"])
def test_labelme_json_matches_labelmes_voc_export(kind, tmp_path):
    ours = prepare(LABELME / kind / "data_annotated", tmp_path / "json")
    via_voc = prepare(LABELME / kind / "data_dataset_voc", tmp_path / "voc")
    assert ours.info.class_names == via_voc.info.class_names and ours.info.num_classes == 21
    exported, from_json, from_voc = labelme_export(kind), read_masks(ours.root), read_masks(via_voc.root)
    assert set(from_json) == set(exported) == set(from_voc)
    assert sorted(np.unique(from_json["2011_000006"]).tolist()) == [0, 9, 15, 18, 255]
    for name, mask in exported.items():
        assert np.array_equal(from_voc[name], mask)  # the VOC reader: exact
        # the JSON reader draws as labelme does; Pillow's polygon edge rule moved one pixel in one image since
        # labelme made the export, so allow that pixel (of 562,500) and nothing more
        assert (from_json[name] != mask).sum() <= 1, name


def test_labelme_embedded_image_data(tmp_path):
    source = tmp_path / "tutorial"
    source.mkdir()
    (source / "apc2016_obj3.json").write_bytes((LABELME / "tutorial" / "apc2016_obj3.json").read_bytes())
    prepared = prepare(source, tmp_path / "out", "data.val_fraction=0", "data.test_fraction=0")
    image = next((prepared.root / "images" / "train").iterdir())
    assert Image.open(image).size == (1210, 907)
    assert len(np.unique(read_masks(prepared.root)["apc2016_obj3"])) > 1


@pytest.mark.parametrize("polygons, at_most", [("pil", 1), ("pycocotools", 0.01)])
def test_coco_export_gives_the_same_classes_per_pixel(polygons, at_most, tmp_path):
    prepared = prepare(
        LABELME / "instance_segmentation" / "data_dataset_coco",
        tmp_path / "out",
        "data=coco",
        f"data.options.polygons={polygons}",
    )
    assert prepared.info.class_names[:2] == ["_background_", "aeroplane"] and prepared.info.num_classes == 21
    ours, exported = read_masks(prepared.root), labelme_export("instance_segmentation")
    assert set(ours) == set(exported)
    for name, mask in exported.items():
        labelled = mask != 255  # labelme leaves __ignore__ shapes out of its COCO export
        assert set(np.unique(ours[name][labelled])) == set(np.unique(mask[labelled]))
        differing = (ours[name] != mask)[labelled].sum()
        assert differing <= (at_most if at_most >= 1 else at_most * labelled.sum()), (name, differing)


def test_camvid_grey_masks_with_unlabelled_ignored(tmp_path):
    prepared = prepare(REALDATA / "camvid", tmp_path / "out", "data=camvid")
    assert prepared.info.num_classes == 11 and prepared.info.class_names[-1] == "Bicyclist"
    assert prepared.info.colors[4] == (60, 40, 222)
    assert prepared.stats.num_images == 101 and not prepared.report
    assert prepared.stats.pixels[11] == 0 and prepared.stats.pixels[255] > 0  # 11 became ignore
    image, mask = SegmentationDataset(prepared.root, "val")[0]
    assert image.shape == (3, 360, 480) and mask.shape == (360, 480)


def test_isbi_binary_masks_mapped_by_config(tmp_path):
    source = REALDATA / "isbi2012" / "data" / "membrane" / "train"
    overrides = [
        "data=binary",
        "data.classes=[membrane,cell]",
        "data.options.images_dir=image",
        "data.options.masks_dir=label",
    ]
    prepared = prepare(source, tmp_path / "out", *overrides)
    assert prepared.info.class_names == ["membrane", "cell"]
    assert prepared.stats.num_images == 30 and prepared.stats.pixels[255] == 0
    assert prepared.stats.pixels[1] > prepared.stats.pixels[0] > 0
    image, _ = SegmentationDataset(prepared.root, "train")[0]
    assert image.shape == (3, 512, 512)  # grey slices come out as 3 channels


def test_human_seg_size_mismatches_are_named_and_resized_only_on_request(tmp_path):
    overrides = ["data=binary", "data.options.images_dir=Training_Images", "data.options.masks_dir=Ground_Truth"]
    with pytest.raises(DataValidationError) as caught:
        prepare(REALDATA / "human_seg", tmp_path / "out", *overrides)
    issues = caught.value.report.issues
    assert len(issues) == 198 and all("size mismatch" in issue.reason for issue in issues)
    assert all(issue.file.startswith(str(REALDATA / "human_seg" / "Ground_Truth")) for issue in issues)
    resized = prepare(REALDATA / "human_seg", tmp_path / "out", *overrides, "data.resize_masks=true")
    assert resized.stats.num_images == 290 and not resized.report
