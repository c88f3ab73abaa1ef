"""MLflow logs run artifacts to ``s3://<repo>/<branch>/...`` through the embedded server's S3 gateway (MLflow's own
S3 artifact repository, boto3, the lakeFS keys), and lakeFS' REST listing of the branch shows them."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest


@pytest.mark.slow  # ~7 s: MLflow's sqlite store migrations
def test_mlflow_s3_artifacts_through_the_gateway(lakefs, lakefs_settings, repo_name, tmp_path, monkeypatch):
    lakefs.ensure_repository(repo_name)
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", lakefs_settings.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", lakefs_settings.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", lakefs_settings.secret_access_key)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = mlflow.create_experiment("s3-gateway", artifact_location=f"s3://{repo_name}/main/mlflow")
    (tmp_path / "notes.txt").write_text("hello through s3")
    with mlflow.start_run(experiment_id=experiment) as run:
        mlflow.log_artifact(str(tmp_path / "notes.txt"), artifact_path="docs")
    names = [info.path for info in mlflow.MlflowClient().list_artifacts(run.info.run_id, "docs")]
    assert names == ["docs/notes.txt"]
    local = mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id, artifact_path="docs/notes.txt", dst_path=str(tmp_path / "back")
    )
    assert Path(local).read_text() == "hello through s3"
    listed = [obj.path for obj in lakefs.list_objects(repo_name, "main", prefix="mlflow/")]
    assert listed == [f"mlflow/{run.info.run_id}/artifacts/docs/notes.txt"]
