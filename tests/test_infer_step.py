"""The infer step through real components (embedded lakeFS, a sqlite MLflow store, an ingested demo data set and
a tiny saved model): it refuses data of other classes, replaces its output folder whole (and only its own),
leaves nothing behind on failure and commits its outputs to lakeFS on request."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from segmodels.config import load_config
from segmodels.data import generate_demo_dataset
from segmodels.data.demo import DEMO_CLASSES
from segmodels.dataset_store import ingest
from segmodels.inference import predictor
from segmodels.inference.pyfunc import save_pyfunc_model
from segmodels.models import ModelSpec, create_model, save_package
from segmodels.pipeline import StepError, infer, run_step_cli
from segmodels.pipeline.params import step_overrides
from segmodels.tracking import lineage
from segmodels.tracking.models import ModelURIError
from segmodels.versioning import LakeFSUri
from segmodels.versioning import settings as versioning_settings

PROJECT = Path(__file__).resolve().parents[1]
DEMO_NAMES = [c["name"] for c in DEMO_CLASSES]


def save_model(root: Path, class_names: list[str]) -> Path:
    """A tiny untrained U-Net for ``class_names`` saved as an MLflow pyfunc folder (a local model URI)."""
    model = create_model("unet", len(class_names), encoder_name="resnet18", decoder_channels=[16, 16, 16, 8, 8])
    spec = ModelSpec.from_model(
        model.eval(), num_classes=len(class_names), class_names=class_names, image_size=[32, 32]
    )
    return save_pyfunc_model(save_package(model, spec, root / "package"), root / "mlflow-model")


@pytest.fixture(scope="module")
def demo_model(tmp_path_factory) -> Path:
    return save_model(tmp_path_factory.mktemp("demo-model"), DEMO_NAMES)


@pytest.fixture(scope="module")
def street_model(tmp_path_factory) -> Path:
    return save_model(
        tmp_path_factory.mktemp("street-model"),
        ["sky", "building", "road", "car", "tree", "pole", "sign", "fence", "person", "bike", "wall", "bus"],
    )


@pytest.fixture(scope="module")
def renamed_model(tmp_path_factory) -> Path:
    return save_model(tmp_path_factory.mktemp("renamed-model"), ["background", "circle", "car", "triangle"])


@pytest.fixture
def tracking(tmp_path, new_sqlite_store) -> MlflowClient:
    mlflow.set_tracking_uri(new_sqlite_store(tmp_path / "mlflow.db"))
    mlflow.set_experiment(
        experiment_id=mlflow.create_experiment("infer", artifact_location=(tmp_path / "artifacts").as_uri())
    )
    return MlflowClient()


@pytest.fixture
def data_uri(lakefs, lakefs_settings, repo_name, tmp_path, monkeypatch, tracking) -> str:
    """A 12-image demo data set (train, val and test splits) committed to ``repo_name``; the step's
    ``connect()`` finds the embedded server through the LAKECTL_* variables."""
    return ingest_demo(lakefs, lakefs_settings, repo_name, tmp_path, monkeypatch, image_size=32)


def ingest_demo(lakefs, lakefs_settings, repo_name, tmp_path, monkeypatch, image_size: int) -> str:
    """Ingest a 12-image demo data set of ``image_size`` pixels; its pinned URI."""
    monkeypatch.setenv(versioning_settings.ENV_ENDPOINT, lakefs_settings.endpoint)
    monkeypatch.setenv(versioning_settings.ENV_ACCESS_KEY_ID, lakefs_settings.access_key_id)
    monkeypatch.setenv(versioning_settings.ENV_SECRET_ACCESS_KEY, lakefs_settings.secret_access_key)
    lakefs.ensure_repository(repo_name, default_branch="main")
    source = generate_demo_dataset(tmp_path / "source", num_images=12, image_size=image_size, seed=1)
    cfg = load_config("ingest", ["data.val_fraction=0.25", "data.test_fraction=0.25"])
    result = ingest(
        lakefs,
        source,
        cfg.data,
        repo_name,
        cfg.lakefs.data_branch,
        cfg.lakefs.data_prefix,
        on_error=cfg.on_error,
        split_seed=cfg.split_seed,
        work_dir=tmp_path / "work",
    )
    return result.uri


def infer_args(model_uri, data_uri: str, output_dir: Path, **params) -> list[str]:
    """The step's command line, as ``mlflow run . -e infer -P ...`` passes it (two images a batch)."""
    params = {"model_uri": str(model_uri), "data_ref": data_uri, "output_dir": str(output_dir), **params}
    return [arg for name, value in params.items() for arg in (f"--{name}", str(value))] + ["batch_size=2"]


