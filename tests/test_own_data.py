"""Ingest on users' own data, with no recipe: binary masks read as two classes, image/mask folders found a few
levels down by their file stems, data sets a model cannot learn from refused in one line, and every fix an error
prints works when typed as printed (real ``mlflow run`` on ../shared/realdata, skipped where it is absent)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient
from PIL import Image
from test_data_sources import prepare

from segmodels.data import DataValidationError
from segmodels.pipeline.params import step_overrides

PROJECT = Path(__file__).resolve().parents[1]
REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"
realdata = pytest.mark.skipif(not REALDATA.is_dir(), reason=f"{REALDATA} absent")


def printed_params(message: str) -> list[str]:
    """The ``key=value`` of every ``-P key=value`` a message prints, unquoted as a shell would."""
    return [shlex.split(value)[0] for value in re.findall(r"-P ('[^']*'|\"[^\"]*\"|[^\s;,)]+)", message)]


def prepare_with(source, out: Path, params: list[str], **kwargs):
    """prepare() with ``-P key=value`` parameters, mapped to overrides as ``mlflow run . -e ingest`` maps them."""
    argv = [arg for param in params for arg in ("--" + param.partition("=")[0], param.partition("=")[2])]
    return prepare(source, out, *step_overrides("ingest", argv), **kwargs)


def write_pairs(root: Path, masks: dict[str, np.ndarray], images="images", masks_dir="masks") -> Path:
    """Grey images and the given masks, one pair per name, in root/<images> and root/<masks_dir>."""
    (root / images).mkdir(parents=True)
    (root / masks_dir).mkdir(parents=True)
    for name, mask in masks.items():
        Image.fromarray(np.full(mask.shape, 99, np.uint8)).save(root / images / f"{name}.png")
        Image.fromarray(mask).save(root / masks_dir / f"{name}.png")
    return root


def binary_masks(values=(0, 255), count=10, size=16) -> dict[str, np.ndarray]:
    """`count` masks whose left third is values[0] and the rest values[1] (one all-background mask first)."""
    masks = {"m00": np.full((size, size), values[0], np.uint8)}
    for index in range(1, count):
        mask = np.full((size, size), values[1], np.uint8)
        mask[:, : size // 3] = values[0]
        masks[f"m{index:02d}"] = mask
    return masks


# -- binary masks -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("values", [(0, 255), (0, 1)])
def test_binary_masks_become_background_and_foreground(values, tmp_path):
    source = write_pairs(tmp_path / "src", binary_masks(values))
    prepared = prepare(source, tmp_path / "out")
    assert prepared.info.class_names == ["background", "foreground"]
    assert prepared.info.extra["binary_masks"]["raw_values"] == list(values)
    assert prepared.stats.pixels[255] == 0 and prepared.stats.pixels[1] > prepared.stats.pixels[0] > 0
    written = yaml.safe_load((prepared.root / "dataset.yaml").read_text())
    assert written["binary_masks"]["classes"] == {values[0]: "background", values[1]: "foreground"}


def test_masks_that_only_start_binary_are_read_as_class_ids(tmp_path):
    masks = binary_masks((0, 255))
    masks["m09"][0, :] = 2  # a third value, after the first masks looked binary
    source = write_pairs(tmp_path / "src", masks)
    cache = tmp_path / "cache.json"
    with pytest.raises(DataValidationError, match=r"are ignore_index 255, above data.max_ignored_share=0.2"):
        prepare(source, tmp_path / "out", cache_file=cache)
    prepared = prepare(source, tmp_path / "out", "data.max_ignored_share=0.9", cache_file=cache)
    assert "binary_masks" not in prepared.info.extra and prepared.info.num_classes == 3
    assert prepared.stats.pixels[255] > 0 and prepared.stats.pixels[2] == 16


def test_given_classes_keep_255_as_ignore(tmp_path):
    masks = {name: np.where(mask == 255, 1, 0).astype(np.uint8) for name, mask in binary_masks().items()}
    for mask in masks.values():
        mask[0, 0] = 255  # VOC's boundary value, rare
    source = write_pairs(tmp_path / "src", masks)
    prepared = prepare(source, tmp_path / "out", "data.classes=[sky,tree]")
    assert prepared.info.class_names == ["sky", "tree"] and "binary_masks" not in prepared.info.extra
    assert prepared.stats.pixels[255] == 10


def test_binary_reading_is_cached_like_any_other(tmp_path):
    source = write_pairs(tmp_path / "src", binary_masks())
    cache = tmp_path / "cache.json"
    first = prepare(source, tmp_path / "out", cache_file=cache)
    again = prepare(source, tmp_path / "out", cache_file=cache)
    assert again.reused == first.stats.num_images == 10
    assert (tmp_path / "out" / "manifest.csv").read_text() == (first.root / "manifest.csv").read_text()
    assert again.info.extra["binary_masks"] == first.info.extra["binary_masks"]


# -- data sets a model cannot learn from ---------------------------------------------------------------------------


def test_mostly_ignored_pixels_are_refused_in_one_line_whose_fix_works(tmp_path):
    masks = {name: np.where(mask == 255, 255, 1).astype(np.uint8) for name, mask in binary_masks().items()}
    for mask in masks.values():
        mask[0, :2] = 0
    source = write_pairs(tmp_path / "src", masks)
    for on_error in ("fail", "skip"):
        with pytest.raises(DataValidationError) as caught:
            prepare(source, tmp_path / "out", "data.classes=[a,b]", f"on_error={on_error}")
        message = str(caught.value)
        assert "\n" not in message and "of the pixels (" in message and "data.max_ignored_share=0.2" in message
        assert not (tmp_path / "out").exists()
    fix = printed_params(message)
    assert fix == ["data.max_ignored_share=0.62"]
    assert prepare_with(source, tmp_path / "out", ["data.classes=[a,b]", *fix]).stats.num_images == 10


def test_a_train_split_with_one_class_is_refused(tmp_path):
    masks = {f"m{i}": np.full((8, 8), 3, np.uint8) for i in range(6)}
    source = write_pairs(tmp_path / "src", masks)
    with pytest.raises(DataValidationError, match=r"train split has pixels of 1 class\(es\) \(class_3: [\d,]+ px"):
        prepare(source, tmp_path / "out")


# -- folders found by their file stems ----------------------------------------------------------------------------


def test_folders_a_few_levels_down_are_paired_by_file_stems(tmp_path):
    write_pairs(tmp_path / "src" / "release" / "v2", binary_masks(), images="Photos", masks_dir="PersonSegmentation")
    prepared = prepare(tmp_path / "src", tmp_path / "out")
    assert prepared.stats.num_images == 10 and prepared.info.class_names == ["background", "foreground"]
    assert prepare(tmp_path / "src", tmp_path / "out2", "data=folder").stats.num_images == 10  # naming it works too


def test_several_candidate_pairs_are_listed_with_the_parameters_that_pick_each(tmp_path):
    write_pairs(tmp_path / "src" / "a b", binary_masks(), images="imgs", masks_dir="masks")
    write_pairs(tmp_path / "src" / "second", binary_masks(), images="imgs", masks_dir="masks")
    with pytest.raises(DataValidationError) as caught:
        prepare(tmp_path / "src", tmp_path / "out")
    message = str(caught.value)
    assert "\n" not in message and "2 image/mask folder pairs fit equally well" in message
    assert "-P 'data.options.images_dir=a b/imgs'" in message
    params = printed_params(message)
    assert params[:3] == ["format=folder", "data.options.images_dir=a b/imgs", "data.options.masks_dir=a b/masks"]
    picked = prepare_with(tmp_path / "src", tmp_path / "out", params[:3])
    assert picked.stats.num_images == 10


def test_size_mismatches_are_one_summary_line_whose_fix_works(tmp_path):
    masks = binary_masks(count=12)
    source = write_pairs(tmp_path / "src", masks)
    for name in list(masks)[:8]:
        Image.fromarray(masks[name][::2, ::2]).save(source / "masks" / f"{name}.png")
    with pytest.raises(DataValidationError) as caught:
        prepare(source, tmp_path / "out", report_file=tmp_path / "bad_files.csv")
    summary, *details = str(caught.value).splitlines()
    assert "8 bad file(s) in 12 sample(s)" in summary and "8 size mismatch" in summary
    assert len(details) == 6 and details[-1].endswith(f"3 more; full list in {tmp_path / 'bad_files.csv'}")
    assert len((tmp_path / "bad_files.csv").read_text().splitlines()) == 1 + 8
    fix = [param for param in printed_params(summary) if param != "on_error=skip"]
    assert fix == ["data.resize_masks=true"]
    prepared = prepare_with(source, tmp_path / "out", fix, report_file=tmp_path / "bad_files.csv")
    assert prepared.stats.num_images == 12 and prepared.info.extra["masks_resized"] == 8
    assert not (tmp_path / "bad_files.csv").exists()


# -- real data through mlflow run ---------------------------------------------------------------------------------


class Sandbox:
    """Its own MLflow store, segmodels home and HOME, in which ``mlflow run`` runs as a user's would."""

    def __init__(self, root: Path):
        self.root = root
        self.env = {key: value for key, value in os.environ.items() if not key.startswith(("LAKECTL_", "MLFLOW_"))}
        self.env.update(
            {
                "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
                "MLFLOW_EXPERIMENT_NAME": "own",
                "SEGMODELS_HOME": str(root / "home"),
                "HOME": str(root),
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            }
        )
        mlflow.set_tracking_uri(self.env["MLFLOW_TRACKING_URI"])
        mlflow.create_experiment("own", artifact_location=(root / "artifacts").as_uri())

    def ingest(self, *params: str) -> subprocess.CompletedProcess:
        command = ["mlflow", "run", str(PROJECT), "-e", "ingest", "--env-manager", "local"]
        for param in params:
            command += ["-P", param]
        return subprocess.run(command, env=self.env, cwd=self.root, capture_output=True, text=True, timeout=600)

    def last_run_artifacts(self) -> Path:
        run = MlflowClient().search_runs([mlflow.get_experiment_by_name("own").experiment_id], max_results=1)[0]
        return Path(run.info.artifact_uri.removeprefix("file://"))


