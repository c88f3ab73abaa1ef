"""Step caching through the real ``mlflow run . -e main`` chain: an unchanged rerun reuses every step, a change
reruns exactly the steps downstream of it, ``-P force=<step>`` reruns that step and what follows."""

from __future__ import annotations

import subprocess

import mlflow
import pytest
from mlflow.tracking import MlflowClient
from test_e2e_chain import PROJECT, Chain

from segmodels.data.demo import generate_demo_dataset
from segmodels.tracking import lineage

pytestmark = pytest.mark.slow
EXPERIMENT = "e2e"
TINY = {
    "epochs": 1,
    "image_size": 32,
    "batch_size": 8,
    "overrides": "trainer.num_workers=0",
    "reuse_dirty": "true",
}  # a work tree being edited still reuses (its diff is in the key)


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    chain = Chain(root)
    chain.source = generate_demo_dataset(root / "source", num_images=24, image_size=32, seed=5)
    mlflow.set_tracking_uri(chain.env["MLFLOW_TRACKING_URI"])
    MlflowClient().create_experiment(EXPERIMENT, artifact_location=(root / "artifacts").as_uri())
    yield chain
    chain.stop_server()


@pytest.fixture(autouse=True)
def store(sandbox):
    mlflow.set_tracking_uri(sandbox.env["MLFLOW_TRACKING_URI"])


def main(sandbox, **params) -> dict[str, mlflow.entities.Run]:
    """Run main with the tiny settings; its children by step."""
    result = sandbox.mlflow_run(
        "main", source=sandbox.source, output_dir=sandbox.root / "predictions", **{**TINY, **params}
    )
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient()
    experiment = client.get_experiment_by_name(EXPERIMENT).experiment_id
    parent = client.search_runs(
        [experiment], f"tags.`{lineage.TAG_STEP}` = 'main'", max_results=1, order_by=["attributes.start_time DESC"]
    )[0]
    children = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    return {"parent": parent, **{run.data.tags[lineage.TAG_STEP]: run for run in children}}


def reused(runs) -> set[str]:
    return {step for step, run in runs.items() if lineage.TAG_REUSED_RUN in run.data.tags}


def state(sandbox) -> tuple:
    """lakeFS heads of the data and model branches, and the registered versions."""
    sdk = sandbox.lakefs_client()
    heads = tuple(
        sdk.refs_api.log_commits("segmodels", branch, amount=1).results[0].id for branch in ("main", "models")
    )
    return heads, len(MlflowClient().search_model_versions("name='segmodels'"))


def test_unchanged_main_reuses_every_step_and_changes_rerun_what_follows(sandbox):
    first = main(sandbox)
    assert reused(first) == set()
    before = state(sandbox)

    second = main(sandbox)
    assert reused(second) == {"ingest", "train", "register", "infer"}
    for step in ("ingest", "train", "register", "infer"):  # tagged with the run that did the work, same outputs
        tags = second[step].data.tags
        assert tags[lineage.TAG_REUSED_RUN] == first[step].info.run_id
        assert tags[lineage.TAG_CACHE_KEY] == first[step].data.tags[lineage.TAG_CACHE_KEY]
        assert second[step].data.params == first[step].data.params
    assert second["train"].data.tags[lineage.TAG_MODEL_URI] == first["train"].data.tags[lineage.TAG_MODEL_URI]
    assert state(sandbox) == before, "no new lakeFS commit, no new model version"
    report = MlflowClient().download_artifacts(second["parent"].info.run_id, "report.md")
    with open(report) as file:
        text = file.read()
    assert text.count("| reused ") == 4 and first["train"].info.run_id[:8] in text
    assert second["train"].info.run_id in text

    only_infer = main(sandbox, **{"infer.split": "val"})  # a param of the last step: only it reruns
    assert reused(only_infer) == {"ingest", "train", "register"}

    forced = main(sandbox, force="train")
    assert reused(forced) == {"ingest"}
    assert forced["register"].data.params["run_id"] == forced["train"].info.run_id


def test_new_data_reruns_every_step_after_ingest(sandbox):
    main(sandbox)  # whatever the state, a main that leaves every step cached
    generate_demo_dataset(sandbox.source, num_images=28, image_size=32, seed=5)  # four more images
    changed = main(sandbox)
    assert reused(changed) == set()
    assert changed["train"].data.params["data_commit"] == changed["ingest"].data.tags[lineage.TAG_DATA_COMMIT]


def test_two_pipelines_at_once_on_one_repository_both_finish(tmp_path_factory):
    root = tmp_path_factory.mktemp("concurrent")
    chain = Chain(root)
    # the store exists before both start: two processes creating one new sqlite store race in MLflow's own
    # schema migration (alembic), whatever they run
    mlflow.set_tracking_uri(chain.env["MLFLOW_TRACKING_URI"])
    MlflowClient().create_experiment(EXPERIMENT, artifact_location=(root / "artifacts").as_uri())
    try:
        processes = []
        for name in ("alpha", "beta"):
            source = generate_demo_dataset(root / f"source-{name}", num_images=16, image_size=32, seed=len(name))
            command = ["mlflow", "run", str(PROJECT), "-e", "main", "--env-manager", "local"]
            for key, value in {
                **TINY,
                "source": source,
                "branch": f"data-{name}",
                "model_name": f"seg-{name}",
                "output_dir": root / f"predictions-{name}",
            }.items():
                command += ["-P", f"{key}={value}"]
            processes.append(
                subprocess.Popen(command, env=chain.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            )
        outputs = [process.communicate(timeout=1500)[0] for process in processes]
        assert [process.returncode for process in processes] == [0, 0], "\n".join(o[-2000:] for o in outputs)
        client = MlflowClient()
        sdk = chain.lakefs_client()
        for name in ("alpha", "beta"):
            version = client.get_model_version_by_alias(f"seg-{name}", "champion")
            data_commit = version.tags[lineage.TAG_DATA_COMMIT]
            head = sdk.refs_api.log_commits("segmodels", f"data-{name}", amount=1).results[0].id
            assert data_commit == head, "each pipeline trained on its own branch's data"
            assert (root / f"predictions-{name}" / "metrics.csv").is_file()
    finally:
        chain.stop_server()