def run_infer(model_uri, data_uri: str, output_dir: Path, **params) -> Path:
    return infer.run(
        load_config("infer", step_overrides("infer", infer_args(model_uri, data_uri, output_dir, **params)))
    )


def files(folder: Path) -> set[str]:
    return {path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file()}


def expected_outputs(names: set[str]) -> set[str]:
    return {f"masks/{n}.png" for n in names} | {f"overlays/{n}.png" for n in names} | {"metrics.csv", infer.MARKER_FILE}


def split_stems(data_uri: str, lakefs, split: str) -> set[str]:
    uri = LakeFSUri.parse(data_uri)
    return {Path(obj.path).stem for obj in lakefs.list_objects(uri.repo, uri.ref, f"{uri.path}/images/{split}/")}


def last_infer_run(client: MlflowClient):
    experiment = mlflow.get_experiment_by_name("infer")
    return client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"], max_results=1)[0]


# -- 1. classes --------------------------------------------------------------------------------------------------


def test_a_model_of_other_classes_is_refused_in_one_line_before_any_prediction(
    street_model, data_uri, tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr(infer, "predict_files", lambda *a, **k: pytest.fail("predicted with the wrong classes"))
    out = tmp_path / "out" / "predictions"
    with pytest.raises(SystemExit) as exit_info:
        run_step_cli("infer", infer_args(street_model, data_uri, out))
    assert exit_info.value.code == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert errors == [
        f"segmodels infer: error: model_uri={street_model} predicts 12 classes (sky, building, road, car, tree, "
        f"pole, ...) but the data set at {data_uri} has 4 classes (background, circle, square, triangle); pass a "
        f"data_ref of data with the model's classes, or a model_uri of a model of the data's classes"
    ]
    assert not out.exists() and not out.parent.exists(), "nothing written"


def test_same_number_of_classes_with_other_names_is_refused(renamed_model, data_uri, tmp_path):
    out = tmp_path / "predictions"
    with pytest.raises(StepError, match=r"class 2 is 'car' in the model, 'square' in the data") as info:
        run_infer(renamed_model, data_uri, out)
    assert "\n" not in str(info.value)
    assert not out.exists() and not any(tmp_path.glob(".predictions*"))


def test_a_labelled_split_is_scored_at_full_resolution_per_class(
    demo_model, lakefs, lakefs_settings, repo_name, tracking, tmp_path, monkeypatch
):
    """48x48 images through a 32x32 model: the logged mIoU, per-class IoU and confusion matrix are those of the
    written full-size masks against the ground truth, computed here with numpy."""
    uri = LakeFSUri.parse(ingest_demo(lakefs, lakefs_settings, repo_name, tmp_path, monkeypatch, image_size=48))
    out = run_infer(demo_model, str(uri), tmp_path / "predictions", split="test")
    truths = lakefs.download_prefix(uri.repo, uri.ref, f"{uri.path}/masks/test/", tmp_path / "truth")
    matrix = np.zeros((4, 4), np.int64)
    for mask_path in sorted((out / "masks").glob("*.png")):
        truth = np.asarray(Image.open(truths / mask_path.name))
        predicted = np.asarray(Image.open(mask_path))
        assert predicted.shape == truth.shape == (48, 48)
        valid = truth != 255
        np.add.at(matrix, (truth[valid].astype(int), predicted[valid].astype(int)), 1)
    run = last_infer_run(tracking)
    union = matrix.sum(0) + matrix.sum(1) - np.diag(matrix)
    ious = {name: matrix[c, c] / union[c] for c, name in enumerate(DEMO_NAMES) if union[c]}
    for name, iou in ious.items():
        assert run.data.metrics[f"iou_{name}"] == pytest.approx(iou)
    assert run.data.metrics["miou"] == pytest.approx(np.mean(list(ious.values())))
    logged = mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id, artifact_path="confusion_matrix.csv", dst_path=str(tmp_path / "artifacts-copy")
    )
    with open(logged) as handle:
        rows = list(csv.reader(handle))
    assert rows[0][1:] == DEMO_NAMES and np.array_equal(np.array([r[1:] for r in rows[1:]], dtype=np.int64), matrix)
    assert {"per_class_iou.json", "confusion_matrix.png"} <= {a.path for a in tracking.list_artifacts(run.info.run_id)}


