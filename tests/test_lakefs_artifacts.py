"""The ``lakefs://`` MLflow artifact repository, against the embedded lakeFS server and real MLflow APIs."""

from __future__ import annotations

from pathlib import Path

import lakefs_sdk
import mlflow
import pytest
from mlflow.exceptions import MlflowException
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

from segmodels.lakefs_artifacts import LakeFSArtifactRepository
from segmodels.versioning import ephemeral


@pytest.fixture
def lakectl_env(lakefs_settings, monkeypatch, lakefs, repo_name):
    """lakectl's variables point at the embedded server (as a user's would); the repository exists, with a
    branch ``artifacts``."""
    monkeypatch.setenv("LAKECTL_SERVER_ENDPOINT_URL", lakefs_settings.endpoint)
    monkeypatch.setenv("LAKECTL_CREDENTIALS_ACCESS_KEY_ID", lakefs_settings.access_key_id)
    monkeypatch.setenv("LAKECTL_CREDENTIALS_SECRET_ACCESS_KEY", lakefs_settings.secret_access_key)
    lakefs.ensure_repository(repo_name)
    lakefs.ensure_branch(repo_name, "artifacts")
    return lakefs_settings


def make_tree(root):
    (root / "nested" / "deeper").mkdir(parents=True)
    (root / "a.txt").write_text("a")
    (root / "nested" / "b.txt").write_text("bb")
    (root / "nested" / "deeper" / "c.bin").write_bytes(b"\x00\x01\x02")
    return root


def listing(repo, path=None):
    return [(info.path, info.is_dir, info.file_size) for info in repo.list_artifacts(path)]


def test_log_list_and_download_through_branch_and_pinned_commit(lakectl_env, lakefs, repo_name, tmp_path):
    repo = get_artifact_repository(f"lakefs://{repo_name}/artifacts/runs/r1")
    assert isinstance(repo, LakeFSArtifactRepository)
    head = lakefs.resolve_commit(repo_name, "artifacts")

    single = tmp_path / "params.json"
    single.write_text('{"lr": 0.1}')
    repo.log_artifact(single)
    first = repo.last_commit_id
    assert first and first != head and lakefs.resolve_commit(repo_name, "artifacts") == first
    assert lakefs.get_commit(repo_name, first).parents  # one merge commit on the branch

    repo.log_artifacts(make_tree(tmp_path / "tree"), artifact_path="tree")
    second = repo.last_commit_id
    assert second != first and lakefs.resolve_commit(repo_name, "artifacts") == second
    assert repo.pinned_uri() == f"lakefs://{repo_name}/{second}/runs/r1"
    assert repo.pinned_uri("tree/a.txt") == f"lakefs://{repo_name}/{second}/runs/r1/tree/a.txt"
    assert not [
        b for b in lakefs.sdk.branches_api.list_branches(repo_name).results if b.id.startswith(ephemeral.PREFIX)
    ], "no ephemeral branch left"

    assert listing(repo) == [("params.json", False, 11), ("tree", True, None)]
    assert listing(repo, "tree") == [("tree/a.txt", False, 1), ("tree/nested", True, None)]
    assert listing(repo, "tree/nested/") == [("tree/nested/b.txt", False, 2), ("tree/nested/deeper", True, None)]
    assert listing(repo, "tree/a.txt") == [] and listing(repo, "missing") == []

    out = tmp_path / "via-branch"
    out.mkdir()
    local = repo.download_artifacts("tree", dst_path=str(out))
    assert local == str(out / "tree")
    assert (out / "tree" / "nested" / "deeper" / "c.bin").read_bytes() == b"\x00\x01\x02"
    assert (out / "tree" / "a.txt").read_text() == "a"
    single_file = repo.download_artifacts("tree/nested/b.txt", dst_path=str(out))
    assert Path(single_file).read_text() == "bb"

    # the first commit, pinned, has the file and not the tree; the branch moved on meanwhile
    pinned = get_artifact_repository(f"lakefs://{repo_name}/{first}/runs/r1")
    assert listing(pinned) == [("params.json", False, 11)]
    root = pinned.download_artifacts("")
    assert sorted(p.name for p in Path(root).iterdir()) == ["params.json"]
    with pytest.raises(MlflowException, match="No such artifact"):
        pinned.download_artifacts("tree")

    # mlflow's own entry point reads a pinned folder and a pinned file
    folder = mlflow.artifacts.download_artifacts(
        artifact_uri=repo.pinned_uri("tree/nested"), dst_path=str(tmp_path / "mlflow")
    )
    assert Path(folder, "b.txt").read_text() == "bb"
    one = mlflow.artifacts.download_artifacts(artifact_uri=f"lakefs://{repo_name}/artifacts/runs/r1/params.json")
    assert Path(one).read_text() == '{"lr": 0.1}'


