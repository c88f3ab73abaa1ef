"""Hostile and broken input to ingest: every case is refused with a one-line reason naming the file, without
hanging, without reading outside the source, without decoding (or allocating) oversized images, and without
leaving a half-written layout behind.

Cases that could hang (FIFOs, /dev/zero) or exhaust memory (decompression bombs) on a regression run in a child
process with a timeout and an address-space limit, so that a regression fails the test instead of the machine.
"""

from __future__ import annotations

import base64
import http.server
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import threading
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_data_sources import (  # noqa: F401  (archives, http_root: fixtures)
    archives,
    http_root,
    make_coco_source,
    make_folder_source,
    make_labelme_source,
    make_voc_source,
    noise_image,
    prepare,
)

from segmodels.data import DataValidationError, sources
from segmodels.data.formats.base import open_image
from segmodels.data.sources import redact
from segmodels.data.splits import assign_splits

PROJECT = Path(__file__).resolve().parents[1]
BIG = 12000  # 144 Mpx: above Pillow's MAX_IMAGE_PIXELS (89.5 Mpx), a few hundred KB as PNG
PILLOW_LIMIT = Image.MAX_IMAGE_PIXELS


# -- checks shared by every case -----------------------------------------------------------------------------------


def assert_one_line_message(text: str) -> None:
    """A message the user can read: no traceback, no Python object reprs, every line printable UTF-8."""
    assert "Traceback" not in text and "<_io.BytesIO" not in text and " object at 0x" not in text, text
    text.encode("utf-8")  # no surrogates (undecodable file-name bytes) left in
    assert all(line.isprintable() for line in text.splitlines()), text


@pytest.fixture(autouse=True)
def no_layout_left_by_a_refusal(tmp_path):
    """The refusals here write to tmp_path / "out": a refused source must leave no (half-written) layout there."""
    yield
    assert not (tmp_path / "out").exists(), "a refused source must leave no (half-written) layout"


def refusal(source, out: Path, *overrides: str) -> DataValidationError:
    """prepare() refusing `source`: the error, checked to be readable (the output folder: see the fixture above)."""
    with pytest.raises(DataValidationError) as caught:
        prepare(source, out, *overrides)
    assert_one_line_message(str(caught.value))
    return caught.value


def issue_for(error: DataValidationError, file_end: str):
    """The reason given for the one reported file ending in `file_end`."""
    matches = [issue for issue in error.report.issues if issue.file.endswith(file_end)]
    assert len(matches) == 1, (file_end, error.report.to_text())
    return matches[0].reason


def assert_refused(source, out: Path, file_end: str, *reason_parts: str, overrides=()) -> str:
    """prepare() refuses `source`, naming the file ending in `file_end` with a reason holding `reason_parts`
    (the file and the reason also in the error's text, as the ingest step prints it)."""
    error = refusal(source, out, *overrides)
    reason = issue_for(error, file_end)
    for part in reason_parts:
        assert part in reason, (part, reason)
    assert file_end in str(error) and reason in str(error)
    return reason


# -- running cases in a child process (hangs and memory bounded) ---------------------------------------------------

RUNNER = r"""
import json, os, resource, sys, time

from segmodels.config import load_config
from segmodels.data import DataValidationError, prepare_dataset

GUARD = 1536 << 20  # address space one case may add: a regression fails with MemoryError, not the machine


def address_space():
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


for name, source, out, overrides in json.loads(sys.argv[1]):
    cfg = load_config("ingest", overrides)
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (address_space() + GUARD, hard))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.monotonic()
    result = {"name": name, "type": None, "error": None, "issues": []}
    try:
        prepare_dataset(source, out, cfg.data, on_error=cfg.on_error, split_seed=cfg.split_seed)
    except DataValidationError as error:
        issues = [[i.file, i.reason] for i in error.report.issues]
        result.update(type="DataValidationError", error=str(error), issues=issues)
    except BaseException as error:  # a regression: reported, the next case still runs
        result.update(type=type(error).__name__, error=str(error))
    result["seconds"] = time.monotonic() - start
    result["rss_growth_mib"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    result["out_exists"] = os.path.exists(out)
    resource.setrlimit(resource.RLIMIT_AS, (hard, hard))
    print(json.dumps(result), flush=True)
"""


@dataclass
class Case:
    source: Path
    file_end: str  # the reported file ends so
    reason_parts: tuple[str, ...]
    overrides: tuple[str, ...] = ()
    summary: bool = False  # the reason is the error's own message (a whole-source refusal), not a report line
    extra: dict = field(default_factory=dict)


