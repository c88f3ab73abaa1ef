"""``segmodels lineage``: the chain of a model version, a data or model commit and a run, read from a real sqlite
MLflow store holding runs and versions shaped like the steps' (no lakeFS: made-up commit ids)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from segmodels.cli import main
from segmodels.pipeline.cache import record_reuse
from segmodels.tracking import lineage, lineage_graph
from segmodels.tracking.lineage_graph import format_text

DATA, OTHER_DATA = "d1" * 32, "d1" * 4 + "e2" * 28  # sharing an 8-digit prefix
MODELS = ("a1" * 32, "a2" * 32, "a3" * 32)
GIT_INGEST, GIT_TRAIN = "1" * 40, "2" * 40


def make_run(
    client: MlflowClient,
    experiment_id: str,
    step: str,
    tags: dict,
    params: dict | None = None,
    metrics: dict | None = None,
) -> str:
    run = client.create_run(experiment_id, tags={lineage.TAG_STEP: step, **tags})
    for key, value in (params or {}).items():
        client.log_param(run.info.run_id, key, value)
    for key, value in (metrics or {}).items():
        client.log_metric(run.info.run_id, key, value)
    client.set_terminated(run.info.run_id)
    return run.info.run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Two ingests (two data commits), three train runs (two on DATA, under a main run), versions 1-3 of
    ``seg`` (2 @champion), a register run and an infer run of version 2."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('lineage') / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("lineage")
    ingests = {}
    for commit, source in ((DATA, "https://user:secret@example.com/cells.zip"), (OTHER_DATA, "demo")):
        ingests[commit] = make_run(
            client,
            experiment,
            "ingest",
            {
                lineage.TAG_LAKEFS_REPO: "repo",
                lineage.TAG_DATA_COMMIT: commit,
                lineage.TAG_DATA_URI: f"lakefs://repo/{commit}/data",
                lineage.TAG_GIT_COMMIT: GIT_INGEST,
                lineage.TAG_GIT_DIRTY: "false",
            },
            params={"source": source},
        )
    main_run = make_run(client, experiment, "main", {})
    trains, versions = [], []
    client.create_registered_model("seg")
    for index, (commit, model_commit) in enumerate(zip((DATA, DATA, OTHER_DATA), MODELS)):
        run_id = client.create_run(experiment).info.run_id
        model_uri = f"lakefs://repo/{model_commit}/models/{run_id}"
        tags = {
            lineage.TAG_STEP: "train",
            lineage.TAG_LAKEFS_REPO: "repo",
            lineage.TAG_DATA_COMMIT: commit,
            lineage.TAG_DATA_URI: f"lakefs://repo/{commit}/data",
            lineage.TAG_MODEL_COMMIT: model_commit,
            lineage.TAG_MODEL_URI: model_uri,
            lineage.TAG_GIT_COMMIT: GIT_TRAIN,
            lineage.TAG_GIT_DIRTY: "true",
            lineage.TAG_CONFIG_HASH: "c" * 64,
            "segmodels.logged_model_id": f"m-{index}",
        }
        if index == 1:
            tags["mlflow.parentRunId"] = main_run
        for key, value in tags.items():
            client.set_tag(run_id, key, value)
        client.log_metric(run_id, "best_val_miou", 0.8 + index / 100)
        for key, value in (("best_epoch", 3), ("best_lr", 0.001), ("best_train_images_per_s", 250.0)):
            client.log_metric(run_id, key, value)  # as train steps before 1-based best_epoch logged them
        client.set_terminated(run_id)
        version_tags = {key: tags[key] for key in lineage.LINEAGE_TAGS}
        version_tags.update({lineage.TAG_TRAIN_RUN: run_id, "best_val_miou": str(0.8 + index / 100)})
        version = client.create_model_version("seg", source=model_uri, run_id=run_id, tags=version_tags)
        trains.append(run_id)
        versions.append(version.version)
    client.set_registered_model_alias("seg", "previous", versions[0])
    client.set_registered_model_alias("seg", "champion", versions[1])
    client.set_registered_model_alias("seg", "challenger", versions[2])
    register = make_run(
        client,
        experiment,
        "register",
        {
            lineage.TAG_TRAIN_RUN: trains[1],
            lineage.TAG_MODEL_NAME: "seg",
            lineage.TAG_MODEL_VERSION: versions[1],
            "segmodels.register_outcome": "champion",
        },
    )
    rerun = make_run(client, experiment, "main", {})  # main ran again and reused ingest, train 1 and register
    reuse_ingest, reuse, reuse_register = (
        record_reuse(client, rerun, experiment, client.get_run(run_id), "key").info.run_id
        for run_id in (ingests[DATA], trains[1], register)
    )
    infer = make_run(
        client,
        experiment,
        "infer",
        {lineage.TAG_DATA_COMMIT: DATA, lineage.TAG_LAKEFS_REPO: "repo"},
        params={"model_uri": "models:/seg/2"},
        metrics={"miou": 0.77},
    )
    return SimpleNamespace(
        uri=uri,
        ingests=ingests,
        trains=trains,
        versions=versions,
        main=main_run,
        register=register,
        infer=infer,
        reuse=reuse,
        reuse_ingest=reuse_ingest,
        reuse_register=reuse_register,
    )


@pytest.fixture
def tracking(store):
    mlflow.set_tracking_uri(store.uri)
    return store


def lineage_of(capsys, *args: str) -> str:
    main(["lineage", *args])
    captured = capsys.readouterr()
    assert captured.err == ""
    return captured.out


def lineage_json(capsys, *args: str) -> dict:
    return json.loads(lineage_of(capsys, *args, "--json"))


def fails(capsys, ref: str) -> str:
    with pytest.raises(SystemExit) as exited:
        main(["lineage", ref])
    assert exited.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert captured.err.startswith("segmodels lineage: error: ")
    return captured.err


def test_champion_text_walks_back_to_data_commit_ingest_run_and_source(tracking, capsys):
    text = lineage_of(capsys, "models:/seg@champion")
    for expected in (
        DATA,
        tracking.ingests[DATA],
        "https://***@example.com/cells.zip",
        GIT_INGEST,
        GIT_TRAIN,
        MODELS[1],
        tracking.trains[1],
        "seg/2 @champion",
        tracking.register,
        tracking.infer,
    ):
        assert expected in text
    assert "secret" not in text
    assert OTHER_DATA not in text and tracking.trains[2] not in text


def test_data_commit_lists_every_train_run_and_version_made_from_it(tracking, capsys):
    text = lineage_of(capsys, f"lakefs://repo/{DATA}/data")
    for expected in (
        tracking.ingests[DATA],
        tracking.trains[0],
        tracking.trains[1],
        "seg/1 @previous",
        "seg/2 @champion",
        tracking.infer,
    ):
        assert expected in text
    assert tracking.trains[2] not in text and "seg/3" not in text and MODELS[2] not in text


def test_json_holds_the_same(tracking, capsys):
    doc = lineage_json(capsys, "models:/seg@champion")
    assert doc["kind"] == "model_version" and list(doc) == list(lineage_graph.KEYS)
    assert doc["model_version"]["version"] == "2" and doc["model_version"]["aliases"] == ["champion"]
    assert doc["train_run"]["run_id"] == tracking.trains[1] and doc["train_run"]["parent_run_id"] == tracking.main
    assert doc["model"]["commit"] == MODELS[1] and doc["data"]["commit"] == DATA
    assert [run["run_id"] for run in doc["ingest_runs"]] == [tracking.ingests[DATA]]
    assert doc["ingest_runs"][0]["source"] == "https://***@example.com/cells.zip"
    assert [run["run_id"] for run in doc["register_runs"]] == [tracking.register]
    assert [run["run_id"] for run in doc["infer_runs"]] == [tracking.infer]

    forward = lineage_json(capsys, f"lakefs://repo/{DATA}")
    assert forward["kind"] == "data_commit"
    assert [run["run_id"] for run in forward["train_runs"]] == tracking.trains[:2]
    assert [(v["name"], v["version"]) for v in forward["versions"]] == [("seg", "1"), ("seg", "2")]
    assert [run["run_id"] for run in forward["infer_runs"]] == [tracking.infer]
    assert format_text(forward) == lineage_of(capsys, f"lakefs://repo/{DATA}").rstrip("\n")


def test_run_ids_trace_by_their_step(tracking, capsys):
    train = lineage_json(capsys, tracking.trains[0])
    assert train["kind"] == "train_run" and train["data"]["commit"] == DATA
    assert [v["version"] for v in train["versions"]] == ["1"]
    ingest = lineage_json(capsys, tracking.ingests[OTHER_DATA])
    assert ingest["kind"] == "ingest_run" and [r["run_id"] for r in ingest["train_runs"]] == [tracking.trains[2]]
    register = lineage_json(capsys, tracking.register)
    assert register["kind"] == "register_run" and register["model_version"]["version"] == "2"
    parent = lineage_json(capsys, tracking.main)
    assert parent["kind"] == "main_run" and parent["train_run"]["run_id"] == tracking.trains[1]
    assert [child["run_id"] for child in parent["children"]] == [tracking.trains[1]]
    infer = lineage_json(capsys, tracking.infer)
    assert infer["kind"] == "infer_run" and infer["model_version"]["version"] == "2"


def test_model_commit_and_commit_prefix(tracking, capsys):
    model = lineage_json(capsys, f"lakefs://repo/{MODELS[2]}/models/{tracking.trains[2]}")
    assert model["kind"] == "model_commit" and model["train_run"]["run_id"] == tracking.trains[2]
    assert model["data"]["commit"] == OTHER_DATA and [v["aliases"] for v in model["versions"]] == [["challenger"]]
    assert lineage_json(capsys, f"lakefs://repo/{DATA[:10]}")["data"]["commit"] == DATA


def test_searches_page_through_every_result(tracking, capsys, monkeypatch):
    monkeypatch.setattr(lineage_graph, "PAGE", 1)
    forward = lineage_json(capsys, f"lakefs://repo/{DATA}")
    assert len(forward["train_runs"]) == 2 and len(forward["versions"]) == 2


@pytest.mark.parametrize(
    "ref, named",
    [
        ("models:/seg/99", "no version 99"),
        ("models:/seg@nope", "no alias @nope"),
        ("models:/nothing/1", "no registered model 'nothing'"),
        (f"lakefs://repo/{'f' * 64}", "no MLflow run"),
        ("lakefs://repo/main", "without lakeFS"),
        ("lakefs://repo/d1d1d1d1", "ambiguous"),
        ("0" * 32, "no MLflow run with this id"),
        ("0" * 8, "no MLflow run with this id"),
    ],
)
def test_unknown_input_is_one_line_naming_it_and_exit_2(tracking, capsys, ref, named):
    err = fails(capsys, ref)
    assert ref in err and named in err


def test_a_run_not_found_names_the_store_searched(tracking, capsys):
    assert f"no MLflow run with this id in the MLflow store {tracking.uri}," in fails(capsys, "0" * 32)


@pytest.mark.slow  # two children importing mlflow (about 6 s); test_run_ids runs the command in a child fast
def test_console_command_in_a_subprocess(tracking):
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking.uri}
    done = subprocess.run(
        [sys.executable, "-m", "segmodels.cli", "lineage", "models:/seg/2", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["ingest_runs"][0]["run_id"] == tracking.ingests[DATA]
    missing = subprocess.run(
        [sys.executable, "-m", "segmodels.cli", "lineage", "models:/seg/99"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert missing.returncode == 2 and missing.stdout == ""
    assert missing.stderr.strip().splitlines() == [missing.stderr.strip()]
    assert missing.stderr.startswith("segmodels lineage: error: models:/seg/99")


def test_a_short_run_id_as_report_md_prints_it_traces_like_the_full_one(tracking, capsys):
    short = lineage_json(capsys, tracking.trains[0][:8])
    assert {**short, "query": None} == {**lineage_json(capsys, tracking.trains[0]), "query": None}


def test_a_reused_step_is_shown_as_a_reuse_of_the_run_that_did_the_work(tracking, capsys):
    forward = lineage_json(capsys, f"lakefs://repo/{DATA}")
    assert [run["run_id"] for run in forward["train_runs"]] == tracking.trains[:2]  # not a third train run
    assert forward["train_runs"][1]["reused_by"] == [tracking.reuse]
    assert [run["run_id"] for run in forward["register_runs"]] == [tracking.register]
    assert forward["register_runs"][0]["reused_by"] == [tracking.reuse_register]
    assert [run["run_id"] for run in forward["ingest_runs"]] == [tracking.ingests[DATA]]
    assert forward["ingest_runs"][0]["reused_by"] == [tracking.reuse_ingest]
    text = lineage_of(capsys, f"lakefs://repo/{DATA}")
    assert [line.split()[2:] for line in text.splitlines() if "reused by" in line] == [
        [tracking.reuse_ingest],
        [tracking.reuse],
        [tracking.reuse_register],
    ]
    assert "register runs (1)" in text and "ingest run " in text

    stand_in = lineage_json(capsys, tracking.reuse)
    assert stand_in["run"]["reused_run_id"] == tracking.trains[1]
    assert stand_in["train_run"]["run_id"] == tracking.trains[1]
    assert [v["version"] for v in stand_in["versions"]] == ["2"]
    assert [run["run_id"] for run in stand_in["register_runs"]] == [tracking.register]
    assert any(f"is a reuse of train run {tracking.trains[1]}" in note for note in stand_in["notes"])
    model = lineage_json(capsys, f"lakefs://repo/{MODELS[1]}")
    assert model["train_run"]["run_id"] == tracking.trains[1] and model["notes"] == []


def test_only_best_metrics_that_describe_the_model_are_shown(tracking, capsys):
    text = lineage_of(capsys, tracking.trains[0])
    assert "best_val_miou" in text and "best_epoch" in text
    assert "best_lr" not in text and "best_train_images_per_s" not in text
