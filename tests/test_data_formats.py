"""Each source format, made with its own conventions, read into the normalised layout with the expected masks."""

from __future__ import annotations

import base64
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw
from test_data_sources import (
    make_coco_source,
    make_folder_source,
    make_labelme_source,
    make_voc_source,
    prepare,
)

from segmodels.data import (
    DataValidationError,
    detect_format,
    list_formats,
    load_dataset_info,
    register_format,
)
from segmodels.data.formats.folder import FolderReader
from segmodels.data.shapes import SegmentationRasterizer, ShapeCanvas, labelme_shape_patch, rle_string_counts


def read_masks(root):
    return {
        path.stem: (path.parent.name, np.asarray(Image.open(path))) for path in sorted((root / "masks").rglob("*.png"))
    }


def test_formats_are_registered_and_detected(tmp_path):
    assert list_formats() == ["voc", "coco", "labelme", "folder"]
    assert detect_format(make_folder_source(tmp_path / "f")) == "folder"
    assert detect_format(make_voc_source(tmp_path / "v")[0]) == "voc"
    assert detect_format(make_coco_source(tmp_path / "c")[0]) == "coco"
    assert detect_format(make_labelme_source(tmp_path / "l")[0]) == "labelme"
    (tmp_path / "nothing").mkdir()
    with pytest.raises(DataValidationError, match="cannot detect the annotation format"):
        detect_format(tmp_path / "nothing")


def test_a_format_name_is_registered_once():
    class AnotherFolderReader(FolderReader):
        name = "folder"

    with pytest.raises(ValueError, match="data format 'folder' is already registered"):
        register_format(AnotherFolderReader)


def test_folder_with_configured_names(tmp_path):
    source = make_folder_source(tmp_path / "src")
    (source / "images").rename(source / "frames")
    (source / "masks").rename(source / "labels")
    for mask in (source / "labels").glob("*.png"):
        mask.rename(mask.with_name(f"{mask.stem}_mask.png"))
    options = [
        "data.options.images_dir=frames",
        "data.options.masks_dir=labels",
        "data.options.mask_name='{stem}_mask'",
    ]
    prepared = prepare(source, tmp_path / "out", "data=folder", *options)
    assert prepared.info.class_names == ["background", "thing", "other"]
    assert prepared.stats.num_images == 6 and not prepared.report


def test_voc_palette_masks_splits_and_ignore(tmp_path):
    source, expected = make_voc_source(tmp_path / "src")
    prepared = prepare(source, tmp_path / "out", "split_seed=123")
    info = load_dataset_info(prepared.root)
    assert info.num_classes == 21 and info.class_names[15] == "person" and info.colors[1] == (128, 0, 0)
    assert info.splits == {"train": 3, "val": 2, "test": 0}  # from ImageSets, not from the seed
    masks = read_masks(prepared.root)
    assert set(masks) == set(expected)  # the image without a class mask is not a sample
    for name, (split, mask) in masks.items():
        assert np.array_equal(mask, expected[name])  # 255 boundaries stay ignore
        assert split == ("train" if name <= "2007_000003" else "val")
    assert next((prepared.root / "images" / "train").iterdir()).suffix == ".jpg"


def test_voc_listed_name_without_mask_is_missing(tmp_path):
    source, _ = make_voc_source(tmp_path / "src")
    next(source.rglob("SegmentationClass/2007_000002.png")).unlink()
    with pytest.raises(DataValidationError) as caught:
        prepare(source, tmp_path / "out")
    [issue] = caught.value.report.issues
    assert issue.file.endswith("2007_000002.jpg") and "missing mask" in issue.reason


def test_coco_splits_from_annotation_file_names(tmp_path):
    source, _ = make_coco_source(tmp_path / "src")
    document = json.loads((source / "annotations" / "instances_val2017.json").read_text())
    train = {
        **document,
        "images": [
            dict(image, id=image["id"] + 100, file_name="t_" + image["file_name"]) for image in document["images"]
        ],
        "annotations": [dict(a, id=a["id"] + 100, image_id=a["image_id"] + 100) for a in document["annotations"]],
    }
    (source / "annotations" / "instances_train2017.json").write_text(json.dumps(train))
    for image in (source / "val2017").iterdir():
        (source / "train2017").mkdir(exist_ok=True)
        (source / "train2017" / ("t_" + image.name)).write_bytes(image.read_bytes())
    prepared = prepare(source, tmp_path / "out")
    assert prepared.info.splits == {"train": 4, "val": 4, "test": 0}


