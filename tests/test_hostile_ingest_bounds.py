"""Bounded work for hostile ingest input (issue 25): YAML alias bombs, archive bombs, downloads that never end,
COCO annotation and labelme shape floods, long file names, keys that are both a file and a folder, duplicate
archive members.

Resource cases run in a child process (`run_isolated`: peak RSS and wall time measured there, an address-space
guard) and are asserted with generous bounds; each is refused in one line naming the file or value.
"""

from __future__ import annotations

import http.server
import io
import json
import os
import re
import shutil
import tarfile
import tempfile
import threading
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from test_data_sources import ingest_into, make_folder_source, prepare, s3_endpoint  # noqa: F401  (s3_endpoint: a fixture)
from test_hostile_ingest import Case, check_isolated, refusal, run_isolated

from segmodels.data import DataValidationError, sources
from segmodels.data.classes import parse_classes
from segmodels.data.safe_yaml import AliasRefused, load_yaml
from segmodels.versioning import LakeFSError


@pytest.fixture
def private_tmp(tmp_path, monkeypatch) -> Path:
    """This test's own temporary-files folder (other processes' ingests leave theirs in the shared one)."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


# -- YAML: aliases refused, values clipped in messages ---------------------------------------------------------------


def alias_bomb(levels: int = 9) -> str:
    """A "billion laughs" class file: 9 strings, each level 9 aliases of the one below (9**levels strings)."""
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "\n".join([*lines, f"classes: [*a{levels - 1}]"]) + "\n"


def test_yaml_aliases_are_refused_before_expansion():
    assert len(alias_bomb()) < 450
    try:
        load_yaml(alias_bomb())
    except AliasRefused as error:
        assert str(error) == "YAML alias *a0 (line 2): aliases are not accepted"
    else:
        raise AssertionError("an alias was expanded")
    assert isinstance(AliasRefused("x"), yaml.YAMLError)
    assert load_yaml("classes: [a, b]\nanchored: &only 3\n") == {"classes": ["a", "b"], "anchored": 3}


def test_an_alias_bomb_class_file_is_refused_in_one_short_line(tmp_path):
    source = make_folder_source(tmp_path / "bomb", count=4)
    (source / "classes.yaml").write_text(alias_bomb())
    results = run_isolated(
        {"bomb": Case(source, "classes.yaml", ("aliases are not accepted",), summary=True)}, tmp_path
    )
    result = results["bomb"]
    reason = check_isolated(result, Case(source, "classes.yaml", ("aliases are not accepted",), summary=True))
    assert len(result["error"]) < 400, result["error"]  # was 355 MB: the expanded entries formatted whole
    assert result["rss_growth_mib"] < 200 and result["seconds"] < 30, result  # was 1.65 GB
    assert reason.startswith(f"{source / 'classes.yaml'}: unreadable class file (AliasRefused: YAML alias *a0")


def test_class_entries_are_clipped_in_messages(tmp_path):
    huge = {"colour": ["x" * 10_000] * 1000}
    for entries, start in [([huge], "class entry {'colour': ['xxx"), ([["y" * 10_000]], "class entry ['yyy")]:
        try:
            parse_classes(entries)
        except ValueError as error:
            message = str(error)
        assert message.startswith(start) and len(message) < 160, message[:300]
    source = make_folder_source(tmp_path / "long", count=4)
    (source / "classes.yaml").write_text(yaml.safe_dump({"classes": [["z" * 100_000]]}))
    message = str(refusal(source, tmp_path / "out"))
    assert "is neither a name nor a mapping" in message and len(message) < 400, message[:500]


def test_dataset_yaml_and_model_yaml_with_aliases_are_refused(tmp_path):
    """dataset.yaml and model.yaml come back from lakeFS branches others can write: read without aliases too."""
    from segmodels.data import DataValidationError, load_dataset_info
    from segmodels.models.package import load_spec

    (tmp_path / "dataset.yaml").write_text(alias_bomb().replace("classes: [", "ignore_index: 255\nclasses: ["))
    try:
        load_dataset_info(tmp_path)
    except DataValidationError as error:
        assert str(error) == f"{tmp_path / 'dataset.yaml'}: invalid YAML (AliasRefused)"
    else:
        raise AssertionError("dataset.yaml with aliases was read")
    (tmp_path / "model.yaml").write_text(alias_bomb().replace("classes:", "architecture:"))
    try:
        load_spec(tmp_path)
    except yaml.YAMLError as error:
        assert isinstance(error, AliasRefused)
    else:
        raise AssertionError("model.yaml with aliases was read")


# -- archives: duplicates refused, extraction bounded ----------------------------------------------------------------


def write_archive(path: Path, members: list[tuple[str, bytes]]) -> Path:
    """A zip or tar (any compression, by suffix) holding `members` as given, duplicates and odd paths included."""
    if path.name.endswith(".zip"):
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as bundle, warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # zipfile warns about the duplicate names we want
            for name, data in members:
                bundle.writestr(name, data)
        return path
    mode = {".gz": "w:gz", ".tgz": "w:gz", ".bz2": "w:bz2", ".xz": "w:xz"}.get(path.suffix, "w")
    with tarfile.open(path, mode) as bundle:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            bundle.addfile(info, io.BytesIO(data))
    return path


def source_members(source: Path, top: str) -> list[tuple[str, bytes]]:
    return [
        (f"{top}/{path.relative_to(source).as_posix()}", path.read_bytes())
        for path in sorted(source.rglob("*"))
        if path.is_file()
    ]


ARCHIVE_KINDS = ["zip", "tar", "tar.gz", "tgz", "tar.bz2", "tar.xz"]


@pytest.mark.parametrize("kind", ARCHIVE_KINDS)
def test_duplicate_archive_members_are_refused_with_a_report(kind, tmp_path, private_tmp):
    members = source_members(make_folder_source(tmp_path / "tiny", count=4), "tiny")
    masks = {name: data for name, data in members if "/masks/" in name}
    first, second = sorted(masks)[:2]
    members += [(first, masks[second]), (second.replace("tiny/masks/", "tiny/./masks//"), masks[first])]
    archive = write_archive(tmp_path / f"tiny.{kind}", members)
    error = refusal(archive, tmp_path / "out")
    assert str(error).startswith(
        f"{archive}: 2 archive member(s) present more than once, archive refused (first: "
        f"{archive}/{first}: duplicate archive member (2 copies: {first!r}, {first!r})"
    )
    assert [issue.file for issue in error.report.issues] == [f"{archive}/{first}", f"{archive}/{second}"]
    assert f"{second.replace('tiny/masks/', 'tiny/./masks//')!r}" in error.report.issues[1].reason
    assert not any(private_tmp.iterdir())


ZEROS = bytes(8 << 20)


def test_a_compression_bomb_is_refused_before_writing_its_bulk(tmp_path):
    """Members of zeros: 6 x 24 MiB here (6 x 400 MB in the issue: 2.4 GB written before any check), in every
    compressed kind (a plain tar is as large as what it holds: bounded by data.max_extracted_bytes, below)."""
    cases = {}
    for kind in ARCHIVE_KINDS[:1] + ARCHIVE_KINDS[2:]:
        archive = write_archive(tmp_path / f"bomb.{kind}", [(f"bomb/images/{i}.png", ZEROS * 3) for i in range(6)])
        cases[kind] = Case(archive, str(archive), ("data.max_compression_ratio=200 times its size",), summary=True)
    results = run_isolated(cases, tmp_path, timeout=120)
    for kind, case in cases.items():
        check_isolated(results[kind], case)
        assert results[kind]["error"].endswith("-P data.max_compression_ratio=<ratio> raises the limit"), results[kind]
        assert results[kind]["seconds"] < 30 and results[kind]["rss_growth_mib"] < 300, results[kind]


@pytest.mark.parametrize("kind", ARCHIVE_KINDS)
def test_extracted_bytes_are_capped(kind, tmp_path, private_tmp):
    archive = write_archive(tmp_path / f"big.{kind}", [(f"big/images/{i}.png", ZEROS) for i in range(6)])
    message = str(refusal(archive, tmp_path / "out", f"data.max_extracted_bytes={20 << 20}"))
    assert message == (
        f"{archive}: archive expands to more than data.max_extracted_bytes={20 << 20} bytes (at member "
        "'big/images/2.png'); -P data.max_extracted_bytes=<bytes> raises the limit"
    )
    assert not any(private_tmp.iterdir())


def test_extraction_counts_the_bytes_it_writes(tmp_path):
    """The budget holds while extracting, whatever the headers declared (here: checked with no declared sizes)."""
    archive = write_archive(tmp_path / "bomb.tar.gz", [(f"bomb/images/{i}.png", ZEROS) for i in range(12)])
    limits = sources.FetchLimits(max_extracted_bytes=20 << 20)
    budget = sources._Budget(str(archive), limits, archive.stat().st_size, tmp_path / "x")
    budget.check_declared = lambda files: None  # a header that lies: only the counting stays
    written = []
    real_copy = budget.copy

    def copy(stream, target, name):
        try:
            real_copy(stream, target, name)
        finally:
            written.append(target.stat().st_size)

    budget.copy = copy
    with (
        tarfile.open(archive) as bundle,
        pytest.raises(
            DataValidationError,
            match=r"archive expands to more than data.max_extracted_bytes="
            r"20971520 bytes \(at member 'bomb/images/2.png'\)",
        ),
    ):
        for member in bundle.getmembers():
            with bundle.extractfile(member) as stream:
                (tmp_path / "x").mkdir(exist_ok=True)
                budget.copy(stream, tmp_path / "x" / Path(member.name).name, member.name)
    assert sum(written) <= (20 << 20), written  # stopped before the chunk that would cross the limit


def test_extraction_limits_are_configurable(tmp_path):
    source = make_folder_source(tmp_path / "shapes", count=4)
    archive = write_archive(tmp_path / "shapes.zip", source_members(source, "shapes"))
    size = sum(path.stat().st_size for path in source.rglob("*") if path.is_file())
    message = str(refusal(archive, tmp_path / "out", f"data.max_extracted_bytes={size - 1}"))
    assert message.startswith(f"{archive}: archive expands to more than data.max_extracted_bytes={size - 1} bytes")
    assert prepare(archive, tmp_path / "ok", f"data.max_extracted_bytes={size}").stats.num_images == 4
    shutil.rmtree(tmp_path / "ok")
    with pytest.raises(DataValidationError, match=r"^data.max_compression_ratio=0.0: expected a positive number$"):
        prepare(archive, tmp_path / "out", "data.max_compression_ratio=0")


# -- downloads: a total time budget -----------------------------------------------------------------------------------


class TrickleHandler(http.server.BaseHTTPRequestHandler):
    """Serves ``/data.zip`` one byte every ``gap`` seconds, for ever (until the client hangs up)."""

    gap, with_length = 0.1, True

    def do_GET(self):  # noqa: N802 - the stdlib's name
        self.send_response(200)
        self.send_header(*(("Content-Length", str(1 << 30)) if self.with_length else ("Transfer-Encoding", "chunked")))
        self.end_headers()
        try:
            while True:
                self.wfile.write(b"P" if self.with_length else b"1\r\nP\r\n")
                self.wfile.flush()
                time.sleep(self.gap)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *args):
        pass


@pytest.fixture
def trickle_url(request):
    handler = type("Handler", (TrickleHandler,), {"with_length": request.param})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://user:s3cret@127.0.0.1:{server.server_address[1]}/data.zip"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("trickle_url", [True, False], ids=["content-length", "chunked"], indirect=True)
def test_a_trickling_download_stops_at_its_time_budget(trickle_url, tmp_path, private_tmp):
    started = time.monotonic()
    message = str(refusal(trickle_url, tmp_path / "out", "data.max_download_seconds=1.5"))
    elapsed = time.monotonic() - started
    shown = trickle_url.replace("user:s3cret", "***")
    assert re.fullmatch(
        re.escape(f"{shown}: download still running after data.max_download_seconds=1.5 (")
        + r"\d+"
        + re.escape(" bytes received); -P data.max_download_seconds=<seconds> raises the limit"),
        message,
    ), message
    assert "s3cret" not in message
    assert 1.5 <= elapsed < 20, elapsed  # was: for ever (a byte every 5 s never trips the 60 s read timeout)
    assert not any(private_tmp.iterdir())


def test_s3_keys_that_are_a_file_and_a_folder_are_refused(s3_endpoint, tmp_path, private_tmp):  # noqa: F811
    import boto3

    client = boto3.client("s3", endpoint_url=s3_endpoint)
    client.create_bucket(Bucket="datasets")
    source = make_folder_source(tmp_path / "shapes", count=4)
    for path in sorted(source.rglob("*")):
        if path.is_file():
            client.upload_file(str(path), "datasets", f"shapes/{path.relative_to(source).as_posix()}")
    client.put_object(Bucket="datasets", Key="shapes/images/img0.png/evil", Body=b"x")
    message = str(refusal("s3://datasets/shapes", tmp_path / "out", f"data.s3_endpoint_url={s3_endpoint}"))
    assert message == (
        "s3://datasets/shapes: object 'shapes/images/img0.png' is also the folder of "
        "'shapes/images/img0.png/evil'; both cannot be files: remove one of them"
    )
    assert not any(private_tmp.iterdir())


# -- odd names through the ingest step --------------------------------------------------------------------------------


@pytest.fixture
def step_env(lakefs, lakefs_settings, repo_name, tmp_path, monkeypatch, new_sqlite_store):
    """The ingest step's environment: lakeFS through LAKECTL_*, a sqlite MLflow store in tmp_path."""
    import mlflow

    monkeypatch.setenv("LAKECTL_SERVER_ENDPOINT_URL", lakefs_settings.endpoint)
    monkeypatch.setenv("LAKECTL_CREDENTIALS_ACCESS_KEY_ID", lakefs_settings.access_key_id)
    monkeypatch.setenv("LAKECTL_CREDENTIALS_SECRET_ACCESS_KEY", lakefs_settings.secret_access_key)
    lakefs.ensure_repository(repo_name, default_branch="main")
    mlflow.set_tracking_uri(new_sqlite_store(tmp_path / "mlflow.db"))
    mlflow.set_experiment(
        experiment_id=mlflow.create_experiment("bounds", artifact_location=(tmp_path / "mlartifacts").as_uri())
    )
    return lakefs