def test_writes_to_a_commit_id_or_tag_are_refused_and_history_is_kept(lakectl_env, lakefs, repo_name, tmp_path):
    branch = get_artifact_repository(f"lakefs://{repo_name}/artifacts/out")
    make_tree(tmp_path / "tree")
    branch.log_artifacts(tmp_path / "tree")
    commit = branch.last_commit_id
    lakefs.sdk.tags_api.create_tag(repo_name, lakefs_sdk.TagCreation(id="v1", ref=commit))

    for ref in (commit, "v1"):
        pinned = get_artifact_repository(f"lakefs://{repo_name}/{ref}/out")
        assert listing(pinned, "nested/deeper") == [("nested/deeper/c.bin", False, 3)]  # reads work
        with pytest.raises(MlflowException, match="tag or commit id.*immutable") as error:
            pinned.log_artifact(tmp_path / "tree" / "a.txt")
        assert lakectl_env.secret_access_key not in str(error.value)
        with pytest.raises(MlflowException, match="tag or commit id"):
            pinned.delete_artifacts("nested")
    with pytest.raises(MlflowException, match="no ref 'nope'"):
        get_artifact_repository(f"lakefs://{repo_name}/nope/out").log_artifacts(tmp_path / "tree")
    assert lakefs.resolve_commit(repo_name, "artifacts") == commit

    # delete on the branch is one commit at the head; the pinned commit keeps the files
    branch.delete_artifacts("nested")
    assert branch.last_commit_id != commit
    assert listing(branch) == [("a.txt", False, 1)]
    assert listing(get_artifact_repository(f"lakefs://{repo_name}/{commit}/out"), "nested") != []


def test_a_pyfunc_model_logged_to_lakefs_loads_back_from_its_pinned_uri(lakectl_env, repo_name, tmp_path):
    class AddOne(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input):
            return [x + 1 for x in model_input]

    model_dir = tmp_path / "model"
    mlflow.pyfunc.save_model(str(model_dir), python_model=AddOne(), pip_requirements=[])
    repo = get_artifact_repository(f"lakefs://{repo_name}/artifacts/models")
    repo.log_artifacts(model_dir, artifact_path="add-one")
    uri = repo.pinned_uri("add-one")
    assert uri.startswith(f"lakefs://{repo_name}/{repo.last_commit_id}/")
    model = mlflow.pyfunc.load_model(uri)
    assert list(model.predict([1, 2])) == [2, 3]


def test_an_experiment_with_a_lakefs_artifact_location_logs_run_artifacts_there(
    lakectl_env, lakefs, repo_name, tmp_path, new_sqlite_store
):
    mlflow.set_tracking_uri(new_sqlite_store(tmp_path / "mlflow.db"))
    experiment = mlflow.create_experiment(
        "lakefs-artifacts", artifact_location=f"lakefs://{repo_name}/artifacts/mlflow"
    )
    (tmp_path / "notes.txt").write_text("hello")
    with mlflow.start_run(experiment_id=experiment) as run:
        mlflow.log_artifact(str(tmp_path / "notes.txt"), artifact_path="docs")
    assert run.info.artifact_uri == f"lakefs://{repo_name}/artifacts/mlflow/{run.info.run_id}/artifacts"
    names = [info.path for info in mlflow.MlflowClient().list_artifacts(run.info.run_id, "docs")]
    assert names == ["docs/notes.txt"]
    local = mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id, artifact_path="docs/notes.txt", dst_path=str(tmp_path / "back")
    )
    assert Path(local).read_text() == "hello"
    objects = [obj.path for obj in lakefs.list_objects(repo_name, "artifacts", "mlflow/")]
    assert objects == [f"mlflow/{run.info.run_id}/artifacts/docs/notes.txt"]