def run_isolated(cases: dict[str, Case], base: Path, timeout: float = 30) -> dict[str, dict]:
    """Run prepare on each case in one child process (timeout, address-space guard); name -> result."""
    payload = [
        [name, str(case.source), str(base / f"{name}-out"), list(case.overrides)] for name, case in cases.items()
    ]
    try:
        completed = subprocess.run(
            [sys.executable, "-c", RUNNER, json.dumps(payload)],
            cwd=PROJECT,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as expired:
        pytest.fail(f"ingest hung (no answer in {timeout}s); finished before: {expired.stdout!r}")
    assert completed.returncode == 0, completed.stderr
    results = {}
    for line in completed.stdout.splitlines():
        if line.startswith("{"):
            result = json.loads(line)
            results[result["name"]] = result
    return results


def check_isolated(result: dict, case: Case) -> str:
    """The result of a case refused as expected; returns the reason."""
    assert result["type"] == "DataValidationError", result
    assert_one_line_message(result["error"])
    if case.summary:
        reason = result["error"].splitlines()[0]
        assert case.file_end in reason, (case.file_end, reason)
    else:
        matches = [reason for file, reason in result["issues"] if file.endswith(case.file_end)]
        assert len(matches) == 1, (case.file_end, result["issues"])
        reason = matches[0]
    for part in case.reason_parts:
        assert part in reason, (part, reason)
    assert not result["out_exists"], "a refused source must leave no (half-written) layout"
    return reason


# -- only regular files are read -------------------------------------------------------------------------------------


def _fifo_image(root: Path) -> Case:
    source = make_folder_source(root / "src", count=3)
    (source / "images" / "img1.png").unlink()
    os.mkfifo(source / "images" / "img1.png")
    return Case(source, "images/img1.png", ("image refused", "not a regular file (a FIFO)"))


def _fifo_mask(root: Path) -> Case:
    source = make_folder_source(root / "src", count=3)
    (source / "masks" / "img2.png").unlink()
    os.mkfifo(source / "masks" / "img2.png")
    return Case(source, "masks/img2.png", ("mask refused", "not a regular file (a FIFO)"))


def _fifo_labelme_json(root: Path) -> Case:
    source, _ = make_labelme_source(root / "src")
    os.mkfifo(source / "photo9.json")
    return Case(source, "photo9.json", ("not a regular file (a FIFO)",))


def _fifo_labelme_image(root: Path) -> Case:
    source, _ = make_labelme_source(root / "src")
    (source / "photo1.jpg").unlink()
    os.mkfifo(source / "photo1.jpg")
    return Case(
        source, "photo1.json (image)", ("image refused", "imagePath 'photo1.jpg'", "not a regular file (a FIFO)")
    )


def _fifo_coco_image(root: Path) -> Case:
    source, _ = make_coco_source(root / "src")
    (source / "val2017" / "000000000002.jpg").unlink()
    os.mkfifo(source / "val2017" / "000000000002.jpg")
    return Case(source, "val2017/000000000002.jpg", ("image refused", "not a regular file (a FIFO)"))


def _fifo_coco_json(root: Path) -> Case:
    source, _ = make_coco_source(root / "src")
    os.mkfifo(source / "annotations" / "instances_train2017.json")
    return Case(source, "instances_train2017.json", ("not a regular file (a FIFO)",))


def _fifo_voc_split_list(root: Path) -> Case:
    source, _ = make_voc_source(root / "src")
    split_list = next(source.rglob("ImageSets/Segmentation/train.txt"))
    split_list.unlink()
    os.mkfifo(split_list)
    return Case(source, "train.txt: unreadable split list (not a regular file (a FIFO))", (), summary=True)


def _dev_zero_symlink(root: Path) -> Case:
    source = make_folder_source(root / "src", count=3)
    (source / "images" / "img1.png").unlink()
    (source / "images" / "img1.png").symlink_to("/dev/zero")
    return Case(source, "images/img1.png", ("image refused", "symlink to /dev/zero", "outside the source root"))


def _dev_zero_symlink_followed(root: Path) -> Case:
    case = _dev_zero_symlink(root)
    return Case(
        case.source,
        "images/img1.png",
        ("image refused", "not a regular file (a character device)"),
        overrides=("data.follow_external_symlinks=true",),
    )


def _unix_socket(root: Path) -> Case:
    import socket

    source = make_folder_source(root / "src", count=3)
    (source / "masks" / "img0.png").unlink()
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(source / "masks" / "img0.png"))  # left bound: a socket file nobody answers on
    return Case(source, "masks/img0.png", ("mask refused", "not a regular file (a socket)"), extra={"socket": server})


NON_REGULAR = {
    "fifo_image": _fifo_image,
    "fifo_mask": _fifo_mask,
    "fifo_labelme_json": _fifo_labelme_json,
    "fifo_labelme_image": _fifo_labelme_image,
    "fifo_coco_image": _fifo_coco_image,
    "fifo_coco_json": _fifo_coco_json,
    "fifo_voc_split_list": _fifo_voc_split_list,
    "dev_zero_symlink": _dev_zero_symlink,
    "dev_zero_symlink_followed": _dev_zero_symlink_followed,
    "unix_socket": _unix_socket,
}


@pytest.fixture(scope="module")
def non_regular(tmp_path_factory):
    base = tmp_path_factory.mktemp("non-regular")
    cases = {}
    for name, build in NON_REGULAR.items():
        if len(str(base / name / "src" / "masks" / "img0.png")) > 100 and name == "unix_socket":
            continue  # a socket path must be short; skipped where the temp folder is deep
        cases[name] = build(base / name)
    results = run_isolated(cases, base)
    yield cases, results
    for case in cases.values():
        if "socket" in case.extra:
            case.extra["socket"].close()


@pytest.mark.parametrize("name", sorted(NON_REGULAR))
def test_non_regular_files_are_refused_without_being_opened(name, non_regular):
    cases, results = non_regular
    if name not in cases:
        pytest.skip("temp folder too deep for a unix socket path")
    check_isolated(results[name], cases[name])
    assert results[name]["seconds"] < 15


def test_bytes_read_per_file_are_capped(tmp_path):
    source = make_folder_source(tmp_path / "src", count=3)
    padded = source / "images" / "img1.png"
    padded.write_bytes(padded.read_bytes() + bytes(20000))  # still a valid PNG, now over the cap
    assert_refused(
        source,
        tmp_path / "out",
        "images/img1.png",
        "image refused",
        f"file of {padded.stat().st_size} bytes, above data.max_file_bytes=8000",
        overrides=("data.max_file_bytes=8000",),
    )
    assert prepare(source, tmp_path / "ok", "data.max_file_bytes=1000000").stats.num_images == 3


@pytest.mark.skipif(not Path("/proc/self/maps").is_file(), reason="no /proc")
def test_reading_stops_at_the_cap_whatever_size_a_file_claims(tmp_path):
    """/proc files claim 0 bytes: the cap holds while reading, not only by stat."""
    source = make_folder_source(tmp_path / "src", count=3)
    (source / "images" / "img1.png").unlink()
    (source / "images" / "img1.png").symlink_to("/proc/self/maps")
    assert_refused(
        source,
        tmp_path / "out",
        "images/img1.png",
        "file larger than data.max_file_bytes=8000",
        overrides=("data.max_file_bytes=8000", "data.follow_external_symlinks=true"),
    )