def run_ingest(source, repo: str, capsys, *args: str) -> tuple[int, str]:
    """The ingest step run as its script runs it: (exit status, what it printed)."""
    from segmodels.pipeline import run_step_cli

    status = 0
    try:
        run_step_cli("ingest", ["--source", str(source), "--repo", repo, *args])
    except SystemExit as exit_info:
        status = exit_info.code
    captured = capsys.readouterr()
    return status, captured.out + captured.err


LONG = "a" * 250  # a 254-byte file name with its extension
UNDECODABLE = os.fsdecode(b"\xff" * 120)  # 480 characters once escaped (\xff each)


@pytest.mark.parametrize("on_error", ["fail", "skip"])
def test_long_file_names_ingest(on_error, tmp_path, private_tmp):
    source = make_folder_source(tmp_path / "src", count=4)
    for old, new in (("img0", LONG), ("img1", UNDECODABLE)):
        for folder in ("images", "masks"):
            os.rename(source / folder / f"{old}.png", source / folder / f"{new}.png")
    prepared = prepare(source, tmp_path / "out", f"on_error={on_error}")
    names = sorted(path.name for path in (tmp_path / "out" / "images").rglob("*.png"))
    assert prepared.stats.num_images == 4 and not prepared.report
    assert f"{LONG}.png" in names  # was: OSError, the writer's temporary name .<name>.tmp over 255 bytes
    shortened = [name for name in names if name.startswith("\\xff")]
    assert len(shortened) == 1 and re.fullmatch(r"(\\xff){59}\\~[0-9a-f]{12}\.png", shortened[0]), shortened
    assert not any(private_tmp.iterdir())


