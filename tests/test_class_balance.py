"""Class statistics in dataset.yaml (per split, from real ingests) and the class weights computed from them."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import yaml
from PIL import Image
from test_data_sources import prepare

from segmodels.data import ClassSpec, DatasetInfo, DataValidationError, load_dataset_info, median_frequency_weights

CLASSES = ("background", "road", "car", "bike")
IGNORE = 255


def write_split_source(root):
    """images/<split>/*.png + masks/<split>/*.png + classes.txt, masks of several sizes with ignored pixels; bike
    (id 3) appears in val only. Returns {split: [mask arrays]}."""
    rng = np.random.default_rng(5)
    layout = {
        "train": [(16, 12), (20, 10), (16, 12)],
        "val": [(12, 8), (16, 12)],
        "test": [(10, 10)],
    }
    masks = {}
    root.mkdir(parents=True)
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    for split, sizes in layout.items():
        (root / "images" / split).mkdir(parents=True)
        (root / "masks" / split).mkdir(parents=True)
        masks[split] = []
        for index, (width, height) in enumerate(sizes):
            mask = rng.choice(np.array([0, 0, 1, 2, IGNORE], np.uint8), size=(height, width))
            if split == "train" and index == 1:
                mask[mask == 2] = 1  # one train image without car
            if split == "val" and index == 0:
                mask[:3, :4] = 3
            Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(
                root / "images" / split / f"{split}{index}.png"
            )
            Image.fromarray(mask).save(root / "masks" / split / f"{split}{index}.png")
            masks[split].append(mask)
    return masks


def expected_stats(masks):
    """class_stats computed directly from the written masks."""
    expected = {}
    for split, arrays in masks.items():
        pixels, image_pixels, images = [0] * len(CLASSES), [0] * len(CLASSES), [0] * len(CLASSES)
        for mask in arrays:
            for class_id in range(len(CLASSES)):
                count = int((mask == class_id).sum())
                if count:
                    pixels[class_id] += count
                    image_pixels[class_id] += mask.size
                    images[class_id] += 1
        ignored = sum(int((mask == IGNORE).sum()) for mask in arrays)
        expected[split] = {"pixels": pixels, "image_pixels": image_pixels, "images": images, "ignored_pixels": ignored}
    return expected


@pytest.fixture()
def source(tmp_path):
    root = tmp_path / "roads"
    return root, write_split_source(root)


def test_dataset_yaml_holds_class_stats_per_split(source, tmp_path):
    root, masks = source
    prepared = prepare(root, tmp_path / "out", "data=folder")
    document = yaml.safe_load((prepared.root / "dataset.yaml").read_text())
    expected = expected_stats(masks)
    assert document["class_stats"] == expected
    assert document["splits"] == {"train": 3, "val": 2, "test": 1}
    # ignored pixels are in no class count: class pixels plus ignored pixels are every pixel of the split
    for split, arrays in masks.items():
        stats = document["class_stats"][split]
        assert stats["ignored_pixels"] > 0
        assert sum(stats["pixels"]) + stats["ignored_pixels"] == sum(mask.size for mask in arrays)
    assert expected["train"]["pixels"][3] == 0 and expected["val"]["pixels"][3] == 12
    # DatasetInfo parses it, and writes back the same document
    info = load_dataset_info(prepared.root)
    assert info.class_stats["train"].pixels == tuple(expected["train"]["pixels"])
    assert info.class_stats["val"].ignored_pixels == expected["val"]["ignored_pixels"]
    assert (
        yaml.safe_dump(info.to_dict(), sort_keys=False, default_flow_style=None)
        == (prepared.root / "dataset.yaml").read_text()
    )


def test_dataset_yaml_is_byte_identical_across_ingests_and_reuse(source, tmp_path):
    root, _ = source
    cache = tmp_path / "cache.json"
    first = (prepare(root, tmp_path / "a", "data=folder", cache_file=cache).root / "dataset.yaml").read_bytes()
    assert (prepare(root, tmp_path / "b", "data=folder").root / "dataset.yaml").read_bytes() == first
    reused = prepare(root, tmp_path / "a", "data=folder", cache_file=cache)
    assert reused.reused == 6 and (reused.root / "dataset.yaml").read_bytes() == first
    # source files touched but unchanged: reused by content fingerprint, same statistics
    for path in sorted((root / "masks").rglob("*.png")):
        os.utime(path, ns=(1, 1))
    touched = prepare(root, tmp_path / "a", "data=folder", cache_file=cache)
    assert touched.reused == 6 and (touched.root / "dataset.yaml").read_bytes() == first


def test_stats_follow_a_changed_sample_on_reuse(source, tmp_path):
    root, masks = source
    cache = tmp_path / "cache.json"
    prepare(root, tmp_path / "out", "data=folder", cache_file=cache)
    changed = masks["train"][0].copy()
    changed[:, :] = 2
    Image.fromarray(changed).save(root / "masks" / "train" / "train0.png")
    masks["train"][0] = changed
    again = prepare(root, tmp_path / "out", "data=folder", cache_file=cache)
    assert again.reused == 5
    assert yaml.safe_load((again.root / "dataset.yaml").read_text())["class_stats"] == expected_stats(masks)
    assert (again.root / "dataset.yaml").read_bytes() == (
        prepare(root, tmp_path / "fresh", "data=folder").root / "dataset.yaml"
    ).read_bytes()


def info_with(class_stats) -> DatasetInfo:
    classes = tuple(ClassSpec(i, name, (i, i, i)) for i, name in enumerate(CLASSES))
    extra = {"class_stats": class_stats} if class_stats is not None else {}
    return DatasetInfo(name="table", classes=classes, ignore_index=IGNORE, splits={"train": 4, "val": 2}, extra=extra)


TABLE = {
    "train": {
        "pixels": [600, 100, 50, 0],
        "image_pixels": [1000, 400, 500, 0],
        "images": [4, 2, 1, 0],
        "ignored_pixels": 30,
    },
    "val": {
        "pixels": [300, 0, 20, 80],
        "image_pixels": [400, 0, 200, 400],
        "images": [2, 0, 1, 2],
        "ignored_pixels": 0,
    },
}


def test_median_frequency_weights_by_hand():
    info = info_with(TABLE)
    # train: freq = 600/1000, 100/400, 50/500 = 0.6, 0.25, 0.1 -> median 0.25; bike absent -> 1.0
    assert median_frequency_weights(info) == pytest.approx([0.25 / 0.6, 1.0, 2.5, 1.0])
    # val (two-class median: mean of the middle pair): freq = 0.75, -, 0.1, 0.2 -> median 0.2
    assert median_frequency_weights(info, "val") == pytest.approx([0.2 / 0.75, 1.0, 2.0, 1.0])
    assert all(math.isfinite(w) and w > 0 for w in median_frequency_weights(info))


def test_median_frequency_weights_of_an_ingested_data_set(source, tmp_path):
    root, masks = source
    info = load_dataset_info(prepare(root, tmp_path / "out", "data=folder").root)
    train = expected_stats(masks)["train"]
    frequencies = [p / t for p, t in zip(train["pixels"][:3], train["image_pixels"][:3])]
    median = sorted(frequencies)[1]
    assert median_frequency_weights(info) == pytest.approx([median / f for f in frequencies] + [1.0])


def test_missing_class_stats_asks_to_reingest(source, tmp_path):
    assert info_with(None).class_stats is None
    with pytest.raises(DataValidationError, match="no class statistics.*re-ingest"):
        median_frequency_weights(info_with(None))
    # a dataset.yaml written by an older version (no class_stats)
    root, _ = source
    prepared = prepare(root, tmp_path / "out", "data=folder")
    document = yaml.safe_load((prepared.root / "dataset.yaml").read_text())
    del document["class_stats"]
    (prepared.root / "dataset.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    with pytest.raises(DataValidationError, match="re-ingest") as error:
        median_frequency_weights(load_dataset_info(prepared.root))
    assert "\n" not in str(error.value)


def test_malformed_or_empty_class_stats_are_refused():
    with pytest.raises(DataValidationError, match=r"class_stats.train`.pixels: expected a list of 4"):
        _ = info_with({"train": {**TABLE["train"], "pixels": [1, 2]}}).class_stats
    with pytest.raises(DataValidationError, match="no class statistics for split 'test'"):
        median_frequency_weights(info_with(TABLE), "test")
    empty = {"train": {"pixels": [0] * 4, "image_pixels": [0] * 4, "images": [0] * 4, "ignored_pixels": 0}}
    with pytest.raises(DataValidationError, match="no labelled pixels"):
        median_frequency_weights(info_with(empty))
