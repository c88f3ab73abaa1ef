"""Sources: small data sets written with each format's own conventions (used by the other data tests), and the
places a source can live: local archives, http(s) archives, s3:// prefixes and lakefs:// refs."""

from __future__ import annotations

import base64
import csv
import functools
import http.server
import io
import json
import shutil
import tarfile
import threading
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segmodels.config import load_config
from segmodels.data import DataValidationError, PreparedDataset, prepare_dataset
from segmodels.data.classes import voc_palette
from segmodels.data.sources import redact
from segmodels.dataset_store import IngestResult, ingest

# -- calls as the ingest step makes them ------------------------------------------------------------------------


def prepare(source, out_dir, *overrides: str, **kwargs) -> PreparedDataset:
    """prepare_dataset with the ingest step's options: conf/ingest.yaml (its data group included) composed with
    Hydra `overrides` such as "data=folder", "data.val_fraction=0.2", "split_seed=1"."""
    cfg = load_config("ingest", list(overrides))
    return prepare_dataset(source, out_dir, cfg.data, on_error=cfg.on_error, split_seed=cfg.split_seed, **kwargs)


def ingest_into(lakefs, repo: str, source, work_dir: Path, *overrides: str, **kwargs) -> IngestResult:
    """dataset_store.ingest into `repo` with the ingest step's options (see `prepare`), at the configured
    lakefs.data_branch and lakefs.data_prefix."""
    cfg = load_config("ingest", list(overrides))
    return ingest(
        lakefs,
        source,
        cfg.data,
        repo,
        cfg.lakefs.data_branch,
        cfg.lakefs.data_prefix,
        on_error=cfg.on_error,
        split_seed=cfg.split_seed,
        work_dir=work_dir,
        **kwargs,
    )


# -- sources in each format -------------------------------------------------------------------------------------


def noise_image(rng, width, height):
    return Image.fromarray(rng.integers(0, 255, size=(height, width, 3), dtype=np.uint8))