def test_max_file_bytes_must_be_positive(tmp_path):
    source = make_folder_source(tmp_path / "src", count=2)
    with pytest.raises(DataValidationError, match="data.max_file_bytes=0: expected a positive whole number"):
        prepare(source, tmp_path / "out", "data.max_file_bytes=0")


# -- nothing from outside the source ---------------------------------------------------------------------------------


@pytest.fixture
def host_files(tmp_path) -> Path:
    """Images elsewhere on the host, which a source must not be able to pull in (valid, so the old code took them)."""
    host = tmp_path / "host"
    host.mkdir()
    rng = np.random.default_rng(9)
    noise_image(rng, 36, 28).save(host / "secret.png")
    noise_image(rng, 40, 32).save(host / "secret.jpg")
    noise_image(rng, 24, 20).save(host / "secret24.png")
    (host / "names.txt").write_text("__ignore__\n_background_\ncat\ndog\n")
    return host


def _labelme_with_image_path(source: Path, image_path: str) -> None:
    document = json.loads((source / "photo1.json").read_text())
    document.update(imagePath=image_path, imageData=None)
    (source / "photo1.json").write_text(json.dumps(document))
    (source / "photo1.jpg").unlink()


def test_labelme_absolute_image_path_is_refused(tmp_path, host_files):
    source, _ = make_labelme_source(tmp_path / "src")
    _labelme_with_image_path(source, str(host_files / "secret.png"))
    assert_refused(
        source,
        tmp_path / "out",
        "photo1.json (image)",
        "image refused",
        f"imagePath '{host_files / 'secret.png'}'",
        "outside the source root",
    )


def test_labelme_dotdot_image_path_is_refused(tmp_path, host_files):
    source, _ = make_labelme_source(tmp_path / "src")
    _labelme_with_image_path(source, "../host/secret.png")
    assert_refused(
        source, tmp_path / "out", "photo1.json (image)", "imagePath '../host/secret.png'", "outside the source root"
    )


def edit_coco_document(source: Path, change) -> Path:
    """Apply ``change(document)`` to the source's COCO annotation file; returns the file's path."""
    path = source / "annotations" / "instances_val2017.json"
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document))
    return path


def _coco_with_file_name(source: Path, file_name: str) -> None:
    edit_coco_document(source, lambda document: document["images"][1].update(file_name=file_name))
    (source / "val2017" / "000000000002.jpg").unlink()


def test_coco_absolute_file_name_is_refused(tmp_path, host_files):
    source, _ = make_coco_source(tmp_path / "src")
    _coco_with_file_name(source, str(host_files / "secret.jpg"))
    assert_refused(source, tmp_path / "out", "host/secret.jpg", "image refused", "outside the source root")


def test_coco_dotdot_file_name_is_refused(tmp_path, host_files):
    source, _ = make_coco_source(tmp_path / "src")
    _coco_with_file_name(source, "../host/secret.jpg")
    assert_refused(source, tmp_path / "out", "secret.jpg", "image refused", "outside the source root")


def test_symlink_out_of_the_source_is_refused_unless_allowed(tmp_path, host_files):
    source = make_folder_source(tmp_path / "src", count=3)
    (source / "images" / "img1.png").unlink()
    (source / "images" / "img1.png").symlink_to(host_files / "secret24.png")
    assert_refused(
        source,
        tmp_path / "out",
        "images/img1.png",
        "image refused",
        f"symlink to {host_files / 'secret24.png'}",
        "data.follow_external_symlinks=true",
    )
    allowed = prepare(source, tmp_path / "allowed", "data.follow_external_symlinks=true")
    assert allowed.stats.num_images == 3


def test_symlinked_folder_out_of_the_source_is_refused(tmp_path, host_files):
    source = make_folder_source(tmp_path / "src", count=3)
    shutil.rmtree(source / "masks")
    elsewhere = tmp_path / "elsewhere-masks"
    shutil.copytree(make_folder_source(tmp_path / "other", count=3) / "masks", elsewhere)
    (source / "masks").symlink_to(elsewhere, target_is_directory=True)
    error = refusal(source, tmp_path / "out")
    assert len(error.report) == 3 and all("outside the source root" in issue.reason for issue in error.report.issues)


def test_symlink_inside_the_source_is_read(tmp_path):
    source = make_folder_source(tmp_path / "src", count=3)
    (source / "shared").mkdir()
    (source / "images" / "img1.png").rename(source / "shared" / "img1.png")
    (source / "images" / "img1.png").symlink_to("../shared/img1.png")
    assert prepare(source, tmp_path / "ok").stats.num_images == 3


def test_class_file_symlinked_out_of_the_source_is_refused(tmp_path, host_files):
    source, _ = make_labelme_source(tmp_path / "src")
    (source / "labels.txt").unlink()
    (source / "labels.txt").symlink_to(host_files / "names.txt")
    error = refusal(source, tmp_path / "out")
    assert "labels.txt: class file refused (symlink to" in error.summary and "outside the source root" in error.summary


def test_folder_class_file_symlinked_out_of_the_source_is_refused(tmp_path, host_files):
    source = make_folder_source(tmp_path / "src", count=3)
    (source / "classes.txt").unlink()
    (source / "classes.txt").symlink_to(host_files / "names.txt")
    error = refusal(source, tmp_path / "out")
    assert "classes.txt: class file refused (symlink to" in error.summary


def test_voc_list_entries_must_be_plain_names(tmp_path):
    source, _ = make_voc_source(tmp_path / "src")
    split_list = next(source.rglob("ImageSets/Segmentation/train.txt"))
    split_list.write_text(split_list.read_text() + "../../../host/secret\n")
    assert_refused(
        source, tmp_path / "out", "train.txt:4", "list entry '../../../host/secret' is not a plain image name"
    )