def test_long_names_go_through_the_ingest_step(step_env, repo_name, tmp_path, capsys):
    source = make_folder_source(tmp_path / "src", count=4)
    for folder in ("images", "masks"):
        os.rename(source / folder / "img0.png", source / folder / f"{LONG}.png")
    status, printed = run_ingest(source, repo_name, capsys)
    assert status == 0, printed
    keys = [obj.path for obj in step_env.list_objects(repo_name, "main", "data/")]
    assert sum(key.endswith(f"/{LONG}.png") for key in keys) == 2, keys


def test_a_lakefs_key_that_is_a_file_and_a_folder_is_refused_naming_both(
    step_env, repo_name, tmp_path, capsys, private_tmp
):
    ingest_into(step_env, repo_name, make_folder_source(tmp_path / "src", count=4), tmp_path / "w1")
    evil = tmp_path / "evil"
    evil.write_bytes(b"x")
    image = next(obj.path for obj in step_env.list_objects(repo_name, "main", "data/images/"))
    step_env.upload_file(repo_name, "main", f"{image}/evil", evil)
    commit = step_env.commit(repo_name, "main", "a key below a file").id
    status, printed = run_ingest(
        f"lakefs://{repo_name}/{commit}/data", repo_name, capsys, "--lakefs.data_prefix", "copy"
    )
    errors = [line for line in printed.splitlines() if "error:" in line]
    assert status == 2 and len(errors) == 1 and "Traceback" not in printed, printed
    assert errors[0].endswith(
        f"object {image!r} is also the folder of {image + '/evil'!r}; both cannot be files: delete one of them"
    ), errors[0]  # was: IsADirectoryError traceback
    assert step_env.resolve_commit(repo_name, "main") == commit  # nothing committed
    assert not any(private_tmp.iterdir())
    with pytest.raises(LakeFSError, match="is also the folder of"):  # train's download: the same refusal
        step_env.download_prefix(repo_name, commit, "data")