def test_coco_polygons_and_rle_to_semantic_masks(tmp_path):
    source, expected = make_coco_source(tmp_path / "src")
    prepared = prepare(source, tmp_path / "out")
    assert prepared.info.class_names == ["_background_", "car", "bus", "dog"]
    masks = read_masks(prepared.root)
    assert set(masks) == set(expected)
    for name, (_split, mask) in masks.items():
        assert np.array_equal(mask, expected[name]), name
    # a source naming one split only is split by seed (all-val would leave nothing to train on)
    assert prepared.info.splits == {"train": 2, "val": 1, "test": 1}
    crowd_ignored = prepare(source, tmp_path / "crowd", "data=coco", "data.options.crowd_as_ignore=true")
    _, first = read_masks(crowd_ignored.root)["000000000001"]
    assert (first[0:3] == 255).all()


def test_coco_unknown_category_and_missing_image_are_reported(tmp_path):
    source, _ = make_coco_source(tmp_path / "src")
    path = source / "annotations" / "instances_val2017.json"
    document = json.loads(path.read_text())
    document["annotations"][0]["category_id"] = 99
    document["images"][1]["file_name"] = "gone.jpg"
    path.write_text(json.dumps(document))
    with pytest.raises(DataValidationError) as caught:
        prepare(source, tmp_path / "out")
    reasons = {issue.file.split("/")[-1]: issue.reason for issue in caught.value.report.issues}
    assert "category id 99 is not in categories" in reasons["instances_val2017.json#image_id=1"]
    assert "unreadable image" in reasons["gone.jpg"]


REALDATA_COCO = (
    Path(__file__).parents[2]
    / "shared/realdata/labelme/examples/instance_segmentation/data_dataset_coco"
    / "annotations.json"
)


