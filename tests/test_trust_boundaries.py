"""Trust boundaries: files and configs others can write are data, never code this process runs (issue 25,
cases 16 and 17)."""

from __future__ import annotations

import os
import pickle
import random
import subprocess
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from segmodels.pipeline import reproduce, run_step_cli
from segmodels.tracking import lineage
from segmodels.training.checkpoint import load_checkpoint, restore_rng_state, rng_state, save_checkpoint

PROJECT = Path(__file__).resolve().parents[1]


class RunsCommand:
    """A pickle that runs a shell command when unpickled."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_a_planted_resume_checkpoint_is_not_unpickled(tmp_path):
    marker = tmp_path / "ran"
    checkpoint = tmp_path / "checkpoints" / "last.pt"
    checkpoint.parent.mkdir()
    torch.save({"epoch": 1, "payload": RunsCommand(f"touch {marker}")}, checkpoint)

    with pytest.raises(RuntimeError, match="cannot read training checkpoint"):
        load_checkpoint(checkpoint)
    assert not marker.exists()


def test_a_checkpoint_of_plain_state_loads_with_weights_only(tmp_path):
    saved = rng_state()
    drawn = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    save_checkpoint({"epoch": 3, "rng": saved}, tmp_path / "last.pt")
    state = load_checkpoint(tmp_path / "last.pt")
    restore_rng_state(state["rng"])
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == drawn
    assert state["epoch"] == 3


def test_a_model_whose_mlmodel_names_a_pickled_wrapper_is_refused_unopened(tmp_path):
    from segmodels.tracking.models import ModelURIError, load_segmentation_model

    class Wrapper(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return model_input

    folder = tmp_path / "model"
    mlflow.pyfunc.save_model(str(folder), python_model=Wrapper(), pip_requirements=[])
    marker = tmp_path / "ran"
    (folder / "python_model.pkl").write_bytes(pickle.dumps(RunsCommand(f"touch {marker}")))

    with pytest.raises(ModelURIError, match="its MLmodel names 'python_model.pkl', not a model saved from code"):
        load_segmentation_model(str(folder))
    assert not marker.exists()


# -- reproduce: only what the run's commit could build, only the data commit it recorded --------------------------

DATA_COMMIT = "d" * 64


@pytest.fixture
def tracking(tmp_path, monkeypatch, new_sqlite_store):
    """A sqlite MLflow store of this test, current for the code under test."""
    uri = new_sqlite_store(tmp_path / "mlflow.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    yield MlflowClient()
    mlflow.set_tracking_uri(None)


def recorded_train_run(client: MlflowClient, config: str = "seed: 1\nlakefs:\n  repo: demo-repo\n", **tags: str) -> str:
    """A finished train run of this checkout's HEAD, data pinned, with ``config`` as its resolved config."""
    head = subprocess.run(
        ["git", "-C", str(PROJECT), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    run = client.create_run(
        "0",
        tags={
            lineage.TAG_STEP: "train",
            lineage.TAG_GIT_COMMIT: head,
            lineage.TAG_GIT_DIRTY: "false",
            lineage.TAG_LAKEFS_REPO: "demo-repo",
            lineage.TAG_DATA_COMMIT: DATA_COMMIT,
            lineage.TAG_DATA_URI: f"lakefs://demo-repo/{DATA_COMMIT}/data",
            **tags,
        },
    )
    client.log_text(run.info.run_id, config, reproduce.CONFIG_ARTIFACT)
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


def refusal(capsys, step: str, argv: list[str]) -> str:
    """The one error line of ``step`` run with ``argv``, after asserting exit status 2."""
    with pytest.raises(SystemExit) as exit_info:
        run_step_cli(step, argv)
    assert exit_info.value.code == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith(f"segmodels {step}: error: "), errors
    return errors[0]


@pytest.mark.parametrize(
    "tags, reason",
    [
        (
            {lineage.TAG_DATA_URI: "lakefs://demo-repo/main/data", lineage.TAG_DATA_COMMIT: "main"},
            "whose ref 'main' is not the data commit id it recorded (lakefs.data_commit='main'): only a commit id",
        ),
        ({lineage.TAG_DATA_URI: f"lakefs://demo-repo/{'e' * 64}/data"}, "is not the data commit id it recorded"),
        (
            {lineage.TAG_DATA_URI: f"lakefs://other-repo/{DATA_COMMIT}/data"},
            "in repository 'other-repo', not the one it trained from (lakefs.repo='demo-repo'",
        ),
        (
            {lineage.TAG_DATA_URI: f"lakefs://other-repo/{DATA_COMMIT}/data", lineage.TAG_LAKEFS_REPO: "other-repo"},
            "in repository 'other-repo', not the one it trained from",
        ),  # the config says demo-repo
    ],
)
def test_reproduce_refuses_recorded_data_that_is_not_the_recorded_commit(tracking, capsys, tmp_path, tags, reason):
    run_id = recorded_train_run(tracking, **tags)
    line = refusal(capsys, "reproduce", ["--run_id", run_id])
    assert reason in line, line
    assert [run.info.run_id for run in tracking.search_runs(["0"])] == [run_id], "no reproduce run was started"


EXPLOITS = [  # _target_ nodes Hydra's own blocklist lets through, each writing the marker file when built
    ("distutils.spawn.spawn", lambda marker: {"_args_": [["sh", "-c", f"touch {marker}"]]}),
    ("os.system", lambda marker: {"_args_": [f"touch {marker}"]}),
    ("builtins.open", lambda marker: {"_args_": [str(marker), "w"]}),
    ("shutil.copyfile", lambda marker: {"_args_": [__file__, str(marker)]}),
]


@pytest.mark.parametrize("target, arguments", EXPLOITS, ids=[target for target, _ in EXPLOITS])
@pytest.mark.parametrize("where", ["model.pretrained_path", "optimizer", "loss.options.inner"])
def test_the_builder_builds_no_target_conf_does_not_name(tmp_path, target, arguments, where):
    from omegaconf import OmegaConf

    from segmodels.config import ConfigError, load_config
    from segmodels.training.builder import instantiate_group

    marker = tmp_path / "ran"
    cfg = load_config("train")
    OmegaConf.update(cfg, where, {"_target_": target, **arguments(marker)}, force_add=True)
    group = where.split(".")[0]
    with pytest.raises(ConfigError, match=f"{where}.*{target}.*refusing to build it"):
        instantiate_group(group, cfg[group], params=[torch.zeros(1, requires_grad=True)])
    assert not marker.exists()


@pytest.mark.parametrize("target, arguments", EXPLOITS, ids=[target for target, _ in EXPLOITS])
def test_reproduce_refuses_a_recorded_config_naming_a_target_its_commit_does_not(
    tracking, capsys, tmp_path, monkeypatch, target, arguments
):
    """The exploit of issue 25: the run's config/train.yaml artifact replaced, a command under an Any-typed key."""
    import yaml
    from omegaconf import OmegaConf

    from segmodels.config import load_config

    marker = tmp_path / "ran"
    config = OmegaConf.to_container(load_config("train"))
    config["model"]["pretrained_path"] = {"_target_": target, **arguments(marker)}
    config["lakefs"]["repo"] = "demo-repo"
    run_id = recorded_train_run(tracking, yaml.safe_dump(config))
    monkeypatch.chdir(PROJECT)
    line = refusal(capsys, "reproduce", ["--run_id", run_id])
    assert f"model.pretrained_path: a _target_ node (_target_={target!r}) where conf/ has plain values" in line
    assert not marker.exists()
    assert [run.info.run_id for run in tracking.search_runs(["0"])] == [run_id], "no reproduce run was started"