# -- 2. the output folder ----------------------------------------------------------------------------------------


def test_a_second_run_replaces_the_outputs_whole(demo_model, data_uri, lakefs, tracking, tmp_path):
    out = tmp_path / "predictions"
    test_names, val_names = split_stems(data_uri, lakefs, "test"), split_stems(data_uri, lakefs, "val")
    assert test_names and val_names and not test_names & val_names
    assert run_infer(demo_model, data_uri, out, split="test") == out
    assert files(out) == expected_outputs(test_names)
    (tmp_path / "probe").mkdir()
    assert out.stat().st_mode == (tmp_path / "probe").stat().st_mode, "made as a plain mkdir would make it"
    first_run = last_infer_run(tracking)
    assert (out / infer.MARKER_FILE).read_text().strip() == first_run.info.run_id
    assert first_run.data.metrics["num_images"] == len(test_names) and "miou" in first_run.data.metrics

    run_infer(demo_model, data_uri, out, split="val")
    assert files(out) == expected_outputs(val_names), "no mask of the first run stays"
    with open(out / "metrics.csv") as handle:
        assert {Path(row["image"]).stem for row in csv.DictReader(handle)} == val_names
    assert sorted(p.name for p in tmp_path.iterdir() if "predictions" in p.name) == ["predictions"]
    assert (out / infer.MARKER_FILE).read_text().strip() == last_infer_run(tracking).info.run_id


