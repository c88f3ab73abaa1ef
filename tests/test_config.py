"""The MLproject parameters and the Hydra configs in conf/ agree, and bad overrides fail clearly."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

from segmodels.config import ConfigError, flatten_config, load_config, split_overrides

PROJECT = Path(__file__).resolve().parents[1]
MLPROJECT = yaml.safe_load((PROJECT / "MLproject").read_text())
SAMPLES = {
    "source": "demo", "repo": "r", "branch": "b", "format": "folder", "on_error": "skip", "overrides": "",
    "data_ref": "lakefs://r/abc/data", "model": "unet_resnet18", "lr": "0.01", "epochs": "2", "batch_size": "4",
    "image_size": "32", "run_id": "0123abcd", "model_name": "m", "metric": "best_val_miou", "threshold": "0.5",
    "alias": "a", "model_uri": "models:/m@a", "split": "val", "output_dir": "out", "env_manager": "local",
    "nproc": "2",
}
LAUNCHER_PARAMS = {"nproc"}  # parameters of the process launcher, not of the step's config


def test_split_overrides_drops_empty_values_and_splits_free_overrides():
    assert split_overrides(["a=1", "b=", "model=unet"], "c.d=2 'e=x y'") == ["a=1", "model=unet", "c.d=2", "e=x y"]
    with pytest.raises(ConfigError, match="'oops' is not of the form key=value"):
        split_overrides(["oops"])


@pytest.mark.parametrize("entry_point", sorted(MLPROJECT["entry_points"]))
def test_every_entry_point_command_composes_with_its_parameters(entry_point):
    """Fill each parameter with a sample value, build the command as MLflow does, and compose the
    step's config from it: every override must land on an existing key, with the value given."""
    spec = MLPROJECT["entry_points"][entry_point]
    command = spec["command"]
    placeholders = set(re.findall(r"{(\w+)}", command))
    assert placeholders == set(spec["parameters"]), "every parameter is used, and only parameters"
    args = shlex.split(re.sub(r"{(\w+)}", lambda m: shlex.quote(SAMPLES[m.group(1)]), command))
    script = args.index(f"steps/{entry_point}.py")
    assert args[0] == "python" and (script == 1 or args[1:3] == ["-m", "segmodels.training.launch"])
    overrides, free = args[script + 1:], ""
    if "--overrides" in overrides:
        index = overrides.index("--overrides")
        free = overrides[index + 1]
        overrides = overrides[:index] + overrides[index + 2:]
    values = set(flatten_config(load_config(entry_point, split_overrides(overrides, free))).values())
    group_choices = {"model", "format"}
    for name in spec["parameters"]:
        if name not in group_choices | LAUNCHER_PARAMS and SAMPLES[name]:
            assert SAMPLES[name] in values, f"-P {name} does not reach the {entry_point} config"


def test_train_params_map_onto_hyperparameters():
    cfg = load_config("train", split_overrides(["optimizer.lr=0.01", "trainer.epochs=3", "trainer.batch_size=4",
                                                "transforms.image_size=48", "data_ref=abc"]))
    flat = flatten_config(cfg)
    assert flat["optimizer.lr"] == "0.01"
    assert flat["trainer.epochs"] == "3"
    assert flat["trainer.batch_size"] == "4"
    assert flat["transforms.image_size"] == "48"
    assert flat["data_ref"] == "abc"


def test_unknown_model_name_is_a_one_line_config_error():
    with pytest.raises(ConfigError) as info:
        load_config("train", ["model=no_such_model"])
    assert "no_such_model" in str(info.value)
    assert "\n" not in str(info.value)


def test_unknown_key_is_a_config_error():
    with pytest.raises(ConfigError, match="no_such_key"):
        load_config("train", ["no_such_key=1"])


def test_launcher_runs_one_process_directly_and_several_under_torchrun():
    from segmodels.training.launch import launch_command

    assert launch_command(1, "steps/train.py", ["a=1"])[1:] == ["steps/train.py", "a=1"]
    ddp = launch_command(2, "steps/train.py", ["a=1"])
    assert ddp[1:4] == ["-m", "torch.distributed.run", "--standalone"] and "--nproc_per_node=2" in ddp
    with pytest.raises(ValueError, match="nproc=0"):
        launch_command(0, "steps/train.py", [])


@pytest.mark.parametrize("name, pyvenv, conda, expected", [
    (".venv", "home = /usr\n", False, "local"),
    ("mlflow-abc123", "home = /usr\nversion = 3.11\n", False, "virtualenv"),
    ("mlflow-abc123", "home = /usr\nuv = 0.8.0\n", False, "uv"),
    ("mlflow-abc123", "", True, "conda"),
])
def test_main_hands_children_the_env_manager_it_runs_under(tmp_path, monkeypatch, name, pyvenv, conda, expected):
    from segmodels.pipeline.main import detect_env_manager

    prefix = tmp_path / name
    prefix.mkdir()
    (prefix / "pyvenv.cfg").write_text(pyvenv)
    monkeypatch.setattr("sys.prefix", str(prefix))
    monkeypatch.delenv("CONDA_PREFIX", raising=False)
    if conda:
        monkeypatch.setenv("CONDA_PREFIX", str(prefix))
    assert detect_env_manager() == expected