def full_image_mask(segmentation, height: int, width: int, polygons: str) -> np.ndarray:
    """How a segmentation was drawn before issue 25 (case 10): on a whole-image canvas, each annotation."""
    from pycocotools import mask as mask_utils

    if isinstance(segmentation, list) and polygons == "pil":
        canvas = Image.new("L", (width, height), 0)
        for outline in segmentation:
            ImageDraw.Draw(canvas).polygon(xy=list(zip(outline[::2], outline[1::2])), outline=1, fill=1)
        return np.asarray(canvas, dtype=bool)
    if isinstance(segmentation, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation["counts"], list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        rle = {"size": [height, width], "counts": segmentation["counts"].encode()}
    return mask_utils.decode(rle).astype(bool)


def painted(rasterizer: SegmentationRasterizer, segmentation) -> np.ndarray:
    mask = np.zeros((rasterizer.height, rasterizer.width), dtype=bool)
    rasterizer.patch(segmentation).paint(mask, True)
    return mask


def random_segmentations(rng, height: int, width: int, count: int):
    """Polygons (several per annotation, vertices off the image, on half pixels, wholly outside) and RLEs."""
    from pycocotools import mask as mask_utils

    for index in range(count):
        if index % 5 == 4:
            blob = np.zeros((height, width), np.uint8, order="F")
            top, left = rng.integers(0, height), rng.integers(0, width)
            blob[top : top + rng.integers(1, height), left : left + rng.integers(1, width)] = 1
            blob[rng.random((height, width)) < 0.02] ^= 1
            rle = mask_utils.encode(blob)
            counts = rle["counts"].decode()
            yield {"size": [height, width], "counts": counts if index % 2 else rle_string_counts(rle["counts"])}
            continue
        outlines = []
        for _ in range(rng.integers(1, 3)):
            center = rng.uniform([-0.3 * width, -0.3 * height], [1.3 * width, 1.3 * height])
            radius = rng.uniform(1, max(height, width) / 2)
            points = center + rng.uniform(-radius, radius, size=(rng.integers(3, 12), 2))
            halves = rng.random(len(points)) < 0.3
            points[halves] = np.floor(points[halves]) + 0.5
            outlines.append([float(v) for v in points.ravel()])
        yield outlines


@pytest.mark.parametrize("polygons", ["pycocotools", "pil"])
@pytest.mark.parametrize("height, width", [(37, 53), (64, 4133), (2100, 40)])
def test_coco_drawing_within_boxes_matches_whole_image_drawing(polygons, height, width):
    """Issue 25 case 10: each annotation drawn within its box (polygons) or from its runs (RLE) sets the very
    pixels the whole-image drawing set, for polygons partly or wholly off the image and large coordinates too."""
    rng = np.random.default_rng(height * width)
    rasterizer = SegmentationRasterizer(height, width, polygons)  # one per image: its PIL canvas is reused
    for index, segmentation in enumerate(random_segmentations(rng, height, width, 150)):
        expected = full_image_mask(segmentation, height, width, polygons)
        assert np.array_equal(painted(rasterizer, segmentation), expected), (index, segmentation)


@pytest.mark.skipif(not REALDATA_COCO.exists(), reason="labelme's example COCO export not in ../shared/realdata")
@pytest.mark.parametrize("polygons", ["pycocotools", "pil"])
def test_coco_drawing_within_boxes_matches_on_labelme_example(polygons):
    document = json.loads(REALDATA_COCO.read_text())
    sizes = {image["id"]: (image["height"], image["width"]) for image in document["images"]}
    for annotation in document["annotations"]:
        height, width = sizes[annotation["image_id"]]
        expected = full_image_mask(annotation["segmentation"], height, width, polygons)
        assert expected.any()
        painted_mask = painted(SegmentationRasterizer(height, width, polygons), annotation["segmentation"])
        assert np.array_equal(painted_mask, expected), annotation["id"]


def test_labelme_shapes_labels_and_embedded_images(tmp_path):
    source, expected = make_labelme_source(tmp_path / "src")
    prepared = prepare(source, tmp_path / "out")
    assert prepared.info.class_names == ["_background_", "cat", "dog"]
    masks = read_masks(prepared.root)
    assert set(masks) == set(expected)
    for name, (_, mask) in masks.items():
        classes, ignore_core = expected[name]
        assert (mask[ignore_core] == 255).all()
        outside = mask != 255
        assert np.array_equal(mask[outside], classes[outside])
    embedded = next((prepared.root / "images").rglob("photo0.*"))
    assert embedded.suffix == ".png" and Image.open(embedded).size == (36, 28)


def labelme_full_image_mask(shape: dict, height: int, width: int) -> np.ndarray:
    """How a labelme shape was drawn before issue 25 (case 10), as labelme's shape_to_mask does: on a whole-image
    canvas, each shape (mask shapes: their PNG placed at the first point, cut to the image)."""
    kind, xy = shape["shape_type"], [tuple(point) for point in shape["points"]]
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    if kind == "mask":
        patch = np.asarray(Image.open(io.BytesIO(base64.b64decode(shape["mask"])))).astype(bool)
        x0, y0 = (int(v) for v in xy[0])
        rows, columns = np.arange(height) - y0, np.arange(width) - x0  # each image pixel's place in the patch
        inside_rows = (rows >= 0) & (rows < patch.shape[0])
        inside_columns = (columns >= 0) & (columns < patch.shape[1])
        mask = np.zeros((height, width), dtype=bool)
        mask[np.ix_(inside_rows, inside_columns)] = patch[np.ix_(rows[inside_rows], columns[inside_columns])]
        return mask
    if kind == "circle":
        (cx, cy), (px, py) = xy
        d = math.hypot(cx - px, cy - py)
        draw.ellipse([cx - d, cy - d, cx + d, cy + d], outline=1, fill=1)
    elif kind == "rectangle":
        (x0, y0), (x1, y1) = xy
        draw.rectangle([min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)], outline=1, fill=1)
    elif kind in ("line", "linestrip"):
        draw.line(xy=xy, fill=1, width=10)
    elif kind == "point":
        ((cx, cy),) = xy
        draw.ellipse([cx - 5, cy - 5, cx + 5, cy + 5], outline=1, fill=1)
    else:
        draw.polygon(xy=xy, outline=1, fill=1)
    return np.asarray(canvas, dtype=bool)


