"""The MLproject parameters and the Hydra configs in conf/ agree, and bad parameters fail clearly."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.projects import _project_spec
from omegaconf import OmegaConf

from segmodels.config import ConfigError, flatten_config, load_config
from segmodels.pipeline.params import (
    CHAIN,
    LAUNCHER_PARAMS,
    STEP_PARAMS,
    main_overrides,
    parse_command_line,
    route_main_params,
    step_overrides,
)
from segmodels.training.launch import launcher_defaults, split_launcher_args

PROJECT = Path(__file__).resolve().parents[1]
SAMPLES = {
    "source": "demo",
    "repo": "r",
    "branch": "b",
    "format": "folder",
    "on_error": "skip",
    "data_ref": "lakefs://r/abc/data",
    "model": "unet_resnet18",
    "lr": "0.01",
    "epochs": "2",
    "batch_size": "4",
    "image_size": "32",
    "run_id": "0123abcd",
    "model_name": "m",
    "metric": "best_val_miou",
    "threshold": "0.5",
    "alias": "a",
    "model_uri": "models:/m@a",
    "split": "val",
    "output_dir": "out",
    "env_manager": "local",
    "nproc": "2",
    "force": "True",
    "parent_run_id": "feed1234",
    "interactive": "True",
    "commit_predictions": "True",
    "experiment": "demo",
    "budget_minutes": "7.5",
    "tta": "hflip",
    "mode": "sliding",
}
GROUP_CHOICES = {"model", "format", "experiment"}  # pick a config group option rather than set a value


def mlflow_command(entry_point: str, params: dict[str, str]) -> list[str]:
    """The command ``mlflow run . -e <entry_point> -P ...`` executes, split as the shell splits it."""
    project = _project_spec.load_project(str(PROJECT))
    return shlex.split(project.get_entry_point(entry_point).compute_command(params, storage_dir=None))


def step_argv(entry_point: str, params: dict[str, str]) -> list[str]:
    """The arguments the step script receives (after the launcher took its own)."""
    args = mlflow_command(entry_point, params)
    script = args.index(f"steps/{entry_point}.py")
    assert args[0] == "python" and (script == 1 or args[1:3] == ["-m", "segmodels.training.launch"])
    return split_launcher_args(args[script + 1 :])[1]


def compose(entry_point: str, params: dict[str, str]):
    return load_config(entry_point, step_overrides(entry_point, step_argv(entry_point, params)))


@pytest.mark.parametrize("entry_point", ["ingest", "train", "register", "infer"])
def test_every_entry_point_parameter_reaches_its_config_key(entry_point):
    """Fill each parameter with a sample value, build the command as MLflow does, and compose the
    step's config from it: every parameter must land on an existing key, with the value given."""
    params = {name: SAMPLES[name] for name in STEP_PARAMS[entry_point]}
    flat = flatten_config(compose(entry_point, params))
    for name, key in STEP_PARAMS[entry_point].items():
        if name not in GROUP_CHOICES:
            assert flat[key] == SAMPLES[name], f"-P {name} does not reach {key} of the {entry_point} config"
    assert compose(entry_point, {}) == load_config(entry_point), "no parameter: every default as in conf/"


def test_train_params_map_onto_hyperparameters():
    flat = flatten_config(
        compose(
            "train",
            {"lr": "0.01", "epochs": "3", "batch_size": "4", "image_size": "48", "data_ref": "abc", "nproc": "2"},
        )
    )
    assert flat["optimizer.lr"] == "0.01"
    assert flat["trainer.epochs"] == "3"
    assert flat["trainer.batch_size"] == "4"
    assert flat["transforms.image_size"] == "48"
    assert flat["data_ref"] == "abc"


@pytest.mark.parametrize("value, expected", [("[192,256]", [192, 256]), ("[192, 256]", [192, 256]), ("96", 96)])
def test_list_values_pass_through_mlproject_params(value, expected):
    cfg = compose("train", {"image_size": value})
    assert cfg.transforms.image_size == expected
    cfg = compose("ingest", {"overrides": "data.ignore_classes=[Unlabelled] data.mask_values={255:1}"})
    assert list(cfg.data.ignore_classes) == ["Unlabelled"] and dict(cfg.data.mask_values) == {255: 1}


@pytest.mark.parametrize(
    "params, reason",
    [
        ({"image_size": "[192,256"}, "image_size"),
        ({"epochs": "ten"}, "epochs"),
        ({"image_size": "[a,b]"}, None),  # composes; refused where the size is read (tests/test_transforms.py)
    ],
)
def test_bad_list_or_typed_values_are_one_line_config_errors(params, reason):
    if reason is None:
        compose("train", params)
        return
    with pytest.raises(ConfigError) as info:
        compose("train", params)
    assert reason in str(info.value) and "\n" not in str(info.value)