def test_an_empty_folder_is_filled(demo_model, data_uri, lakefs, tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    run_infer(demo_model, data_uri, out, split="test")
    assert files(out) == expected_outputs(split_stems(data_uri, lakefs, "test"))


@pytest.mark.parametrize("kind", ["folder", "file"])
def test_a_foreign_output_dir_is_refused_and_untouched(kind, demo_model, data_uri, tmp_path, monkeypatch):
    monkeypatch.setattr(infer, "predict_files", lambda *a, **k: pytest.fail("predicted into a foreign folder"))
    out = tmp_path / "mine"
    if kind == "folder":
        out.mkdir()
        (out / "thesis.tex").write_text("years of work")
        (out / "masks").mkdir()
        (out / "masks" / "keep.png").write_bytes(b"png")
        reason = f"output_dir={out} holds files not written by infer"
    else:
        out.write_text("a file")
        reason = f"output_dir={out} is not a folder"
    before = {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()}
    with pytest.raises(StepError, match=reason) as info:
        run_infer(demo_model, data_uri, out)
    assert "\n" not in str(info.value)
    assert {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith((".mine", "mine"))) == ["mine"]


def test_a_failure_midway_leaves_the_output_dir_as_it_was(demo_model, data_uri, tmp_path, monkeypatch):
    out = tmp_path / "predictions"
    run_infer(demo_model, data_uri, out, split="test")
    before = {name: (out / name).read_bytes() for name in files(out)}

    real_predict, calls = predictor.predict, []

    def predict_then_fail(*args, **kwargs):  # the first batch is written, the second one fails
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("CUDA out of memory")
        return real_predict(*args, **kwargs)

    monkeypatch.setattr(predictor, "predict", predict_then_fail)  # the batches predict_files predicts
    with pytest.raises(RuntimeError, match="out of memory"):
        run_infer(demo_model, data_uri, out, split="val")
    assert len(calls) == 2
    assert {name: (out / name).read_bytes() for name in files(out)} == before
    assert sorted(p.name for p in tmp_path.iterdir() if "predictions" in p.name) == ["predictions"], (
        "no staging folder left"
    )


# -- 3. predictions committed to lakeFS --------------------------------------------------------------------------


def test_commit_predictions_commits_the_outputs_once_with_their_lineage(
    demo_model, data_uri, lakefs, tracking, tmp_path, caplog
):
    version = tracking.create_model_version(
        tracking.create_registered_model("seg").name, source=str(demo_model), tags={lineage.TAG_MODEL_COMMIT: "m" * 64}
    )
    tracking.set_registered_model_alias("seg", "champion", version.version)
    caplog.set_level("INFO", logger=infer.__name__)
    out = tmp_path / "predictions"
    run_infer("models:/seg@champion", data_uri, out, split="test", commit_predictions="true")

    run = last_infer_run(tracking)
    run_id = run.info.run_id
    data = LakeFSUri.parse(data_uri)
    uri = LakeFSUri.parse(run.data.tags[lineage.TAG_PREDICTIONS_URI])
    assert (uri.repo, uri.path) == (data.repo, f"predictions/{run_id}")
    assert uri.ref == lakefs.resolve_commit(data.repo, "predictions"), "pinned to the commit on the branch"
    assert f"predictions committed to {uri}" in caplog.messages
    assert run.data.tags[lineage.TAG_MODEL_NAME] == "seg"
    assert run.data.tags[lineage.TAG_MODEL_VERSION] == str(version.version)

    commit = lakefs.get_commit(data.repo, uri.ref)
    assert {
        key: commit.metadata[key]
        for key in ("model_uri", "registered_model", "model_version", "model_commit", "data_commit", "mlflow_run_id")
    } == {
        "model_uri": "models:/seg@champion",
        "registered_model": "seg",
        "model_version": str(version.version),
        "model_commit": "m" * 64,
        "data_commit": data.ref,
        "mlflow_run_id": run_id,
    }
    assert commit.parents[0] == data.ref, "the new branch starts at the data commit"
    assert all(lakefs.get_commit(data.repo, parent).parents == [data.ref] for parent in commit.parents[1:]), (
        "one commit holds it all"
    )
    committed = {obj.path[len(uri.path) + 1 :]: obj for obj in lakefs.list_objects(data.repo, uri.ref, uri.path + "/")}
    assert set(committed) == files(out) - {infer.MARKER_FILE}
    metrics = lakefs.download_prefix(data.repo, uri.ref, uri.path) / "metrics.csv"
    assert metrics.read_bytes() == (out / "metrics.csv").read_bytes()


def test_commit_predictions_is_off_by_default(demo_model, data_uri, lakefs, tracking, tmp_path):
    run_infer(demo_model, data_uri, tmp_path / "predictions", split="test")
    assert lineage.TAG_PREDICTIONS_URI not in last_infer_run(tracking).data.tags
    assert not lakefs.is_branch(LakeFSUri.parse(data_uri).repo, "predictions")


def test_an_unknown_alias_is_one_line_naming_the_model_uri(data_uri, tracking, tmp_path):
    tracking.create_registered_model("seg")
    with pytest.raises(ModelURIError, match=r"^model_uri='models:/seg@nope': ") as info:
        run_infer("models:/seg@nope", data_uri, tmp_path / "predictions")
    assert "\n" not in str(info.value) and not (tmp_path / "predictions").exists()


# -- 4. interactive choice of the model version ---------------------------------------------------------------


@pytest.mark.slow  # the step in a child on a terminal (about 8 s); tests/test_interactive.py drives the picker fast
def test_interactive_infer_predicts_with_the_version_picked_in_a_terminal(
    demo_model, data_uri, tracking, tmp_path, pty_process
):
    tracking.create_registered_model("seg")
    versions = [
        tracking.create_model_version(
            "seg", source=str(demo_model), tags={"best_val_miou": str(miou), lineage.TAG_DATA_COMMIT: "d" * 64}
        )
        for miou in (0.5, 0.7)
    ]
    tracking.set_registered_model_alias("seg", "champion", versions[1].version)
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow.get_tracking_uri(), "MLFLOW_EXPERIMENT_NAME": "infer"}
    child = pty_process(
        [
            sys.executable,
            "steps/infer.py",
            *infer_args("models:/seg@champion", data_uri, tmp_path / "predictions", interactive="true"),
        ],
        cwd=PROJECT,
        env=env,
        timeout=180,
    )
    child.expect("Choose 1-2 (q to quit): ")
    # newest first, with its aliases, metric and data commit
    assert re.search(rf"1\s+2\s+@champion\s+best_val_miou=0\.7\s+{'d' * 12}", child.output), child.output
    assert re.search(rf"2\s+1\s+best_val_miou=0\.5\s+{'d' * 12}", child.output), child.output
    child.send("2\n")
    assert child.finish() == 0, child.output
    tags = last_infer_run(tracking).data.tags
    assert tags[lineage.TAG_MODEL_VERSION] == "1" and tags[lineage.TAG_INPUT_MODEL_URI] == "models:/seg/1"
    assert (tmp_path / "predictions" / "metrics.csv").is_file()