# -- COCO annotation floods: each annotation drawn within its box, the work of one image bounded -------------------


def rectangle_runs(left: int, top: int, right: int, bottom: int, height: int, width: int) -> list[int]:
    """Uncompressed COCO RLE (column-major run lengths, from 0s) of a filled rectangle."""
    counts, position = [], 0
    for column in range(left, right):
        start = column * height + top
        counts += [start - position, bottom - top]
        position = start + bottom - top
    return counts + [height * width - position]


def coco_flood(root: Path, images: int, size: int, per_image: int) -> Path:
    """`images` black size x size images with `per_image` small objects each: triangles, 1 in 10 an RLE."""
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    document = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}
    for image_id in range(1, images + 1):
        Image.new("RGB", (size, size)).save(root / "images" / f"{image_id}.png")
        document["images"].append({"id": image_id, "file_name": f"{image_id}.png", "width": size, "height": size})
        corners, sides = rng.integers(0, size - 40, (per_image, 2)), rng.integers(3, 40, (per_image, 2))
        for index, ((x, y), (w, h)) in enumerate(zip(corners.tolist(), sides.tolist())):
            if index % 10 == 9:
                counts = rectangle_runs(x, y, x + w, y + h, size, size)
                compressed = mask_utils.frPyObjects({"size": [size, size], "counts": counts}, size, size)["counts"]
                segmentation = {"size": [size, size], "counts": compressed.decode() if index % 20 == 9 else counts}
            else:
                segmentation = [[x, y, x + w, y + h * 0.4, x + w * 0.6, y + h]]
            document["annotations"].append(
                {
                    "id": len(document["annotations"]) + 1,
                    "image_id": image_id,
                    "category_id": 1 + index % 2,
                    "segmentation": segmentation,
                }
            )
    (root / "annotations.json").write_text(json.dumps(document))
    return root


