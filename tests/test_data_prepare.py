"""Folder sources through prepare_dataset: layout, splits, validation report, byte stability, the torch Dataset."""

from __future__ import annotations

import csv
import hashlib
import os

import numpy as np
import pytest
import torch
from PIL import Image
from test_data_sources import prepare
from torchvision import tv_tensors

from segmodels.data import DataValidationError, Layout, SegmentationDataset, generate_demo_dataset, load_dataset_info
from segmodels.data.splits import assign_splits


def tree_digest(root):
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture()
def demo(tmp_path):
    return generate_demo_dataset(tmp_path / "demo", num_images=30, image_size=32, seed=3)


def test_demo_is_deterministic_and_has_every_class(tmp_path):
    first = generate_demo_dataset(tmp_path / "a", num_images=12, image_size=48, seed=7)
    second = generate_demo_dataset(tmp_path / "b", num_images=12, image_size=48, seed=7)
    other = generate_demo_dataset(tmp_path / "c", num_images=12, image_size=48, seed=8)
    assert tree_digest(first) == tree_digest(second)
    assert tree_digest(first) != tree_digest(other)
    ids = set()
    for mask in sorted((first / "masks").glob("*.png")):
        values = np.asarray(Image.open(mask))
        assert values.shape == (48, 48)
        ids |= set(np.unique(values).tolist())
    assert ids == {0, 1, 2, 3}
    image = Image.open(first / "images" / "demo_00000.png")
    assert image.mode == "RGB" and image.size == (48, 48)