def test_interactive_infer_without_a_terminal_fails_at_once(data_uri, tmp_path):
    result = subprocess.run(
        [sys.executable, "steps/infer.py", "--interactive", "true"],
        cwd=PROJECT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "segmodels infer: error: interactive=true needs a terminal to read a choice from; pass model_uri=<uri> instead"
    ]


# -- 5. plain images: source= ------------------------------------------------------------------------------------


@pytest.fixture
def lakefs_env(lakefs_settings, monkeypatch, tracking) -> None:
    """The step's ``connect()`` finds the embedded server through the LAKECTL_* variables."""
    monkeypatch.setenv(versioning_settings.ENV_ENDPOINT, lakefs_settings.endpoint)
    monkeypatch.setenv(versioning_settings.ENV_ACCESS_KEY_ID, lakefs_settings.access_key_id)
    monkeypatch.setenv(versioning_settings.ENV_SECRET_ACCESS_KEY, lakefs_settings.secret_access_key)


def source_args(model_uri, source, output_dir: Path, **params) -> list[str]:
    params = {"model_uri": str(model_uri), "source": str(source), "output_dir": str(output_dir), **params}
    return [arg for name, value in params.items() for arg in (f"--{name}", str(value))] + ["batch_size=2"]


def run_source(model_uri, source, output_dir: Path, *extra: str, **params) -> Path:
    return infer.run(
        load_config(
            "infer", step_overrides("infer", source_args(model_uri, source, output_dir, **params) + list(extra))
        )
    )


def printed_params(message: str) -> list[str]:
    """The ``-P name=value`` words of an error's hint, as the step's command line takes them."""
    return [
        arg for name, value in re.findall(r"-P (\w[\w.]*)=(\S+?)[);]?(?=\s|$)", message) for arg in (f"--{name}", value)
    ]


def unlabelled_images(folder: Path) -> dict[str, tuple[int, int]]:
    """Plain photos-like images of three sizes and two formats, in nested folders; relative path -> (h, w)."""
    rng = np.random.default_rng(3)
    images = {
        "a.png": (40, 60),
        "b.jpg": (33, 47),
        "street/c.jpeg": (64, 48),
        "street/night/d.PNG": (40, 60),
        "street/night/e.JPG": (33, 47),
    }
    for relative, (height, width) in images.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        kind = "PNG" if path.suffix.lower() == ".png" else "JPEG"
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path, format=kind)
    return images


def test_a_folder_of_unlabelled_images_gets_a_mask_per_image_at_its_size(demo_model, lakefs_env, tracking, tmp_path):
    images = unlabelled_images(tmp_path / "photos")
    (tmp_path / "photos" / "notes.txt").write_text("not an image")
    (tmp_path / "photos" / ".hidden.png").write_bytes(b"skipped: hidden")
    out = run_source(demo_model, tmp_path / "photos", tmp_path / "predictions")
    names = {str(Path(relative).with_suffix("")) for relative in images}
    assert files(out) == (
        {f"masks/{n}.png" for n in names} | {f"overlays/{n}.png" for n in names} | {"index.csv", infer.MARKER_FILE}
    )
    for relative, (height, width) in images.items():
        name = str(Path(relative).with_suffix(""))
        mask = np.asarray(Image.open(out / "masks" / f"{name}.png"))
        assert mask.shape == (height, width) and mask.max() < len(DEMO_NAMES)
        assert np.asarray(Image.open(out / "overlays" / f"{name}.png")).shape == (height, width, 3)
    with open(out / "index.csv") as handle:
        index = {row["image"]: row for row in csv.DictReader(handle)}
    assert set(index) == set(images)
    assert index["street/night/e.JPG"]["mask"] == "masks/street/night/e.png"
    assert (int(index["b.jpg"]["height"]), int(index["b.jpg"]["width"])) == (33, 47)
    run = last_infer_run(tracking)
    assert run.data.metrics["num_images"] == 5 and "miou" not in run.data.metrics
    assert run.data.tags[infer.SOURCE_TAG] == str(tmp_path / "photos")