def make_folder_source(root: Path, count=6, size=(24, 20), classes=("background", "thing", "other")) -> Path:
    """images/*.png + masks/*.png + classes.txt."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "classes.txt").write_text("\n".join(classes) + "\n")
    for i in range(count):
        noise_image(rng, *size).save(root / "images" / f"img{i}.png")
        mask = np.zeros(size[::-1], np.uint8)
        mask[2:10, 3 + i : 12 + i] = 1 + i % (len(classes) - 1)
        Image.fromarray(mask).save(root / "masks" / f"img{i}.png")
    return root


def make_voc_source(
    root: Path, train=("2007_000001", "2007_000002", "2007_000003"), val=("2007_000004", "2007_000005")
) -> tuple[Path, dict]:
    """VOCdevkit/VOC2012 with JPEGImages, palette SegmentationClass (255 boundaries), ImageSets/Segmentation."""
    rng = np.random.default_rng(1)
    voc = root / "VOCdevkit" / "VOC2012"
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / folder).mkdir(parents=True)
    expected = {}
    for index, name in enumerate(train + val):
        noise_image(rng, 30, 22).save(voc / "JPEGImages" / f"{name}.jpg", quality=90)
        mask = np.zeros((22, 30), np.uint8)
        mask[4:14, 5:20] = 1 + index * 3  # aeroplane, cat, ...
        mask[3, 4:21] = 255  # VOC's "void" boundary
        palette_mask = Image.fromarray(mask)
        palette_mask.putpalette(voc_palette())  # an L image with a palette becomes mode P, values kept
        palette_mask.save(voc / "SegmentationClass" / f"{name}.png")
        expected[name] = mask
    # an image without a class mask (VOC has many): not part of the segmentation set
    noise_image(rng, 30, 22).save(voc / "JPEGImages" / "2007_009999.jpg")
    splits = voc / "ImageSets" / "Segmentation"
    (splits / "train.txt").write_text("\n".join(train) + "\n")
    (splits / "val.txt").write_text("\n".join(val) + "\n")
    (splits / "trainval.txt").write_text("\n".join(train + val) + "\n")
    return root, expected


def decode_rle(rle) -> np.ndarray:
    from pycocotools import mask as mask_utils

    with warnings.catch_warnings():  # pycocotools' numpy 2 deprecation
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_utils.decode(rle)


def make_coco_source(root: Path) -> tuple[Path, dict]:
    """annotations/instances_val2017.json + val2017/*.jpg, sparse category ids, polygons and both RLE kinds."""
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(2)
    (root / "annotations").mkdir(parents=True)
    (root / "val2017").mkdir()
    categories = [{"id": 3, "name": "car"}, {"id": 18, "name": "dog"}, {"id": 7, "name": "bus"}]
    class_of = {3: 1, 7: 2, 18: 3}  # background 0, then by category id
    images, annotations, expected = [], [], {}
    for image_id in range(1, 5):
        file_name = f"{image_id:012d}.jpg"
        noise_image(rng, 40, 32).save(root / "val2017" / file_name)
        images.append({"id": image_id, "file_name": file_name, "width": 40, "height": 32})
        semantic = np.zeros((32, 40), np.uint8)
        polygon = [4.0, 4.0, 20.0, 4.0, 20.0, 18.0, 4.0, 18.0]
        region = decode_rle(mask_utils.merge(mask_utils.frPyObjects([polygon], 32, 40))).astype(bool)
        semantic[region] = class_of[3]
        annotations.append(
            {
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": 3,
                "segmentation": [polygon],
                "iscrowd": 0,
            }
        )
        blob = np.zeros((32, 40), np.uint8, order="F")
        blob[10:30, 15 + image_id : 35] = 1
        compressed = mask_utils.encode(np.asfortranarray(blob))
        compressed["counts"] = compressed["counts"].decode()
        semantic[blob.astype(bool)] = class_of[18]
        annotations.append(
            {
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": 18,
                "segmentation": compressed,
                "iscrowd": 0,
            }
        )
        if image_id % 2:
            crowd = np.zeros((32, 40), np.uint8)
            crowd[0:3, 0:40] = 1
            runs, value, length = [], 0, 0  # uncompressed RLE: run lengths in column-major order, from 0s
            for pixel in crowd.ravel(order="F"):
                if pixel == value:
                    length += 1
                else:
                    runs.append(length)
                    value, length = pixel, 1
            runs.append(length)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": 7,
                    "segmentation": {"size": [32, 40], "counts": runs},
                    "iscrowd": 1,
                }
            )
            semantic[crowd.astype(bool)] = class_of[7]
        expected[Path(file_name).stem] = semantic
    document = {"images": images, "annotations": annotations, "categories": categories}
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(document))
    return root, expected


def make_labelme_source(root: Path) -> tuple[Path, dict]:
    """labelme JSONs beside their images (one embedded as imageData), labels.txt with __ignore__ and _background_."""
    rng = np.random.default_rng(3)
    root.mkdir(parents=True)
    (root / "labels.txt").write_text("__ignore__\n_background_\ncat\ndog\n")
    expected = {}
    for index in range(3):
        name = f"photo{index}"
        image = noise_image(rng, 36, 28)
        shapes = [
            {
                "label": "cat",
                "points": [[2, 2], [14, 2], [14, 12], [2, 12]],
                "shape_type": "polygon",
                "group_id": None,
                "flags": {},
            },
            {"label": "dog", "points": [[20, 15], [30, 25]], "shape_type": "rectangle", "group_id": None, "flags": {}},
            {
                "label": "__ignore__",
                "points": [[22, 4], [25, 4]],
                "shape_type": "circle",
                "group_id": None,
                "flags": {},
            },
        ]
        mask = np.zeros((28, 36), np.uint8)
        mask[2:13, 2:15] = 1
        mask[15:26, 20:31] = 2
        yy, xx = np.mgrid[0:28, 0:36]
        document = {"version": "5.4.1", "flags": {}, "shapes": shapes, "imageHeight": 28, "imageWidth": 36}
        if index == 0:  # embedded image, imagePath naming nothing usable
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            document.update(imagePath="../elsewhere/photo0.png", imageData=base64.b64encode(buffer.getvalue()).decode())
        else:
            image.save(root / f"{name}.jpg", quality=95)
            document.update(imagePath=f"{name}.jpg", imageData=None)
        (root / f"{name}.json").write_text(json.dumps(document))
        expected[name] = (mask, (xx - 22) ** 2 + (yy - 4) ** 2 <= 4)  # circle of radius 3 -> ignore, core checked
    return root, expected


# -- where a source lives ---------------------------------------------------------------------------------------


def manifest_rows(root: Path) -> list[dict]:
    return list(csv.DictReader(open(root / "manifest.csv")))


@pytest.fixture
def archives(tmp_path):
    """A folder source and the same as .tar.gz and .zip (one top folder inside, as archives usually have)."""
    source = make_folder_source(tmp_path / "shapes", count=5)
    served = tmp_path / "served"
    served.mkdir()
    with tarfile.open(served / "shapes.tar.gz", "w:gz") as bundle:
        bundle.add(source, arcname="shapes")
    shutil.make_archive(str(served / "shapes"), "zip", root_dir=tmp_path, base_dir="shapes")
    return source, served


@pytest.fixture
def http_root(archives):
    """The archives served over http on 127.0.0.1."""
    _, served = archives
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("archive", ["shapes.tar.gz", "shapes.zip"])
def test_local_and_http_archives_give_the_folders_data_set(archive, archives, http_root, tmp_path):
    source, served = archives
    reference = manifest_rows(prepare(source, tmp_path / "reference").root)
    local = prepare(served / archive, tmp_path / "local")
    remote = prepare(f"{http_root}/{archive}", tmp_path / "remote")
    assert manifest_rows(local.root) == reference == manifest_rows(remote.root)
    assert remote.info.name == "shapes"


def test_http_errors_and_unsafe_archives_are_refused(archives, http_root, tmp_path):
    _, served = archives
    with pytest.raises(DataValidationError, match="download failed.*404"):
        prepare(f"{http_root}/missing.zip", tmp_path / "out")
    with zipfile.ZipFile(served / "evil.zip", "w") as bundle:
        bundle.writestr("../../escaped.txt", "x")
    with pytest.raises(DataValidationError, match="outside the extraction folder"):
        prepare(f"{http_root}/evil.zip", tmp_path / "out")
    (served / "broken.tar.gz").write_bytes(b"not a tarball")
    with pytest.raises(DataValidationError, match="corrupt or unreadable archive"):
        prepare(served / "broken.tar.gz", tmp_path / "out")
    assert redact("https://user:secret@example.org/d.zip") == "https://***@example.org/d.zip"


@pytest.fixture
def s3_endpoint(monkeypatch):
    """A moto S3 server on 127.0.0.1 (skipped when moto[server] is not installed)."""
    moto_server = pytest.importorskip("moto.server")
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def test_s3_prefix_with_custom_endpoint(archives, s3_endpoint, tmp_path):
    import boto3

    source, _ = archives
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    client.create_bucket(Bucket="datasets")
    for path in sorted(source.rglob("*")):
        if path.is_file():
            client.upload_file(str(path), "datasets", f"team/shapes/{path.relative_to(source).as_posix()}")
    client.put_object(Bucket="datasets", Key="team/other/unrelated.txt", Body=b"x")
    reference = manifest_rows(prepare(source, tmp_path / "reference").root)
    prepared = prepare("s3://datasets/team/shapes", tmp_path / "out", f"data.s3_endpoint_url={s3_endpoint}")
    assert manifest_rows(prepared.root) == reference
    with pytest.raises(DataValidationError, match="no objects under this prefix"):
        prepare("s3://datasets/nothing/here", tmp_path / "none", f"data.s3_endpoint_url={s3_endpoint}")


def test_lakefs_ref_as_a_source(lakefs, repo_name, tmp_path):
    lakefs.ensure_repository(repo_name, default_branch="main")
    source = make_folder_source(tmp_path / "shapes", count=5)
    first = ingest_into(lakefs, repo_name, source, tmp_path / "w1")
    with pytest.raises(ValueError, match="a lakefs:// source is read with a lakeFS client"):
        prepare(first.uri, tmp_path / "no-client")  # the data layer never connects to lakeFS itself
    copied = ingest_into(lakefs, repo_name, first.uri, tmp_path / "w2", "lakefs.data_prefix=copy", "data.name=shapes")
    assert copied.changed and copied.info.splits == first.info.splits
    original = lakefs.download_prefix(repo_name, copied.commit_id, "data")
    copy = lakefs.download_prefix(repo_name, copied.commit_id, "copy")
    assert manifest_rows(original) == manifest_rows(copy)
    assert lakefs.get_commit(repo_name, copied.commit_id).metadata["source"] == first.uri