@pytest.mark.slow  # a scale test (20k annotations on 1-2k px images in child processes); the refusals below are fast
def test_a_coco_annotation_flood_costs_its_objects_not_their_images(tmp_path):
    """The issue's case: 2 images of 1024x1024 with 20k annotations each took 104 s (92 s here, before), each
    annotation drawn as a whole-image mask; drawn within their boxes they take 2 s (pycocotools) and 1.4 s (pil)."""
    source = coco_flood(tmp_path / "flood", images=2, size=1024, per_image=20_000)
    overrides = ("data=coco",)
    results = run_isolated(
        {
            "pycocotools": Case(source, "", (), overrides),
            "pil": Case(source, "", (), overrides + ("data.options.polygons=pil",)),
        },
        tmp_path,
        timeout=120,
    )
    assert set(results) == {"pycocotools", "pil"}, results
    for result in results.values():
        assert result["type"] is None, result
        assert result["seconds"] < 20 and result["rss_growth_mib"] < 500, result


def test_coco_images_with_too_many_annotations_are_refused_naming_them(tmp_path, monkeypatch):
    from segmodels.data.formats import coco

    monkeypatch.setattr(coco, "MAX_ANNOTATIONS_PER_IMAGE", 30)
    source = coco_flood(tmp_path / "flood", images=2, size=64, per_image=31)
    error = refusal(source, tmp_path / "out", "data=coco")
    reasons = {issue.file.rsplit("/", 1)[-1]: issue.reason for issue in error.report.issues}
    assert reasons == {
        f"annotations.json#image_id={i}": "31 annotations, more than the 30 one image may have" for i in (1, 2)
    }, reasons