def test_archive_links_out_of_it_are_refused(tmp_path):
    archive = tmp_path / "linked.tar.gz"
    with tarfile.open(archive, "w:gz") as bundle:
        bundle.add(make_folder_source(tmp_path / "shapes", count=2), arcname="shapes")
        link = tarfile.TarInfo("shapes/images/img9.png")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        bundle.addfile(link)
    error = refusal(archive, tmp_path / "out")
    assert error.summary.startswith(f"{archive}: archive member refused (") and "img9.png" in error.summary


def test_archive_fifo_members_are_refused(tmp_path):
    archive = tmp_path / "fifo.tar"
    with tarfile.open(archive, "w") as bundle:
        bundle.add(make_folder_source(tmp_path / "shapes", count=2), arcname="shapes")
        fifo = tarfile.TarInfo("shapes/images/img9.png")
        fifo.type = tarfile.FIFOTYPE
        bundle.addfile(fifo)
    error = refusal(archive, tmp_path / "out")
    assert error.summary.startswith(f"{archive}: archive member refused (") and "img9.png" in error.summary


def test_archive_members_above_the_byte_cap_are_refused_before_extraction(tmp_path):
    source = make_folder_source(tmp_path / "shapes", count=2)
    (source / "padding.bin").write_bytes(bytes(20000))
    shutil.make_archive(str(tmp_path / "shapes"), "zip", root_dir=tmp_path, base_dir="shapes")
    error = refusal(tmp_path / "shapes.zip", tmp_path / "out", "data.max_file_bytes=8000")
    assert "member 'shapes/padding.bin' of 20000 bytes is above data.max_file_bytes=8000" in error.summary


# -- archive errors name the URL as given, credentials removed -----------------------------------------------------


def test_corrupt_archive_error_names_the_url_without_credentials(archives, http_root, tmp_path):
    _, served = archives
    (served / "broken.zip").write_bytes(b"PK not really a zip")
    url = http_root.replace("http://", "http://user:secret@") + "/broken.zip"
    error = refusal(url, tmp_path / "out")
    assert error.summary.startswith(f"{redact(url)}: corrupt or unreadable archive"), error.summary
    assert "127.0.0.1" in redact(url) and "broken.zip" in redact(url)
    assert "secret" not in str(error) and "segmodels-source-" not in str(error)


def test_unsafe_archive_error_names_the_url_without_credentials(archives, http_root, tmp_path):
    _, served = archives
    with zipfile.ZipFile(served / "evil.zip", "w") as bundle:
        bundle.writestr("../../escaped.txt", "x")
    url = http_root.replace("http://", "http://user:secret@") + "/evil.zip"
    error = refusal(url, tmp_path / "out")
    assert error.summary.startswith(f"{redact(url)}: member '../../escaped.txt' would be written outside"), (
        error.summary
    )
    assert "secret" not in str(error) and "segmodels-source-" not in str(error)


def test_files_inside_an_archive_are_named_by_the_archive_not_the_temp_folder(archives, http_root, tmp_path):
    _, served = archives
    source = make_folder_source(tmp_path / "bad" / "shapes", count=3)
    (source / "images" / "img1.png").write_bytes(b"garbage")
    with tarfile.open(served / "bad.tar.gz", "w:gz") as bundle:
        bundle.add(source, arcname="shapes")
    url = http_root.replace("http://", "http://user:secret@") + "/bad.tar.gz"
    error = refusal(url, tmp_path / "out")
    [issue] = error.report.issues
    assert issue.file == f"{redact(url)}/shapes/images/img1.png" and "corrupt or unreadable image" in issue.reason
    assert "segmodels-source-" not in str(error) and "secret" not in str(error)


# -- bounded memory before decoding ----------------------------------------------------------------------------------