def error_line(completed: subprocess.CompletedProcess) -> str:
    lines = [line for line in completed.stderr.splitlines() if line.startswith("segmodels ingest: error:")]
    assert len(lines) == 1, completed.stderr[-3000:]
    return lines[0]


@pytest.fixture
def sandbox(tmp_path):
    return Sandbox(tmp_path)


@realdata
@pytest.mark.slow
@pytest.mark.parametrize("source", ["isbi2012/data/membrane/train", "isbi2012"])
def test_isbi_ingests_as_two_classes_with_no_options(source, sandbox):
    completed = sandbox.ingest(f"source={REALDATA / source}")
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "ingesting two classes, background (0) and foreground (255)" in completed.stderr
    assert re.search(
        r"data set '(isbi2012|train)': 30 images \(train \d+, val \d+, test \d+\), 2 classes", completed.stderr
    )
    assert re.search(r"foreground \(1\): 7\d\.\d% ", completed.stderr)
    artifacts = sandbox.last_run_artifacts() / "data"
    info = yaml.safe_load((artifacts / "dataset.yaml").read_text())
    assert [c["name"] for c in info["classes"]] == ["background", "foreground"]
    card = (artifacts / "dataset_card.html").read_text()
    assert card.count("data:image/png;base64,") >= 4 and "foreground (1)" in card
    assert not re.search(r"(src|href)=\"(https?:)?//", card)  # self-contained