def test_prepare_writes_normalised_layout(demo, tmp_path):
    prepared = prepare(demo, tmp_path / "out", "split_seed=1", "data.val_fraction=0.2", "data.test_fraction=0.1")
    info = load_dataset_info(prepared.root)
    assert info.num_classes == 4 and info.class_names == ["background", "circle", "square", "triangle"]
    assert info.ignore_index == 255 and info.colors[1] == (220, 20, 60)
    assert info.splits == {"train": 21, "val": 6, "test": 3}
    rows = list(csv.DictReader((prepared.root / "manifest.csv").read_text().splitlines()))
    assert len(rows) == 60 and set(rows[0]) >= {"file", "checksum", "size", "split"}
    for row in rows:
        data = (prepared.root / row["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == row["checksum"] and len(data) == int(row["size"])
        assert row["file"].split("/")[1] == row["split"]
    # images are copied byte for byte
    assert (prepared.root / rows[0]["file"]).suffix == ".png"
    name = next(r["file"] for r in rows if r["kind"] == "image").split("/")[-1]
    assert (demo / "images" / name).read_bytes() == (
        prepared.root / next(r["file"] for r in rows if r["file"].endswith(name) and r["kind"] == "image")
    ).read_bytes()
    assert prepared.stats.num_images == 30 and prepared.stats.pixels[:4].sum() == 30 * 32 * 32


def test_prepare_is_byte_stable_and_incremental(demo, tmp_path):
    cache = tmp_path / "cache.json"
    first = prepare(demo, tmp_path / "out", cache_file=cache)
    before = tree_digest(first.root)
    again = prepare(demo, tmp_path / "out", cache_file=cache)
    assert again.reused == 30 and tree_digest(again.root) == before
    fresh = prepare(demo, tmp_path / "fresh")
    assert tree_digest(fresh.root) == before
    # a touched but unchanged file is recognised by its content
    os.utime(demo / "images" / "demo_00002.png", ns=(1, 1))
    touched = prepare(demo, tmp_path / "out", cache_file=cache)
    assert touched.reused == 30 and tree_digest(touched.root) == before
    # change one mask: only that sample is redone
    mask_path = demo / "masks" / "demo_00004.png"
    mask = np.asarray(Image.open(mask_path)).copy()
    mask[:4, :4] = 2
    Image.fromarray(mask).save(mask_path)
    changed = prepare(demo, tmp_path / "out", cache_file=cache)
    assert changed.reused == 29
    after = tree_digest(changed.root)
    differing = {k for k in before if before[k] != after.get(k)}
    assert {k.split("/")[-1] for k in differing} == {
        "demo_00004.png",
        "manifest.csv",
        "dataset.yaml",
    }  # its class stats


def test_splits_are_seeded_and_stable_under_additions():
    names = [f"n{i}" for i in range(100)]
    a = assign_splits(names, seed=0, val_fraction=0.2, test_fraction=0.1)
    assert a == assign_splits(list(reversed(names)), seed=0, val_fraction=0.2, test_fraction=0.1)
    assert a != assign_splits(names, seed=1, val_fraction=0.2, test_fraction=0.1)
    assert sorted(a.values()).count("val") == 20 and sorted(a.values()).count("test") == 10
    grown = assign_splits(names + ["extra"], seed=0, val_fraction=0.2, test_fraction=0.1)
    assert sum(a[n] != grown[n] for n in names) <= 2
    small = assign_splits(["a", "b", "c"], seed=0, val_fraction=0.1, test_fraction=0.1)
    assert sorted(small.values()) == ["test", "train", "val"]


def test_source_splits_are_kept(demo, tmp_path):
    prepared = prepare(demo, tmp_path / "out", "split_seed=5")
    # the normalised layout is itself a folder source with splits: they survive a round trip
    again = prepare(prepared.root, tmp_path / "again", "split_seed=99")
    assert again.info.splits == prepared.info.splits
    assert tree_digest(again.root / "masks") == tree_digest(prepared.root / "masks")


def test_segmentation_dataset_items(demo, tmp_path):
    root = prepare(demo, tmp_path / "out").root
    dataset = SegmentationDataset(root, "train")
    image, mask = dataset[0]
    assert isinstance(image, tv_tensors.Image) and image.dtype == torch.uint8 and image.shape == (3, 32, 32)
    assert isinstance(mask, tv_tensors.Mask) and mask.dtype == torch.int64 and mask.shape == (32, 32)
    flipped = SegmentationDataset(root, "train", transforms=lambda i, m: (i.flip(-1), m.flip(-1)))
    assert torch.equal(flipped[0][1], mask.flip(-1))
    assert len(dataset) + len(SegmentationDataset(root, "val")) + len(SegmentationDataset(root, "test")) == 30


def test_layout_lists_images_and_finds_their_masks(demo, tmp_path):
    layout = Layout(prepare(demo, tmp_path / "out").root)
    images = layout.images()
    assert len(images) == 30 and sum(len(layout.images(split)) for split in layout.splits) == 30
    masks = [layout.mask_for(image) for image in images]
    assert all(mask.is_file() for mask in masks) and layout.images("nope") == []
    manifest = {row["file"] for row in csv.DictReader(layout.manifest_file.read_text().splitlines())}
    assert manifest == {layout.relative(path) for path in images + masks}
    assert load_dataset_info(layout.root).splits == {split: len(layout.images(split)) for split in layout.splits}


def make_bad_source(demo):
    """Corrupt image, missing mask, size mismatch, out-of-range id, extra mask, duplicate name."""
    (demo / "images" / "demo_00001.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (demo / "masks" / "demo_00002.png").unlink()
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(demo / "masks" / "demo_00003.png")
    bad = np.asarray(Image.open(demo / "masks" / "demo_00005.png")).copy()
    bad[0, 0] = 9
    Image.fromarray(bad).save(demo / "masks" / "demo_00005.png")
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(demo / "masks" / "stray.png")
    Image.open(demo / "images" / "demo_00006.png").convert("RGB").save(demo / "images" / "demo_00006.jpg")
    return {
        "demo_00001.png": "corrupt",
        "demo_00002.png": "missing mask",
        "demo_00003.png": "size mismatch: image 32x32, mask 16x16",
        "demo_00005.png": "class ids outside the declared classes: [9]",
        "stray.png": "extra mask",
        "demo_00006.png": "duplicate name",
        "demo_00006.jpg": "duplicate name",
    }


def test_validation_lists_every_bad_file(demo, tmp_path):
    expected = make_bad_source(demo)
    with pytest.raises(DataValidationError) as caught:
        prepare(demo, tmp_path / "out", report_file=tmp_path / "bad_files.csv")
    issues = {issue.file.split("/")[-1]: issue.reason for issue in caught.value.report.issues}
    assert set(issues) == set(expected)
    summary, *shown = str(caught.value).splitlines()
    assert "7 bad file(s)" in summary and "-P data.resize_masks=true" in summary and "-P on_error=skip" in summary
    assert len(shown) == 6 and shown[-1] == f"  ... 2 more; full list in {tmp_path / 'bad_files.csv'}"
    full_list = (tmp_path / "bad_files.csv").read_text()
    for file, reason in expected.items():
        assert reason in issues[file]
        assert file in full_list
    assert not (tmp_path / "out" / "dataset.yaml").exists()


def test_skip_keeps_the_good_files(demo, tmp_path):
    make_bad_source(demo)
    prepared = prepare(demo, tmp_path / "out", "on_error=skip")
    assert prepared.report.accepted == 30 - 5 and len(prepared.report) == 7
    assert sum(prepared.info.splits.values()) == 25
    names = {p.stem for p in (prepared.root / "images").rglob("*.*")}
    assert "demo_00001" not in names and "demo_00006" not in names and "demo_00000" in names


def test_resize_masks_only_when_asked(demo, tmp_path):
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(demo / "masks" / "demo_00003.png")
    with pytest.raises(DataValidationError, match="size mismatch"):
        prepare(demo, tmp_path / "out")
    prepared = prepare(demo, tmp_path / "out", "data.resize_masks=true")
    mask = next((prepared.root / "masks").rglob("demo_00003.png"))
    assert Image.open(mask).size == (32, 32)


def test_empty_source_is_refused(tmp_path):
    (tmp_path / "src" / "images").mkdir(parents=True)
    (tmp_path / "src" / "masks").mkdir()
    with pytest.raises(DataValidationError, match="empty data set"):
        prepare(tmp_path / "src", tmp_path / "out")


def test_mask_values_and_inferred_classes(tmp_path):
    src = tmp_path / "binary"
    (src / "images").mkdir(parents=True)
    (src / "masks").mkdir()
    for i in range(4):
        Image.fromarray(np.full((8, 8), 100, np.uint8)).save(src / "images" / f"{i}.png")
        mask = np.zeros((8, 8), np.uint8)
        mask[:4] = 255
        Image.fromarray(mask).save(src / "masks" / f"{i}.png")
    prepared = prepare(src, tmp_path / "out", "data=binary", "data.classes=[membrane,cell]")  # binary: {255: 1}
    mask = np.asarray(Image.open(next((prepared.root / "masks").rglob("*.png"))))
    assert set(np.unique(mask)) == {0, 1} and prepared.info.class_names == ["membrane", "cell"]
    inferred = prepare(src, tmp_path / "inferred", "data=binary", "data.classes=null")
    assert inferred.info.class_names == ["class_0", "class_1"]
    image = SegmentationDataset(prepared.root, "train")[0][0]
    assert image.shape == (3, 8, 8)  # grey images come out as 3 channels


def test_unknown_format_and_option_are_named(demo, tmp_path):
    with pytest.raises(DataValidationError, match="unknown data format 'nope'"):
        prepare(demo, tmp_path / "out", "data.format=nope")
    with pytest.raises(DataValidationError, match=r"unknown option\(s\) \['colour'\]"):
        prepare(demo, tmp_path / "out", "data=folder", "+data.options.colour=1")


def test_truncated_jpeg_is_refused(demo, tmp_path):
    image = Image.open(demo / "images" / "demo_00000.png").convert("RGB")
    (demo / "images" / "demo_00000.png").unlink()
    image.save(demo / "images" / "demo_00000.jpg", quality=90)
    data = (demo / "images" / "demo_00000.jpg").read_bytes()
    (demo / "images" / "demo_00000.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataValidationError, match=r"demo_00000.jpg: corrupt or unreadable image \(OSError: "):
        prepare(demo, tmp_path / "out")
