"""dataset_store.ingest into the embedded lakeFS: atomic, idempotent and incremental commits, refusal of bad data,
lineage."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
from PIL import Image
from test_data_sources import ingest_into, make_coco_source, make_folder_source, make_labelme_source, make_voc_source

from segmodels.config import load_config
from segmodels.data import DataValidationError, SegmentationDataset, generate_demo_dataset
from segmodels.dataset_store import fetch_dataset

PROJECT = Path(__file__).resolve().parents[1]
SOURCES = {
    "folder": lambda root: make_folder_source(root, count=8),
    "voc": lambda root: make_voc_source(root)[0],
    "coco": lambda root: make_coco_source(root)[0],
    "labelme": lambda root: make_labelme_source(root)[0],
}


@pytest.fixture
def repo(lakefs, repo_name):
    lakefs.ensure_repository(repo_name, default_branch="main")
    return repo_name


def train_one_epoch(data_root: Path, work_dir: Path):
    """One epoch of the project's trainer (a U-Net with a narrow decoder, CPU) on a prepared data set (64 px: at 32 px
    the encoder's last stage is 1x1, and batch norm refuses a last batch of one image)."""
    from segmodels.training import train

    overrides = [
        "trainer.epochs=1",
        "trainer.batch_size=2",
        "trainer.num_workers=0",
        "trainer.persistent_workers=false",
        "trainer.progress_bar=false",
        "trainer.device=cpu",
        "transforms.image_size=64",
        "model.decoder_channels=[16,16,16,8,8]",
    ]
    cfg = load_config("train", overrides)
    return train(cfg, data_root, work_dir)


@pytest.mark.parametrize("fmt", sorted(SOURCES))
def test_ingest_each_format_then_train_one_epoch(fmt, lakefs, repo, tmp_path):
    source = SOURCES[fmt](tmp_path / "source")
    result = ingest_into(
        lakefs,
        repo,
        source,
        tmp_path / "work",
        "split_seed=0",
        metadata={"mlflow_run_id": "run123", "git_commit": "abc"},
    )
    assert result.changed and result.uploaded_files > 0
    assert result.uri == f"lakefs://{repo}/{result.commit_id}/data"
    assert lakefs.resolve_commit(repo, "main") == result.commit_id
    metadata = lakefs.get_commit(repo, result.commit_id).metadata
    assert metadata["mlflow_run_id"] == "run123" and metadata["git_commit"] == "abc"
    assert metadata["source"] == str(source) and metadata["format"] == fmt
    root = fetch_dataset(lakefs, result.uri)
    assert (root / "dataset.yaml").is_file() and (root / "manifest.csv").is_file()
    if not len(SegmentationDataset(root, "val")):  # sources that bring their own splits may have no val
        pytest.skip("no validation split")  # never for these sources; kept explicit
    trained = train_one_epoch(root, tmp_path / "train")
    assert len(trained.history) == 1 and 0.0 <= trained.final_metrics["val_miou"] <= 1.0


def test_reingest_unchanged_makes_no_commit_and_a_change_uploads_only_it(lakefs, repo, tmp_path):
    source = generate_demo_dataset(tmp_path / "demo", num_images=20, image_size=32)
    first = ingest_into(lakefs, repo, source, tmp_path / "work")
    assert first.changed and first.uploaded_files == 2 * 20 + 2
    again = ingest_into(lakefs, repo, source, tmp_path / "work")
    assert not again.changed and again.uploaded_files == 0 and again.commit_id == first.commit_id
    assert "data unchanged" in again.summary()
    # a fresh work dir (nothing cached locally) still uploads nothing: the output is byte-stable
    fresh = ingest_into(lakefs, repo, source, tmp_path / "fresh")
    assert not fresh.changed and fresh.uploaded_files == 0
    mask_path = source / "masks" / "demo_00007.png"
    mask = np.asarray(Image.open(mask_path)).copy()
    mask[:3, :3] = 3
    Image.fromarray(mask).save(mask_path)
    changed = ingest_into(lakefs, repo, source, tmp_path / "work")
    assert changed.changed and changed.commit_id != first.commit_id
    assert changed.uploaded_files == 3  # that mask, the manifest listing its checksum, dataset.yaml (class stats)
    assert lakefs.get_commit(repo, changed.commit_id).parents[0] == first.commit_id


