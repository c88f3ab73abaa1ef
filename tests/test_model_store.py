"""Model packages in lakeFS: one atomic commit per train run, read back pinned to that commit."""

from __future__ import annotations

from segmodels.model_store import publish_model
from segmodels.pipeline.refs import pin_data_ref
from segmodels.versioning import LakeFSUri


def make_package(folder, weights: bytes):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.pt").write_bytes(weights)
    (folder / "model.yaml").write_text("name: unet\nnum_classes: 2\n")
    return folder


def test_publish_commits_the_model_folder_readable_at_that_commit(lakefs, repo_name, tmp_path):
    lakefs.ensure_repository(repo_name)
    first = publish_model(
        lakefs,
        make_package(tmp_path / "v1", b"weights-1"),
        repo_name,
        "models",
        "models",
        "run1",
        metadata={"data_commit": "abc"},
    )
    assert first == LakeFSUri(repo_name, first.ref, "models/run1")
    commit = lakefs.get_commit(repo_name, first.ref)
    assert commit.metadata["mlflow_run_id"] == "run1" and commit.metadata["data_commit"] == "abc"

    second = publish_model(
        lakefs, make_package(tmp_path / "v2", b"weights-2"), repo_name, "models", "models", "run2", metadata={}
    )
    assert second.ref != first.ref
    for uri, weights in ((first, b"weights-1"), (second, b"weights-2")):
        assert (lakefs.download_prefix(uri.repo, uri.ref, uri.path) / "model.pt").read_bytes() == weights
    assert lakefs.resolve_commit(repo_name, "main") != second.ref  # models live on their own branch


def test_pin_data_ref_resolves_branches_uris_and_commit_ids(lakefs, repo_name, tmp_path):
    lakefs.ensure_repository(repo_name)
    data = tmp_path / "data"
    data.mkdir()
    (data / "dataset.yaml").write_text("name: x\n")
    with lakefs.atomic_write(repo_name, "main", "data") as write:
        lakefs.upload_directory(repo_name, write.branch, data, prefix="data")
    head = write.commit_id
    expected = LakeFSUri(repo_name, head, "data")
    assert pin_data_ref(lakefs, "", repo_name, "main", "data") == expected
    assert pin_data_ref(lakefs, head, repo_name, "main", "data") == expected
    assert pin_data_ref(lakefs, f"lakefs://{repo_name}/main/data", "other", "x", "y") == expected
    assert pin_data_ref(lakefs, f"lakefs://{repo_name}/main", "other", "x", "data") == expected