def test_source_predictions_are_committed_with_their_lineage(
    demo_model, lakefs, lakefs_env, repo_name, tracking, tmp_path
):
    images = unlabelled_images(tmp_path / "photos")
    out = run_source(
        demo_model, tmp_path / "photos", tmp_path / "predictions", f"lakefs.repo={repo_name}", commit_predictions="true"
    )
    run_id = last_infer_run(tracking).info.run_id
    uri = LakeFSUri.parse(last_infer_run(tracking).data.tags[lineage.TAG_PREDICTIONS_URI])
    assert (uri.repo, uri.path) == (repo_name, f"predictions/{run_id}")
    commit = lakefs.get_commit(repo_name, uri.ref)
    assert commit.metadata["source"] == str(tmp_path / "photos") and commit.metadata["mlflow_run_id"] == run_id
    assert commit.metadata["model_uri"] == str(demo_model)
    committed = {obj.path[len(uri.path) + 1 :] for obj in lakefs.list_objects(repo_name, uri.ref, uri.path + "/")}
    assert committed == files(out) - {infer.MARKER_FILE} and len(images) * 2 + 1 == len(committed)


def test_a_lakefs_source_is_pinned_and_its_predictions_branch_from_its_commit(
    demo_model, lakefs, lakefs_env, repo_name, tracking, tmp_path
):
    images = unlabelled_images(tmp_path / "photos")
    lakefs.ensure_repository(repo_name)
    uploaded = lakefs.commit_directory(repo_name, "main", tmp_path / "photos", "photos", "plain photos")
    out = run_source(
        demo_model, f"lakefs://{repo_name}/main/photos", tmp_path / "predictions", commit_predictions="true"
    )
    assert len(list((out / "masks").rglob("*.png"))) == len(images)
    run = last_infer_run(tracking)
    assert run.data.tags[infer.SOURCE_TAG] == f"lakefs://{repo_name}/{uploaded.ref}/photos", "pinned to the commit"
    predictions = LakeFSUri.parse(run.data.tags[lineage.TAG_PREDICTIONS_URI])
    assert predictions.repo == repo_name
    assert lakefs.get_commit(repo_name, predictions.ref).parents[0] == uploaded.ref


def test_refused_source_files_fail_in_one_line_and_its_hint_keeps_the_good_ones(
    demo_model, lakefs_env, tmp_path, capsys
):
    photos = tmp_path / "photos"
    images = unlabelled_images(photos)
    (photos / "broken.png").write_bytes(b"not a png at all")
    os.mkfifo(photos / "pipe.jpg")
    (tmp_path / "secret.png").write_bytes((photos / "a.png").read_bytes())
    (photos / "street" / "escape.png").symlink_to(tmp_path / "secret.png")
    (photos / "a.jpg").write_bytes((photos / "b.jpg").read_bytes())  # its mask would be a.png's
    out = tmp_path / "predictions"
    args = source_args(demo_model, photos, out)
    with pytest.raises(SystemExit) as exit_info:
        run_step_cli("infer", args)
    assert exit_info.value.code == 2
    [error] = capsys.readouterr().err.strip().splitlines()
    assert error.startswith(
        f"segmodels infer: error: source={photos}: 5 of 9 image file(s) refused (a.jpg: duplicate name"
    ), error
    assert error.endswith("; -P on_error=skip predicts the 4 others"), error
    full_list = Path(re.search(r"full list in (\S+\.csv)\)", error).group(1))
    with open(full_list) as handle:
        refused = {row["file"]: row["reason"] for row in csv.DictReader(handle)}
    assert set(refused) == {"a.jpg", "a.png", "broken.png", "pipe.jpg", "street/escape.png"}
    assert "a FIFO" in refused["pipe.jpg"] and "outside the source root" in refused["street/escape.png"]
    assert refused["broken.png"].startswith("unreadable image")
    assert not out.exists() and not list(tmp_path.glob(".predictions*"))

    run_step_cli("infer", args + printed_params(error))  # the hint as printed
    kept = {str(Path(relative).with_suffix("")) for relative in images} - {"a"}
    assert {p.relative_to(out / "masks").with_suffix("").as_posix() for p in (out / "masks").rglob("*.png")} == kept
    assert (out / "refused.csv").read_text() == full_list.read_text()