@realdata
@pytest.mark.slow
def test_human_seg_is_detected_and_its_size_fix_works_as_printed(sandbox):
    refused = sandbox.ingest(f"source={REALDATA / 'human_seg'}")
    assert refused.returncode != 0
    line = error_line(refused)
    assert "198 bad file(s) in 290 sample(s)" in line and "198 size mismatch" in line
    listed = re.search(r"full list in (\S+)", refused.stderr).group(1)
    assert len(Path(listed).read_text().splitlines()) == 1 + 198
    assert len([line for line in refused.stderr.splitlines() if "size mismatch: image" in line]) <= 6
    fix = [param for param in printed_params(line) if param != "on_error=skip"]
    assert fix == ["data.resize_masks=true"]
    completed = sandbox.ingest(f"source={REALDATA / 'human_seg'}", *fix)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "290 images" in completed.stderr and "masks resized: 198" in completed.stderr


@realdata
@pytest.mark.slow
def test_ingest_refusals_print_parameters_that_work(sandbox, tmp_path):
    refused = sandbox.ingest("source=/nonexistent", "resize_masks=true")
    line = error_line(refused)
    example = re.search(r"a config key such as (\S+)", line).group(1)
    assert example == "data.resize_masks"
    assert sandbox.ingest(f"source={REALDATA / 'isbi2012'}", f"{example}=true").returncode == 0