def write_blank_png(path: Path, width: int, height: int) -> Path:
    """A valid black RGB PNG of width x height, compressed row by row (never held decoded in memory)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compressor, row, idat = zlib.compressobj(1), bytes(1 + 3 * width), bytearray()
    for _ in range(height):
        idat += compressor.compress(row)
    idat += compressor.flush()
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", bytes(idat))
        + chunk(b"IEND", b"")
    )
    return path


def _big_image(root: Path, big: Path) -> Case:
    source = make_folder_source(root / "src", count=2)
    shutil.copy(big, source / "images" / "img1.png")
    return Case(
        source,
        "images/img1.png",
        (f"image of {BIG}x{BIG} = {BIG * BIG} pixels", f"above data.max_image_pixels={PILLOW_LIMIT}"),
    )


def _big_mask(root: Path, big: Path) -> Case:
    source = make_folder_source(root / "src", count=2)
    shutil.copy(big, source / "masks" / "img1.png")
    return Case(
        source,
        "masks/img1.png",
        (f"mask of {BIG}x{BIG} = {BIG * BIG} pixels", f"above data.max_image_pixels={PILLOW_LIMIT}"),
    )


def _labelme_declared_size(root: Path, big: Path) -> Case:
    source, _ = make_labelme_source(root / "src")
    document = json.loads((source / "photo1.json").read_text())
    document.update(imageHeight=20000, imageWidth=20000)
    (source / "photo1.json").write_text(json.dumps(document))
    return Case(
        source,
        "photo1.json",
        (
            "declared imageWidth x imageHeight of 20000x20000 = 400000000 pixels",
            f"above data.max_image_pixels={PILLOW_LIMIT}",
        ),
    )


def _coco_declared_size(root: Path, big: Path) -> Case:
    source, _ = make_coco_source(root / "src")
    edit_coco_document(source, lambda document: document["images"][0].update(width=20000, height=20000))
    return Case(
        source,
        "instances_val2017.json#image_id=1",
        ("width x height of 20000x20000 = 400000000 pixels", f"above data.max_image_pixels={PILLOW_LIMIT}"),
    )


def _coco_rle_size(root: Path, big: Path) -> Case:
    source, _ = make_coco_source(root / "src")
    crowds: list[dict] = []

    def huge_rle(document):
        crowds.append(next(a for a in document["annotations"] if a["iscrowd"]))
        crowds[0]["segmentation"] = {"size": [20000, 20000], "counts": [400000000]}

    edit_coco_document(source, huge_rle)
    return Case(
        source, f"image_id={crowds[0]['image_id']}", ("RLE size 20000x20000 differs from the image entry 40x32",)
    )


BOUNDED = {
    "big_image": _big_image,
    "big_mask": _big_mask,
    "labelme_declared_size": _labelme_declared_size,
    "coco_declared_size": _coco_declared_size,
    "coco_rle_size": _coco_rle_size,
}


@pytest.fixture(scope="module")
def bounded(tmp_path_factory):
    base = tmp_path_factory.mktemp("bounded")
    big = write_blank_png(base / "big.png", BIG, BIG)
    assert big.stat().st_size < 4 << 20  # a small file ...
    cases = {name: build(base / name, big) for name, build in BOUNDED.items()}
    return cases, run_isolated(cases, base, timeout=60)


@pytest.mark.parametrize("name", sorted(BOUNDED))
def test_oversized_images_are_refused_before_decoding(name, bounded):
    cases, results = bounded
    check_isolated(results[name], cases[name])
    # ... that would take 432 MB and more decoded: refused from its header, fast and in little memory
    assert results[name]["seconds"] < 10, results[name]
    assert results[name]["rss_growth_mib"] < 150, results[name]


def test_max_image_pixels_is_configurable(tmp_path):
    source = make_folder_source(tmp_path / "src", count=2)  # 24x20 = 480 pixels
    assert_refused(
        source,
        tmp_path / "out",
        "images/img0.png",
        "image of 24x20 = 480 pixels, above data.max_image_pixels=400",
        overrides=("data.max_image_pixels=400",),
    )


def test_max_image_pixels_defaults_to_pillows_and_may_exceed_it(tmp_path, monkeypatch):
    source = make_folder_source(tmp_path / "src", count=2)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 200)  # Pillow itself refuses above twice this (400)
    assert_refused(source, tmp_path / "out", "images/img0.png", "above data.max_image_pixels=200")
    assert prepare(source, tmp_path / "ok", "data.max_image_pixels=1000").stats.num_images == 2
    assert Image.MAX_IMAGE_PIXELS == 200  # Pillow's setting restored


def test_labelme_embedded_mask_patch_larger_than_the_image_is_refused(tmp_path):
    source, _ = make_labelme_source(tmp_path / "src")
    document = json.loads((source / "photo1.json").read_text())
    buffer = io.BytesIO()
    Image.new("1", (400, 400), 1).save(buffer, format="PNG")
    document["shapes"].append(
        {
            "label": "cat",
            "points": [[1, 1], [30, 20]],
            "shape_type": "mask",
            "mask": base64.b64encode(buffer.getvalue()).decode(),
        }
    )
    (source / "photo1.json").write_text(json.dumps(document))
    assert_refused(source, tmp_path / "out", "photo1.json", "patch of 400x400 is larger than the 36x28 image")


# -- garbage in annotation files: one line naming the file -----------------------------------------------------------


def _shape(index: int, **changes):
    def change(document):
        document["shapes"][index].update(changes)

    return change


def _set(key, value):
    def change(document):
        document[key] = value

    return change


def _points(points):
    return _shape(0, points=points)


LABELME_GARBAGE = {
    "nan_coordinate": (_points([[2, 2], [float("nan"), 2], [14, 12]]), "coordinate nan is not a finite number"),
    "inf_coordinate": (_points([[2, 2], [float("inf"), 2], [14, 12]]), "coordinate inf is not a finite number"),
    "huge_coordinate": (_points([[2, 2], [1e300, 2], [14, 12]]), "coordinate 1e+300 is far outside the image"),
    "string_coordinate": (_points([[2, 2], ["14", 2], [14, 12]]), "coordinate '14' is not a number"),
    "points_not_pairs": (_points([[2, 2, 3], [14, 2], [14, 12]]), "point 0 is not an [x, y] pair"),
    "points_flat": (_points([2, 2, 14, 2, 14, 12]), "point 0 is not an [x, y] pair: 2"),
    "points_a_string": (_points("2,2 14,2 14,12"), "points is a JSON string"),
    "shape_without_points": (_shape(1, points=None), "has no points"),
    "shapes_a_string": (_set("shapes", "polygon"), "`shapes` is a JSON string, expected a list"),
    "shape_a_number": (lambda d: d["shapes"].__setitem__(1, 7), "shapes[1] is a JSON number"),
    "label_not_a_string": (_shape(0, label=["cat"]), "label ['cat'] is not a string"),
    "shape_type_not_a_string": (_shape(0, shape_type=["polygon"]), "shape_type ['polygon'] is not a string"),
    "height_a_string": (_set("imageHeight", "28px"), "imageHeight '28px' is not a positive whole number"),
    "height_negative": (_set("imageHeight", -28), "imageHeight -28 is not a positive whole number"),
    "mask_shape_without_mask": (_shape(0, shape_type="mask", points=[[1, 1], [5, 5]]), "has no `mask`"),
    "image_data_not_base64": (_set("imageData", "abc"), "imageData is not valid base64"),
    "image_data_a_number": (_set("imageData", 12), "imageData is a JSON number"),
}


@pytest.mark.parametrize("case", sorted(LABELME_GARBAGE))
def test_labelme_garbage_is_named_in_one_line(case, tmp_path):
    change, reason = LABELME_GARBAGE[case]
    source, _ = make_labelme_source(tmp_path / "src")
    (source / "labels.txt").unlink()  # classes from the labels seen: every JSON is read before any sample
    document = json.loads((source / "photo1.json").read_text())
    change(document)
    (source / "photo1.json").write_text(json.dumps(document))
    error = refusal(source, tmp_path / "out")
    reasons = [issue.reason for issue in error.report.issues if "photo1.json" in issue.file]
    assert reasons and any(reason in text for text in reasons), (reason, error.report.to_text())


@pytest.mark.parametrize(
    "text, reason",
    [
        ('{"shapes": [], "imagePath": "photo1.jpg", ', "invalid JSON"),
        ('["shapes", "imagePath"]', "not a labelme document: a JSON array, expected an object"),
        ('{"imagePath": "photo1.jpg", "shapes": ' + "[" * 100000 + "]" * 100000 + "}", "invalid JSON"),
    ],
    ids=["truncated", "array", "deeply_nested"],
)
def test_labelme_file_that_is_not_a_document_is_named(text, reason, tmp_path):
    source, _ = make_labelme_source(tmp_path / "src")
    (source / "labels.txt").unlink()
    (source / "photo1.json").write_text(text)
    error = refusal(source, tmp_path / "out")
    assert reason in issue_for(error, "photo1.json (image)")


def _coco_image(index, **changes):
    def change(document):
        document["images"][index].update(changes)

    return change


def _coco_drop(section, index, key):
    def change(document):
        del document[section][index][key]

    return change


def _coco_segmentation(index, segmentation):
    def change(document):
        document["annotations"][index]["segmentation"] = segmentation

    return change


def _crowd_counts(change_counts):
    def change(document):
        crowd = next(a for a in document["annotations"] if a["iscrowd"])
        change_counts(crowd["segmentation"]["counts"])

    return change


POLYGON = [4.0, 4.0, 20.0, 4.0, 20.0, 18.0, 4.0, 18.0]

# case -> (change, file the report names (its end), reason); file None: a whole-file refusal (the error's summary)
COCO_GARBAGE = {
    "image_without_id": (_coco_drop("images", 1, "id"), "#images[1]", "image entry without `id`"),
    "image_id_a_string": (_coco_image(1, id="two"), "#images[1]", "image id 'two' is not an integer"),
    "image_without_file_name": (
        _coco_drop("images", 1, "file_name"),
        "#images[1]",
        "file_name None is not a file name",
    ),
    "image_width_nan": (_coco_image(1, width=float("nan")), "#images[1]", "width nan is not a positive whole number"),
    "duplicate_image_id": (_coco_image(1, id=1), "#images[1]", "image id 1 appears more than once"),
    "dotdot_file_name": (_coco_image(1, file_name=".."), "..", "sample name '..' is not a plain file name"),
    "category_without_name": (_coco_drop("categories", 0, "name"), None, "category id 3 has no `name`"),
    "category_without_id": (_coco_drop("categories", 0, "id"), None, "categories[0] has no integer `id`"),
    "categories_not_a_list": (_set("categories", {"3": "car"}), None, "`categories` is a JSON object, expected a list"),
    "annotation_of_unknown_image": (
        lambda d: d["annotations"][0].update(image_id=999),
        "#annotation=1",
        "annotation of unknown image id 999",
    ),
    "annotation_without_image_id": (
        _coco_drop("annotations", 0, "image_id"),
        "#annotation=1",
        "image_id None is not an integer",
    ),
    "annotation_a_string": (
        lambda d: d["annotations"].__setitem__(0, "x"),
        "#annotations[0]",
        "annotation is a JSON string",
    ),
    "annotation_without_category": (
        _coco_drop("annotations", 0, "category_id"),
        "#image_id=1",
        "annotation 1: category_id None is not an integer",
    ),
    "annotation_without_segmentation": (
        _coco_drop("annotations", 0, "segmentation"),
        "#image_id=1",
        "annotation 1: no segmentation",
    ),
    "nan_polygon": (
        _coco_segmentation(0, [[4.0, float("nan"), *POLYGON[2:]]]),
        "#image_id=1",
        "polygon 0: coordinate nan is not a finite number",
    ),
    "inf_polygon": (
        _coco_segmentation(0, [[4.0, float("-inf"), *POLYGON[2:]]]),
        "#image_id=1",
        "polygon 0: coordinate -inf is not a finite number",
    ),
    "huge_polygon": (
        _coco_segmentation(0, [[4.0, 1e300, *POLYGON[2:]]]),
        "#image_id=1",
        "coordinate 1e+300 is far outside the image",
    ),
    "odd_polygon": (
        _coco_segmentation(0, [[*POLYGON, 5.0]]),
        "#image_id=1",
        "polygon 0 has 9 coordinates, expected x, y pairs",
    ),
    "polygon_of_strings": (_coco_segmentation(0, [["4"] * 8]), "#image_id=1", "coordinate '4' is not a number"),
    "polygon_a_number": (_coco_segmentation(0, [7]), "#image_id=1", "polygon 0 is a JSON number"),
    "segmentation_a_string": (_coco_segmentation(0, "x"), "#image_id=1", "unrecognised segmentation (a JSON string"),
    "rle_counts_too_many": (
        _crowd_counts(lambda counts: counts.append(50)),
        "#image_id=1",
        "RLE counts cover 1330 pixels, the 40x32 image has 1280",
    ),
    "rle_counts_too_few": (_crowd_counts(lambda counts: counts.pop()), "#image_id=1", "RLE counts cover"),
    "rle_negative_count": (
        _crowd_counts(lambda counts: counts.__setitem__(0, -3)),
        "#image_id=1",
        "RLE counts hold -3, not a run length",
    ),
    "rle_float_count": (_crowd_counts(lambda counts: counts.__setitem__(0, 0.5)), "#image_id=1", "RLE counts hold 0.5"),
    "rle_string_bad_character": (
        _coco_segmentation(1, {"size": [32, 40], "counts": "zz~~"}),
        "#image_id=1",
        "RLE counts string holds 'z', not a COCO RLE character",
    ),
    "rle_string_cut_off": (
        _coco_segmentation(1, {"size": [32, 40], "counts": "0P"}),
        "#image_id=1",
        "RLE counts string ends inside a number",
    ),
    "rle_string_wrong_total": (
        _coco_segmentation(1, {"size": [32, 40], "counts": "R1"}),
        "#image_id=1",
        "RLE counts cover",
    ),
    "rle_size_not_a_pair": (
        _coco_segmentation(1, {"size": [32], "counts": "R1"}),
        "#image_id=1",
        "RLE size [32] is not [height, width]",
    ),
}


@pytest.mark.parametrize("case", sorted(COCO_GARBAGE))
def test_coco_garbage_is_named_in_one_line(case, tmp_path):
    change, file_end, reason = COCO_GARBAGE[case]
    source, _ = make_coco_source(tmp_path / "src")
    path = edit_coco_document(source, change)
    error = refusal(source, tmp_path / "out")
    if file_end is None:
        assert error.summary.startswith(f"{path}: ") and reason in error.summary, error.summary
    else:
        reasons = [issue.reason for issue in error.report.issues if issue.file.endswith(file_end)]
        assert any(reason in text for text in reasons), (reason, error.report.to_text())


@pytest.mark.parametrize(
    "text, reason",
    [
        ('{"images": [], "annotations": [], "categories": [', "unreadable COCO annotation file (Expecting"),
        ('["images", "annotations", "categories"]', "not a COCO annotation file"),
        (
            '{"images": [], "annotations": [], "categories": ' + "[" * 100000 + "]" * 100000 + "}",
            "unreadable COCO annotation file",
        ),
        ('{"images": [], "annotations": [], "categories": []}' + "\xff", "unreadable COCO annotation file"),
    ],
    ids=["truncated", "array", "deeply_nested", "not_utf8"],
)
def test_coco_file_that_is_not_a_document_is_named(text, reason, tmp_path):
    source, _ = make_coco_source(tmp_path / "src")
    path = source / "annotations" / "instances_val2017.json"
    path.write_bytes(text.encode("latin-1") if text.endswith("\xff") else text.encode())
    error = refusal(
        source, tmp_path / "out", "data=coco", "data.options.annotations=annotations/instances_val2017.json"
    )
    assert error.summary.startswith(f"{path}: ") and reason in error.summary, error.summary


def test_mask_error_names_the_file_not_a_python_object(tmp_path):
    source = make_folder_source(tmp_path / "src", count=3)
    (source / "masks" / "img1.png").write_bytes(b"not an image at all")
    reason = assert_refused(
        source,
        tmp_path / "out",
        "masks/img1.png",
        "unreadable mask (UnidentifiedImageError: cannot identify image file",
    )
    assert "BytesIO" not in reason


def test_class_file_garbage_is_named(tmp_path):
    source = make_folder_source(tmp_path / "src", count=2)
    (source / "classes.txt").unlink()
    (source / "classes.yaml").write_text("classes: [background, {name: thing, id: not-a-number}]\n")
    error = refusal(source, tmp_path / "out")
    assert error.summary.startswith(f"{source / 'classes.yaml'}: unreadable class file (ValueError"), error.summary
    (source / "classes.yaml").write_text("classes: [background, thing\n")
    error = refusal(source, tmp_path / "out")
    assert error.summary.startswith(f"{source / 'classes.yaml'}: unreadable class file ("), error.summary


# -- file names that are not UTF-8, or not printable ---------------------------------------------------------------


def test_undecodable_and_unprintable_file_names_are_made_safe(tmp_path):
    source = make_folder_source(tmp_path / "src", count=2)
    for raw in (b"caf\xe9", b"bad\xff", b"esc\x1b[31mred"):
        name = os.fsdecode(raw + b".png")
        shutil.copy(source / "images" / "img0.png", source / "images" / name)
        shutil.copy(source / "masks" / "img0.png", source / "masks" / name)
    (source / "images" / os.fsdecode(b"bad\xff.png")).write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    error = refusal(source, tmp_path / "out")
    assert issue_for(error, "images/bad\\xff.png").startswith("corrupt or unreadable image")
    kept = prepare(source, tmp_path / "kept", "on_error=skip")
    assert kept.stats.num_images == 4 and len(kept.report) == 1
    manifest = (kept.root / "manifest.csv").read_text(encoding="utf-8")  # strict UTF-8: no surrogates written
    assert "caf\\xe9.png" in manifest and "esc\\x1b[31mred.png" in manifest
    assert all(path.name.isprintable() for path in kept.root.rglob("*"))


def test_splits_hash_undecodable_names():
    names = [os.fsdecode(b"caf\xe9"), "plain", "lone\ud800surrogate"]
    assert set(assign_splits(names, seed=0, val_fraction=0.34, test_fraction=0.0)) == set(names)


# -- as the ingest step shows it: `segmodels ingest: error: ...`, no traceback --------------------------------------

STEP = r"""
import sys
from pathlib import Path