def test_a_too_large_image_is_refused_before_decoding(demo_model, lakefs_env, tmp_path):
    unlabelled_images(tmp_path / "photos")
    with pytest.raises(
        StepError,
        match=r"c\.jpeg: refused: image of 48x64 = 3072 pixels, above "
        r"data\.max_image_pixels=3000 \(refused before decoding\)",
    ):
        run_source(demo_model, tmp_path / "photos", tmp_path / "out", "data.max_image_pixels=3000")


def test_source_and_data_ref_together_are_one_line(demo_model, tmp_path, capsys):
    with pytest.raises(SystemExit):
        run_step_cli("infer", source_args(demo_model, tmp_path, tmp_path / "out", data_ref="main"))
    assert capsys.readouterr().err.strip().splitlines() == [
        f"segmodels infer: error: source={tmp_path} and data_ref=main both given; pass source to predict plain "
        f"images, or data_ref to predict a data set's split, not both"
    ]


def test_no_registered_model_says_what_to_do_and_the_hint_works_as_printed(
    demo_model, lakefs, lakefs_env, repo_name, tracking, tmp_path, capsys
):
    from segmodels.model_store import publish_model

    unlabelled_images(tmp_path / "photos")
    out = tmp_path / "predictions"
    args = source_args("models:/segmodels@champion", tmp_path / "photos", out)
    with pytest.raises(SystemExit):
        run_step_cli("infer", args)
    assert capsys.readouterr().err.strip().splitlines() == [
        "segmodels infer: error: model_uri=models:/segmodels@champion: no registered model 'segmodels' in the "
        "tracking store; train and register one first (mlflow run . -e main), or pass -P model_uri=<a model "
        "folder, runs:/<train run id>/model or lakefs:// URI>"
    ]

    lakefs.ensure_repository(repo_name)
    with mlflow.start_run(tags={lineage.TAG_STEP: "train"}) as train_run:  # a train run that made a model
        uri = publish_model(
            lakefs, demo_model, repo_name, "models", "models", train_run.info.run_id, metadata={}, source_ref="main"
        )
        mlflow.set_tag(lineage.TAG_MODEL_URI, str(uri))
    with mlflow.start_run(tags={lineage.TAG_STEP: "register", lineage.TAG_MODEL_URI: str(uri)}):
        pass  # newer, and naming the model too, but not a run register takes
    with pytest.raises(SystemExit):
        run_step_cli("infer", args)
    [error] = capsys.readouterr().err.strip().splitlines()
    run_id = train_run.info.run_id
    assert error == (
        f"segmodels infer: error: model_uri=models:/segmodels@champion: no registered model 'segmodels' in the "
        f"tracking store; register the newest train run's model first (mlflow run . -e register -P run_id={run_id} "
        f"-P model_name=segmodels -P alias=champion) or pass -P model_uri=runs:/{run_id}/model"
    )
    assert not out.exists()
    run_step_cli("infer", args + printed_params(error.split(" or pass ")[1]))  # the second hint as printed
    assert len(list((out / "masks").rglob("*.png"))) == 5


@pytest.mark.slow
def test_mlflow_run_infer_on_a_folder_reports_progress_and_no_warning_of_ours(demo_model, lakefs_settings, tmp_path):
    """The real ``mlflow run . -e infer -P source=...``: its log has a progress line with rate and ETA, and
    neither MLflow's type-hint warning about the wrapper's ``predict`` nor the cloudpickle one."""
    images = unlabelled_images(tmp_path / "photos")
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "SEGMODELS_HOME": str(tmp_path / "home"),
        "SEGMODELS_PROGRESS_SECONDS": "0.001",
        versioning_settings.ENV_ENDPOINT: lakefs_settings.endpoint,
        versioning_settings.ENV_ACCESS_KEY_ID: lakefs_settings.access_key_id,
        versioning_settings.ENV_SECRET_ACCESS_KEY: lakefs_settings.secret_access_key,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    out = tmp_path / "predictions"
    command = [
        "mlflow",
        "run",
        str(PROJECT),
        "-e",
        "infer",
        "--env-manager",
        "local",
        "-P",
        f"model_uri={demo_model}",
        "-P",
        f"source={tmp_path / 'photos'}",
        "-P",
        f"output_dir={out}",
    ]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    assert len(list((out / "masks").rglob("*.png"))) == len(images)
    assert re.search(r"infer: \d/5 images .*images/s", log), log[-4000:]
    assert "type hint" not in log and "cloudpickle" not in log.lower(), log[-4000:]