def test_any_config_key_is_a_parameter_and_unknown_names_are_refused():
    assert flatten_config(compose("train", {"trainer.num_workers": "0"}))["trainer.num_workers"] == "0"
    with pytest.raises(ConfigError, match="unknown parameter 'bogus' for train; expected one of data_ref, repo"):
        compose("train", {"bogus": "1"})
    with pytest.raises(ConfigError, match="trainer.no_such_key"):
        compose("train", {"trainer.no_such_key": "1"})


@pytest.mark.parametrize(
    "entry_point, key, value, expected",
    [
        ("train", "seed", "7", 7),
        ("ingest", "split_seed", "3", 3),
        ("infer", "batch_size", "2", 2),
        ("register", "threshold", "0.25", 0.25),
    ],
)
def test_a_top_level_config_key_is_a_parameter(entry_point, key, value, expected):
    """-P seed=1 (a key at the top of the step's config, in no parameter table) reaches the config as -P
    trainer.epochs=3 does; through main as <step>.<key>; a name of no config key is still refused in one line."""
    assert compose(entry_point, {key: value})[key] == expected
    _, per_step = route_main_params({f"{entry_point}.{key}": value})
    assert per_step[entry_point] == {key: value}
    with pytest.raises(ConfigError) as refused:
        compose(entry_point, {f"{key}x": value})
    message = str(refused.value)
    assert message.startswith(f"unknown parameter '{key}x' for {entry_point}") and "\n" not in message
    assert "or a config key such as" in message


def test_an_unknown_parameter_name_is_shown_cut_short():
    with pytest.raises(ConfigError) as refused:
        step_overrides("train", ["--" + "n" * 5000, "1"])
    assert len(str(refused.value)) < 500 and "(5000 characters)" in str(refused.value)


@pytest.mark.parametrize("step", [step for step in STEP_PARAMS if step != "main"])
def test_unknown_parameter_errors_name_a_config_key_of_that_step(step):
    with pytest.raises(ConfigError) as caught:
        compose(step, {"bogus": "1"})
    key = re.search(r"or a config key such as (\S+)$", str(caught.value)).group(1)
    default = OmegaConf.select(load_config(step, []), key)
    value = str(not default).lower() if isinstance(default, bool) else str(default)
    assert OmegaConf.select(compose(step, {key: value}), key) == (not default if isinstance(default, bool) else default)


def test_segmodels_step_takes_hydra_overrides_and_free_overrides():
    params, overrides = parse_command_line(
        "train",
        [
            "optimizer.lr=0.01",
            "trainer.epochs=",
            "--overrides",
            "loss=ce_dice 'model.encoder_name=resnet34'",
            "--lr=0.5",
        ],
    )
    assert params == {"lr": "0.5"} and overrides == ["optimizer.lr=0.01", "loss=ce_dice", "model.encoder_name=resnet34"]
    with pytest.raises(ConfigError, match="'oops' is not of the form"):
        parse_command_line("train", ["oops"])


def test_main_hands_each_step_its_own_parameters():
    own, per_step = route_main_params(
        {
            "repo": "r",
            "lr": "0.01",
            "source": "demo",
            "infer.split": "val",
            "overrides": "loss=ce_dice",
            "env_manager": "local",
            "nproc": "2",
            "train.trainer.epochs": "3",
        }
    )
    assert own == {"env_manager": "local"}
    assert per_step == {
        "ingest": {"repo": "r", "source": "demo"},
        "train": {"repo": "r", "lr": "0.01", "overrides": "loss=ce_dice", "nproc": "2", "trainer.epochs": "3"},
        "register": {},
        "infer": {"repo": "r", "split": "val"},
    }
    cfg = load_config("main", main_overrides({"lr": "1e-3", "image_size": "[48,64]", "threshold": ""}))
    assert flatten_config(cfg.steps.train) == {"lr": "1e-3", "image_size": "[48,64]"}, "strings, as given"
    assert set(cfg.steps) == set(CHAIN) and not cfg.steps.register
    for bad, reason in [
        ({"bogus": "1"}, "unknown parameter 'bogus' for main"),
        ({"train.data_ref": "x"}, "filled in by main"),
    ]:
        with pytest.raises(ConfigError, match=reason):
            route_main_params(bad)


def test_main_refuses_infer_source_naming_the_infer_command_that_takes_it():
    with pytest.raises(ConfigError) as caught:
        route_main_params({"infer.source": "/data/new photos"})
    command = str(caught.value).split("run the step on its own: ", 1)[1]
    argv = shlex.split(command)
    assert argv[:5] == ["mlflow", "run", ".", "-e", "infer"] and argv[-2:] == ["--env-manager", "local"]
    name, value = argv[6].split("=", 1)
    assert (name, value) == ("source", "/data/new photos")
    assert load_config("infer", step_overrides("infer", [f"--{name}", value])).source == "/data/new photos"