import segmodels.pipeline as pipeline
from segmodels.data import prepare_dataset

out_root = Path(sys.argv[1])


def prepare_only(cfg):  # the ingest step up to its commit: what prepare refuses, the step refuses
    out = out_root / Path(cfg.source).name
    prepare_dataset(cfg.source, out, cfg.data, on_error=cfg.on_error, split_seed=cfg.split_seed)


pipeline.step_function = lambda step: prepare_only
for source in sys.argv[2:]:
    print(f"=== {Path(source).name}", file=sys.stderr, flush=True)
    try:
        pipeline.run_step_cli("ingest", [f"source={source}"])
    except SystemExit as exit:
        print(f"=== exit {exit.code}", file=sys.stderr, flush=True)
"""


def test_ingest_step_prints_one_line_errors_for_garbage(tmp_path):
    sources = {}
    labelme, _ = make_labelme_source(tmp_path / "labelme_shapes_string")
    (labelme / "labels.txt").unlink()
    document = json.loads((labelme / "photo1.json").read_text())
    (labelme / "photo1.json").write_text(json.dumps({**document, "shapes": "polygon"}))
    sources[labelme.name] = "`shapes` is a JSON string"
    array, _ = make_labelme_source(tmp_path / "labelme_array")
    (array / "labels.txt").unlink()
    (array / "photo1.json").write_text('["shapes", "imagePath"]')
    sources[array.name] = "not a labelme document"
    for name, change, expected in [
        ("coco_image_without_id", _coco_drop("images", 1, "id"), "image entry without `id`"),
        ("coco_category_without_name", _coco_drop("categories", 0, "name"), "has no `name`"),
    ]:
        coco, _ = make_coco_source(tmp_path / name)
        path = coco / "annotations" / "instances_val2017.json"
        document = json.loads(path.read_text())
        change(document)
        path.write_text(json.dumps(document))
        sources[name] = expected
    undecodable = make_folder_source(tmp_path / "undecodable_name", count=2)
    shutil.copy(undecodable / "masks" / "img0.png", undecodable / "masks" / os.fsdecode(b"bad\xff.png"))
    (undecodable / "images" / os.fsdecode(b"bad\xff.png")).write_bytes(b"garbage")
    sources[undecodable.name] = "bad\\xff.png: corrupt or unreadable image"
    completed = subprocess.run(
        [sys.executable, "-c", STEP, str(tmp_path / "step-out"), *(str(tmp_path / s) for s in sources)],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "Traceback" not in completed.stderr, completed.stderr
    blocks = completed.stderr.split("=== ")[1:]
    shown = {block.splitlines()[0]: block for block in blocks if not block.startswith("exit")}
    exits = [block.split()[1] for block in blocks if block.startswith("exit")]
    assert set(shown) == set(sources) and exits == ["2"] * len(sources), completed.stderr
    for name, expected in sources.items():
        errors = [line for line in shown[name].splitlines() if line.startswith("segmodels ingest: error: ")]
        assert len(errors) == 1, shown[name]
        assert expected in shown[name] and "Traceback" not in shown[name], shown[name]
        assert_one_line_message(shown[name])
    assert not (tmp_path / "step-out").exists() or not any((tmp_path / "step-out").iterdir())


def test_opening_images_from_many_threads_leaves_pillows_own_limit_in_place(tmp_path):
    """``open_image`` lifts Pillow's limit while it reads a header (ours is checked instead); threads doing so
    at once must not leave it lifted."""
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buffer, format="PNG")
    data, limit = buffer.getvalue(), Image.MAX_IMAGE_PIXELS

    def open_many():
        for _ in range(300):
            with open_image(data) as image:
                assert image.size == (4, 4)

    threads = [threading.Thread(target=open_many) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert limit == Image.MAX_IMAGE_PIXELS


# -- sources larger than the disk: refused before they fill it -------------------------------------------------------
def disk_with_free(monkeypatch, free: int) -> None:
    """A disk with ``free`` bytes above the spare space a download or extraction must leave, less what has been
    written below the folder asked about."""
    real = shutil.disk_usage

    def usage(path):
        written = sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())
        return real(path)._replace(free=sources.DISK_SPARE + free - written)

    monkeypatch.setattr(shutil, "disk_usage", usage)


@pytest.fixture
def scratch_dirs(tmp_path, monkeypatch):
    """The scratch folders ingest makes in the temp dir, which this test has to itself (tests running beside it
    make their own)."""
    private = tmp_path / "tmp"
    private.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private))
    return lambda: {p.name for p in private.glob("segmodels-source-*")}


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_an_archive_that_would_not_fit_on_the_disk_is_refused_before_extracting(
    kind, tmp_path, monkeypatch, scratch_dirs
):
    archive = tmp_path / f"big.{kind}"
    payload = bytes(3 << 20)  # 3 MB of zeros: a few KB compressed
    if kind == "zip":
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as bundle:
            for i in range(3):
                bundle.writestr(f"big/images/{i}.png", payload)
    else:
        with tarfile.open(archive, "w:gz") as bundle:
            for i in range(3):
                info = tarfile.TarInfo(f"big/images/{i}.png")
                info.size = len(payload)
                bundle.addfile(info, io.BytesIO(payload))
    disk_with_free(monkeypatch, 5 << 20)
    before = scratch_dirs()
    message = str(refusal(archive, tmp_path / "out"))
    assert message.startswith(f"{archive}: extracting it needs 9 MB and the disk of ")
    assert "MB free (keeping 1,074 MB spare)" in message
    assert scratch_dirs() == before


class StreamingHandler(http.server.BaseHTTPRequestHandler):
    """Serves ``/data.zip`` as ``size`` bytes, with or without a Content-Length (chunked)."""

    size, with_length = 0, True

    def do_GET(self):  # noqa: N802 - the stdlib's name
        self.send_response(200)
        if self.with_length:
            self.send_header("Content-Length", str(self.size))
        else:
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        block = bytes(1 << 20)
        try:
            for _ in range(self.size >> 20):
                self.wfile.write(block if self.with_length else b"%x\r\n%s\r\n" % (len(block), block))
            if not self.with_length:
                self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client stopped reading: what the test wants

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("with_length", [True, False], ids=["content-length", "chunked"])
def test_a_download_that_would_not_fit_on_the_disk_is_refused_and_removed(
    with_length, tmp_path, monkeypatch, scratch_dirs
):
    handler = type("Handler", (StreamingHandler,), {"size": 40 << 20, "with_length": with_length})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(sources, "ROOM_CHECK_EVERY", 4)
    disk_with_free(monkeypatch, 10 << 20)
    before = scratch_dirs()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/data.zip"
        message = str(refusal(url, tmp_path / "out"))
    finally:
        server.shutdown()
        server.server_close()
    needed = "42 MB" if with_length else "4 MB"  # the whole declared size, or the next stretch of the stream
    assert message.startswith(f"{url}: the download needs {needed} and the disk of ")
    assert scratch_dirs() == before