def break_source(source: Path, fault: str) -> str:
    """Damage one file of a folder source; return the file name the report must name."""
    if fault == "corrupt image":
        (source / "images" / "img1.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00garbage")
        return "img1.png"
    if fault == "missing mask":
        (source / "masks" / "img2.png").unlink()
        return "img2.png"
    if fault == "size mismatch":
        Image.fromarray(np.zeros((5, 7), np.uint8)).save(source / "masks" / "img3.png")
        return "img3.png"
    mask = np.asarray(Image.open(source / "masks" / "img4.png")).copy()
    mask[0, 0] = 7  # classes.txt declares 3 classes
    Image.fromarray(mask).save(source / "masks" / "img4.png")
    return "img4.png"


FAULTS = {
    "corrupt image": "corrupt or unreadable image",
    "missing mask": "missing mask",
    "size mismatch": "size mismatch",
    "class id out of range": "class ids outside the declared classes: [7]",
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_bad_data_is_refused_and_the_branch_is_unchanged(fault, lakefs, repo, tmp_path):
    source = make_folder_source(tmp_path / "source", count=8)
    head = ingest_into(lakefs, repo, source, tmp_path / "work").commit_id
    bad_file = break_source(source, fault)
    with pytest.raises(DataValidationError) as caught:
        ingest_into(lakefs, repo, source, tmp_path / "work")
    [issue] = caught.value.report.issues
    assert issue.file.endswith(bad_file) and FAULTS[fault] in issue.reason
    assert bad_file in str(caught.value) and FAULTS[fault] in str(caught.value)
    assert lakefs.resolve_commit(repo, "main") == head
    assert not lakefs.has_uncommitted_changes(repo, "main")


class FailingUpload:
    """A LakeFS client whose upload stops with an error after writing part of the data set."""

    def __init__(self, lakefs):
        self._lakefs = lakefs

    def __getattr__(self, name):
        return getattr(self._lakefs, name)

    def upload_directory(self, repo, branch, local_dir, prefix="", **kwargs):
        some = sorted(Path(local_dir).rglob("*.png"))[:3]
        for path in some:
            self._lakefs.upload_file(repo, branch, f"{prefix}/{path.relative_to(local_dir).as_posix()}", path)
        raise ConnectionError("network went away mid-upload")


def test_failure_mid_upload_leaves_the_branch_as_it_was(lakefs, repo, tmp_path):
    first = generate_demo_dataset(tmp_path / "a", num_images=6, image_size=32, seed=1)
    head = ingest_into(lakefs, repo, first, tmp_path / "work").commit_id
    before = sorted(obj.path for obj in lakefs.list_objects(repo, "main", "data/"))
    second = generate_demo_dataset(tmp_path / "b", num_images=6, image_size=32, seed=2)
    with pytest.raises(ConnectionError):
        ingest_into(FailingUpload(lakefs), repo, second, tmp_path / "work")
    assert lakefs.resolve_commit(repo, "main") == head
    assert sorted(obj.path for obj in lakefs.list_objects(repo, "main", "data/")) == before


def test_skip_policy_and_mlflow_lineage(lakefs, repo, tmp_path, new_sqlite_store):
    from mlflow.tracking import MlflowClient

    from segmodels.tracking.dataset import log_ingest

    source = make_folder_source(tmp_path / "source", count=8)
    bad = break_source(source, "size mismatch")
    mlflow.set_tracking_uri(new_sqlite_store(tmp_path / "mlflow.db"))
    with mlflow.start_run() as run:
        result = ingest_into(
            lakefs, repo, source, tmp_path / "work", "on_error=skip", metadata={"mlflow_run_id": run.info.run_id}
        )
        log_ingest(result)
    client = MlflowClient()
    artifacts = {item.path for item in client.list_artifacts(run.info.run_id, "data")}
    assert {
        "data/class_frequencies.json",
        "data/image_sizes.json",
        "data/statistics.png",
        "data/validation_report.csv",
        "data/dataset.yaml",
    } <= artifacts
    report = Path(client.download_artifacts(run.info.run_id, "data/validation_report.csv", str(tmp_path))).read_text()
    assert bad in report and "size mismatch" in report
    [dataset_input] = client.get_run(run.info.run_id).inputs.dataset_inputs
    assert dataset_input.dataset.source_type == "lakefs"
    assert result.uri in dataset_input.dataset.source and dataset_input.dataset.digest == result.commit_id[:16]
    assert dataset_input.tags[0].value == "ingest"
    assert result.stats.num_images == 7 and len(result.report) == 1
    assert lakefs.get_commit(repo, result.commit_id).metadata["mlflow_run_id"] == run.info.run_id
    manifest = lakefs.download_prefix(repo, result.commit_id, "data") / "manifest.csv"
    rows = list(csv.DictReader(manifest.read_text().splitlines()))
    assert not any(bad.split(".")[0] in row["file"] for row in rows)


def lakectl_environment(server) -> dict[str, str]:
    """The ``LAKECTL_*`` variables that point a step at ``server``."""
    return {
        "LAKECTL_SERVER_ENDPOINT_URL": server.endpoint,
        "LAKECTL_CREDENTIALS_ACCESS_KEY_ID": server.access_key_id,
        "LAKECTL_CREDENTIALS_SECRET_ACCESS_KEY": server.secret_access_key,
    }


def test_ingest_step_names_the_source_as_given(lakefs_server, lakefs, repo, tmp_path, monkeypatch, new_sqlite_store):
    """`source=demo` is committed as coming `from demo`, not from the temp folder the demo was generated in."""
    from segmodels.pipeline.ingest import run

    for key, value in lakectl_environment(lakefs_server).items():
        monkeypatch.setenv(key, value)
    mlflow.set_tracking_uri(new_sqlite_store(tmp_path / "mlflow.db"))
    cfg = load_config("ingest", ["source=demo", "demo.num_images=8", "demo.image_size=32", f"lakefs.repo={repo}"])
    commit = lakefs.get_commit(repo, run(cfg))
    assert commit.message == "ingest demo: 8 images from demo"
    assert commit.metadata["source"] == "demo"


def test_ingest_step_exits_nonzero_naming_every_bad_file(lakefs_server, lakefs, repo, tmp_path, new_sqlite_store):
    """The user's view: `steps/ingest.py source=...` fails with status 2 naming each file and reason."""
    source = make_folder_source(tmp_path / "source", count=8)
    head = ingest_into(lakefs, repo, source, tmp_path / "work").commit_id
    bad_files = {fault: break_source(source, fault) for fault in FAULTS}
    env = {key: value for key, value in os.environ.items() if not key.startswith(("LAKECTL_", "MLFLOW_"))}
    env.update(lakectl_environment(lakefs_server))
    env.update(
        {
            "MLFLOW_TRACKING_URI": new_sqlite_store(tmp_path / "mlflow.db"),
            "SEGMODELS_HOME": str(tmp_path / "home"),
        }
    )
    completed = subprocess.run(
        [sys.executable, "steps/ingest.py", f"source={source}", f"lakefs.repo={repo}"],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode != 0
    for fault, bad_file in bad_files.items():
        assert f"{bad_file}: {FAULTS[fault]}" in completed.stderr
    assert lakefs.resolve_commit(repo, "main") == head