def test_coco_annotations_covering_an_image_hundreds_of_times_are_refused(tmp_path):
    """Whole-image objects: each costs the image's pixels; past MAX_PAINTED_LAYERS times over, one line."""
    from segmodels.data.formats.coco import MAX_PAINTED_LAYERS

    source = coco_flood(tmp_path / "flood", images=1, size=64, per_image=1)
    whole = [[0, 0, 64, 0, 64, 64, 0, 64]]
    document = json.loads((source / "annotations.json").read_text())
    document["annotations"] = [
        {"id": i, "image_id": 1, "category_id": 1, "segmentation": whole} for i in range(1, MAX_PAINTED_LAYERS + 2)
    ]
    (source / "annotations.json").write_text(json.dumps(document))
    error = refusal(source, tmp_path / "out", "data=coco")
    [issue] = error.report.issues
    assert issue.file.endswith("annotations.json#image_id=1")
    assert issue.reason == (
        f"bad annotation: annotation {MAX_PAINTED_LAYERS + 1}: the annotations' boxes so far "
        f"cover the 64x64 image more than {MAX_PAINTED_LAYERS} times over (refused as a flood)"
    )
    small = {"id": 0, "image_id": 1, "category_id": 2, "segmentation": [[2, 2, 9, 2, 2, 9]]}
    document["annotations"] = document["annotations"][: MAX_PAINTED_LAYERS - 10] + [small]  # fewer: ingested
    (source / "annotations.json").write_text(json.dumps(document))
    assert prepare(source, tmp_path / "fewer", "data=coco").info.class_names == ["_background_", "a", "b"]


def test_a_coco_polygon_zigzagging_far_off_the_image_is_refused_before_drawing(tmp_path):
    """20k vertices from x=-4000 to x=4000 on a 1024x1024 image (160 kB of JSON): pycocotools walks 5 points a
    pixel of outline, 6.4 GB (2000 vertices took 0.7 s and 684 MB). Refused from its length, in one line."""
    source = coco_flood(tmp_path / "flood", images=1, size=1024, per_image=1)
    zigzag = [value for i in range(20_000) for value in (-4000 if i % 2 else 4000, i * 7 % 1024)]
    document = json.loads((source / "annotations.json").read_text())
    document["annotations"][0]["segmentation"] = [zigzag]
    (source / "annotations.json").write_text(json.dumps(document))
    case = Case(
        source,
        "annotations.json#image_id=1",
        ("annotation 1: polygons 160000000 pixels long, more than 64 times the 1024x1024 image's height + width",),
    )
    [result] = run_isolated({"zigzag": case}, tmp_path, timeout=60).values()
    check_isolated(result, case)
    assert result["seconds"] < 10 and result["rss_growth_mib"] < 300, result


# -- labelme shape floods: each shape drawn within its box, the work of one file bounded -----------------------------