def random_labelme_shapes(rng, height: int, width: int, count: int):
    """Every labelme shape type at random: partly or wholly off the image (some just past its edge, where only a
    line's width or a point's disc reaches in), on half pixels, degenerate (zero radius, repeated points)."""
    sizes = {
        "polygon": (3, 12),
        "rectangle": (2, 2),
        "circle": (2, 2),
        "line": (2, 2),
        "linestrip": (1, 8),
        "point": (1, 1),
        "mask": (2, 2),
    }
    for index in range(count):
        kind = list(sizes)[index % len(sizes)]
        if index % 11 == 3:  # just outside an edge
            beyond = rng.choice([-7.5, width + 6.5]), rng.choice([-7.5, height + 6.5])
            center = np.array([beyond[0], rng.uniform(0, height)] if index % 2 else [rng.uniform(0, width), beyond[1]])
        else:
            center = rng.uniform([-0.3 * width, -0.3 * height], [1.3 * width, 1.3 * height])
        radius = rng.uniform(0, max(height, width) / 2) if index % 3 else rng.uniform(0, 6)
        points = center + rng.uniform(-radius, radius, size=(rng.integers(*sizes[kind], endpoint=True), 2))
        halves = rng.random(len(points)) < 0.3
        points[halves] = np.floor(points[halves]) + 0.5
        if index % 13 == 5:
            points[1:] = points[0]  # all points the same
        shape = {"label": "a", "shape_type": kind, "points": points.round(3).tolist()}
        if kind == "mask":
            patch = rng.random((rng.integers(1, height), rng.integers(1, width))) < 0.5
            buffer = io.BytesIO()
            Image.fromarray(patch).save(buffer, format="PNG")
            shape["mask"] = base64.b64encode(buffer.getvalue()).decode()
        yield shape


@pytest.mark.parametrize("height, width", [(37, 53), (64, 413), (300, 40), (50, 50)])
def test_labelme_drawing_within_boxes_matches_whole_image_drawing(height, width):
    """Issue 25 case 10, labelme's side: each shape drawn within its box on one reused canvas sets the very
    pixels the whole-image drawing set, for every shape type, partly or wholly off the image."""
    rng = np.random.default_rng(height * width)
    canvas = ShapeCanvas(height, width)  # one per file, as the reader uses it
    for index, shape in enumerate(random_labelme_shapes(rng, height, width, 400)):
        painted_mask = np.zeros((height, width), dtype=bool)
        labelme_shape_patch(shape, canvas).paint(painted_mask, True)
        expected = labelme_full_image_mask(shape, height, width)
        assert np.array_equal(painted_mask, expected), (index, shape)


def test_labelme_files_with_many_shapes_are_found(tmp_path):
    """labelme writes `shapes` before `imagePath`: a file with more than 16 KiB of shapes was not recognised (the
    source refused as having no labelme JSON files, or the file skipped beside smaller ones)."""
    source, _ = make_labelme_source(tmp_path / "src")
    document = json.loads((source / "photo1.json").read_text())
    shapes = document.pop("shapes") * 300
    path = document.pop("imagePath")
    (source / "photo1.json").write_text(
        json.dumps({"version": "5.4.1", "flags": {}, "shapes": shapes, "imagePath": path, **document}, indent=2)
    )
    assert (source / "photo1.json").read_text().index('"imagePath"') > 1 << 14
    (source / "photo0.json").unlink()
    (source / "photo2.json").unlink()
    assert detect_format(source) == "labelme"
    prepared = prepare(source, tmp_path / "out", "data.val_fraction=0", "data.test_fraction=0")
    assert list(read_masks(prepared.root)) == ["photo1"]


def test_labelme_unknown_label_is_reported(tmp_path):
    source, _ = make_labelme_source(tmp_path / "src")
    document = json.loads((source / "photo1.json").read_text())
    document["shapes"][0]["label"] = "horse"
    (source / "photo1.json").write_text(json.dumps(document))
    with pytest.raises(DataValidationError, match="label 'horse' is not a declared class"):
        prepare(source, tmp_path / "out")
    (source / "labels.txt").unlink()  # without a labels file, classes come from the labels seen
    prepared = prepare(source, tmp_path / "out")
    assert prepared.info.class_names == ["_background_", "cat", "dog", "horse"]


def test_reader_options_come_from_the_format_presets_not_from_code(tmp_path):
    """No reader option has a default in code: conf/data/<format>.yaml holds them, given options go over them."""
    import inspect

    from segmodels.config import load_config
    from segmodels.data.formats import (
        DETECTION_ORDER,
        FORMATS,
        create_reader,
        preset_options,
    )

    for name in DETECTION_ORDER:
        parameters = inspect.signature(FORMATS.get(name).__init__).parameters.values()
        assert not [p.name for p in parameters if p.default is not inspect.Parameter.empty], name
        assert preset_options(name) == dict(load_config("ingest", [f"data={name}"]).data.options)
    reader = create_reader(make_folder_source(tmp_path / "f"), "folder", mask_name="{stem}")
    assert reader.mask_suffix == preset_options("folder")["mask_suffix"]