@pytest.mark.parametrize("text", ["47e11020", "1234e005", "00e12345", "12345678", "0x1f2e3d4c", "1e5", "true", "null"])
@pytest.mark.parametrize(
    "entry_point, name, key",
    [
        ("reproduce", "run_id", "run_id"),
        ("register", "parent_run_id", "parent_run_id"),
        ("train", "data_ref", "data_ref"),
        ("infer", "split", "split"),
        ("ingest", "repo", "lakefs.repo"),
    ],
)
def test_text_parameters_stay_the_text_typed(entry_point, name, key, text):
    """A run id prefix that reads as a number (``47e11020`` is 4.7e11021: it became ``inf``) stays the text
    typed, through the MLproject command and as a ``key=value`` override."""
    assert OmegaConf.select(compose(entry_point, {name: text}), key) == text
    assert OmegaConf.select(load_config(entry_point, step_overrides(entry_point, [f"{key}={text}"])), key) == text


def test_a_recipe_selects_each_steps_part():
    """``experiment=<recipe>`` sets the data preset for ingest and model, transforms, loss, optimisation and
    epochs for train; values given beside it still win."""
    ingest = load_config("ingest", ["experiment=camvid"])
    assert ingest.data.format == "folder" and "Unlabelled" in ingest.data.ignore_classes
    assert load_config("ingest", ["experiment=isbi"]).data.mask_values == {255: 1}
    train = load_config("train", ["experiment=camvid", "trainer.epochs=3"])
    assert train.model.encoder_name == "mobilenetv2_100" and train.loss.class_weights == "auto"
    assert list(train.transforms.image_size) == [240, 320] and train.transforms.train.vflip == 0
    assert train.trainer.epochs == 3 and train.trainer.encoder_lr_scale < 1
    demo = load_config("train", ["experiment=demo"])
    assert demo.transforms.train.vflip > 0 and load_config("train").transforms.train.vflip == 0
    with pytest.raises(ConfigError, match=r"experiment/train/nope.*available: auto, camvid, demo, isbi, none"):
        load_config("train", ["experiment=nope"])
    for params in ({"experiment": "camvid"}, {"overrides": "experiment=camvid trainer.epochs=3"}):
        _, per_step = route_main_params(params)
        assert per_step["ingest"] == {"experiment": "camvid"}
        assert (
            load_config(
                "ingest", step_overrides("ingest", [f"--{k}={v}" for k, v in per_step["ingest"].items()])
            ).data.format
            == "folder"
        )


def test_launcher_takes_nproc_wherever_mlflow_put_it():
    params, rest = split_launcher_args(["--lr", "0.1", "--nproc", "4", "a=1", "--nnodes=2", "--rdzv_endpoint", "h:1"])
    assert rest == ["--lr", "0.1", "a=1"] and (params["nproc"], params["nnodes"], params["rdzv_endpoint"]) == (
        "4",
        "2",
        "h:1",
    )
    assert split_launcher_args(["--nproc=3"])[0]["nproc"] == "3"
    assert split_launcher_args([])[0] == {**launcher_defaults(), "nproc": "1", "nnodes": "1"}
    assert set(LAUNCHER_PARAMS["train"]) == set(launcher_defaults())  # params.py names conf/launcher.yaml's keys


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--bogus", "1"], "segmodels register: error: unknown parameter 'bogus' for register"),
        *(  # a step process each (1.5-5 s): one case in the fast tier
            pytest.param(*case, marks=pytest.mark.slow)
            for case in [
                (["--threshold", "[0.5"], "segmodels register: error: threshold='[0.5': not a valid value"),
                (["--threshold", "high"], "segmodels register: error: "),
            ]
        ),
    ],
)
def test_step_script_refuses_bad_parameters_in_one_line(argv, message):
    result = subprocess.run(
        [sys.executable, "steps/register.py", *argv], cwd=PROJECT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip().splitlines()[0]]
    assert result.stderr.startswith(message), result.stderr


@pytest.mark.slow  # a launcher process (~3.5 s); test_training_multinode refuses a bad launcher value fast
def test_launcher_refuses_a_bad_nproc_in_one_line():
    result = subprocess.run(
        [sys.executable, "-m", "segmodels.training.launch", "steps/train.py", "--nproc", "two"],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (
        result.returncode == 2
        and result.stderr == "segmodels train: error: nproc='two': expected a whole number >= 1\n"
    )


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


@pytest.mark.parametrize(
    "name, pyvenv, conda, expected",
    [
        (".venv", "home = /usr\n", False, "local"),
        ("mlflow-abc123", "home = /usr\nversion = 3.11\n", False, "virtualenv"),
        ("mlflow-abc123", "home = /usr\nuv = 0.8.0\n", False, "uv"),
        ("mlflow-abc123", "", True, "conda"),
    ],
)
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