def labelme_flood(root: Path, files: int, size: int, shapes: int) -> Path:
    """`files` labelme JSONs, each beside a black size x size image, with `shapes` small shapes of every drawn type."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    for number in range(files):
        Image.new("RGB", (size, size)).save(root / f"{number}.png")
        corners, sides = rng.integers(0, size - 40, (shapes, 2)).tolist(), rng.integers(3, 40, (shapes, 2)).tolist()
        entries = []
        for index, ((x, y), (w, h)) in enumerate(zip(corners, sides)):
            kind, points = [
                ("polygon", [[x, y], [x + w, y + h * 0.4], [x + w * 0.6, y + h]]),
                ("rectangle", [[x, y], [x + w, y + h]]),
                ("circle", [[x + 20, y + 20], [x + 20, y + h / 2]]),
                ("linestrip", [[x, y], [x + w, y], [x + w, y + h]]),
                ("point", [[x, y]]),
            ][index % 5]
            entries.append({"label": "ab"[index % 2], "points": points, "shape_type": kind})
        document = {"shapes": entries, "imagePath": f"{number}.png", "imageHeight": size, "imageWidth": size}
        (root / f"{number}.json").write_text(json.dumps(document))
    return root


@pytest.mark.slow  # a scale test (20k annotations on 1-2k px images in child processes); the refusals below are fast
def test_a_labelme_shape_flood_costs_its_shapes_not_their_images(tmp_path):
    """A 2048x2048 file with 20k shapes: each drawn as a whole-image mask, its drawing alone took 16.5 s here
    (3.5 s at 1024x1024: the cost grew with shapes x pixels); drawn within their boxes, 0.6 s, the whole ingest 2 s."""
    source = labelme_flood(tmp_path / "flood", files=1, size=2048, shapes=20_000)
    results = run_isolated({"flood": Case(source, "", ())}, tmp_path, timeout=120)
    assert results["flood"]["type"] is None, results
    assert results["flood"]["seconds"] < 10 and results["flood"]["rss_growth_mib"] < 500, results


def test_labelme_files_with_too_many_shapes_are_refused_naming_them(tmp_path, monkeypatch):
    from segmodels.data.formats import labelme

    monkeypatch.setattr(labelme, "MAX_SHAPES_PER_FILE", 30)
    source = labelme_flood(tmp_path / "flood", files=3, size=64, shapes=30)
    document = json.loads((source / "1.json").read_text())
    document["shapes"].append(document["shapes"][0])
    (source / "1.json").write_text(json.dumps(document))
    error = refusal(source, tmp_path / "out")
    assert [(issue.file.rsplit("/", 1)[-1], issue.reason) for issue in error.report.issues] == [
        ("1.json", "bad annotation: 31 shapes, more than the 30 one file may have")
    ]


def test_labelme_shapes_covering_an_image_hundreds_of_times_are_refused(tmp_path):
    """Whole-image rectangles: each costs the image's pixels; past MAX_PAINTED_LAYERS times over, one line."""
    from segmodels.data.formats.labelme import MAX_PAINTED_LAYERS

    source = labelme_flood(tmp_path / "flood", files=1, size=64, shapes=1)
    document = json.loads((source / "0.json").read_text())
    document["shapes"] = [{"label": "a", "points": [[0, 0], [63, 63]], "shape_type": "rectangle"}] * MAX_PAINTED_LAYERS
    document["shapes"].append({"label": "b", "points": [[-9, -9], [30, 70]], "shape_type": "rectangle"})
    (source / "0.json").write_text(json.dumps(document))
    error = refusal(source, tmp_path / "out")
    [issue] = error.report.issues
    assert issue.file.endswith("0.json")
    assert issue.reason == (
        f"bad annotation: shapes[{MAX_PAINTED_LAYERS}]: the shapes' boxes so far cover the "
        f"64x64 image more than {MAX_PAINTED_LAYERS} times over (refused as a flood)"
    )
    document["shapes"] = document["shapes"][MAX_PAINTED_LAYERS - 10 :]  # fewer: ingested, the last shape on top
    (source / "0.json").write_text(json.dumps(document))
    prepared = prepare(source, tmp_path / "fewer", "data.val_fraction=0", "data.test_fraction=0")
    assert prepared.info.class_names == ["_background_", "a", "b"]
    mask = np.asarray(Image.open(next((prepared.root / "masks").rglob("0.png"))))
    assert (mask[:, :31] == 2).all() and (mask[:, 31:] == 1).all()


@pytest.mark.parametrize("shape_type", ["polygon", "linestrip"])
def test_a_labelme_outline_far_longer_than_its_image_is_refused(tmp_path, shape_type):
    """20k points zigzagging from x=-250 to 250 on a 64x64 image: 10M pixels of outline, refused before drawing."""
    source = labelme_flood(tmp_path / "flood", files=1, size=64, shapes=1)
    document = json.loads((source / "0.json").read_text())
    zigzag = [[250 if index % 2 else -250, index % 64] for index in range(20_000)]
    document["shapes"].append({"label": "a" * 500, "points": zigzag, "shape_type": shape_type})
    (source / "0.json").write_text(json.dumps(document))
    error = refusal(source, tmp_path / "out")
    [issue] = error.report.issues
    assert issue.file.endswith("0.json") and len(issue.reason) < 300, issue.reason
    assert issue.reason.startswith(f"bad annotation: shapes[1]: {shape_type} 'aaaa")
    length = 20_000 * 500 if shape_type == "polygon" else 19_999 * 500  # a polygon closes its outline
    assert issue.reason.endswith(
        f"... is {length} pixels long, more than 64 times the 64x64 image's height + width (refused as a flood)"
    )
