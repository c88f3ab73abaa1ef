"""Every command the README shows is checked: each ``mlflow run`` / ``segmodels step`` command and each
``-P`` example composes its step's config exactly as the real command line would (so a misspelt group
option or parameter fails here), and every other command names files, flags and services that exist.
The chain itself runs for real in tests/test_e2e_chain.py and the CLI server in tests/test_cli.py."""

from __future__ import annotations

import functools
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from mlflow.cli import cli as mlflow_cli
from mlflow.projects import _project_spec

from segmodels.cli import build_parser
from segmodels.config import load_config
from segmodels.pipeline.params import CHAIN, parse_command_line, route_main_params, step_overrides
from segmodels.training.launch import split_launcher_args

PROJECT = Path(__file__).resolve().parents[1]
README = (PROJECT / "README.md").read_text()
PLACEHOLDERS = {"<train run id>": "0123abcd", "<main run id>": "4567cdef", "<commit>": "0123456789abcdef"}
TEMPLATE = re.compile(
    r"<(?!train run id>|main run id>|commit>)[^>]*>"
)  # an inline snippet with <name> shows a form, not a command


def readme_commands() -> list[str]:
    """Shell commands of the README's bash blocks (comments dropped, ``&&`` chains split) and its inline
    ``mlflow run`` / ``segmodels`` / ``-P`` snippets."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            commands += [part.strip() for part in line.split("&&") if part.strip()]
    snippets = re.findall(r"`((?:mlflow run|segmodels |-P )[^`]*)`", README)
    return commands + [s for s in snippets if not TEMPLATE.search(s)]


def compose_mlflow_run(argv: list[str]) -> None:
    """Compose the configs ``mlflow run . -e X -P ...`` would compose, through MLflow's own command building."""
    entry_point, params = "main", {}
    args = iter(argv[3:])
    for arg in args:
        if arg == "-e":
            entry_point = next(args)
        elif arg == "-P":
            name, _, value = next(args).partition("=")
            params[name] = value
        elif arg == "--env-manager":
            assert next(args) in ("local", "virtualenv", "uv", "conda")
        else:
            raise AssertionError(f"unexpected argument {arg!r}")
    project = _project_spec.load_project(str(PROJECT))
    command = shlex.split(project.get_entry_point(entry_point).compute_command(params, storage_dir=None))
    step_args = split_launcher_args(command[command.index(f"steps/{entry_point}.py") + 1 :])[1]
    load_config(entry_point, step_overrides(entry_point, step_args))
    if entry_point == "main":
        _, per_step = route_main_params(parse_command_line("main", step_args)[0])
        for step in CHAIN:
            argv = [arg for name, value in per_step[step].items() for arg in (f"--{name}", value)]
            load_config(step, step_overrides(step, split_launcher_args(argv)[1]))


def mlflow_help(*command: str) -> str:
    """What ``mlflow <command> --help`` prints, from MLflow's own command line run in this process."""
    shown = CliRunner().invoke(mlflow_cli, [*command, "--help"])
    assert shown.exit_code == 0, shown.output
    return shown.output


@functools.cache
def pytest_help() -> set[str]:
    """The options ``python -m pytest --help`` lists, with the plugins installed here."""
    shown = subprocess.run([sys.executable, "-m", "pytest", "--help"], capture_output=True, text=True, check=True)
    return set(re.findall(r"(?<![\w-])(--?[a-z][\w-]*)", shown.stdout))


def check(command: str) -> None:
    for placeholder, sample in PLACEHOLDERS.items():
        command = command.replace(placeholder, sample)
    argv = shlex.split(command)
    if argv[:2] == ["mlflow", "run"] and argv[2] == ".":
        compose_mlflow_run(argv)
    elif argv[0] == "-P":  # an inline example of a parameter: valid for some step
        errors = []
        for step in (*CHAIN, "main"):
            try:
                return compose_mlflow_run(["mlflow", "run", ".", "-e", step, *argv])
            except Exception as exc:  # noqa: BLE001 - collected; the example must suit one step
                errors.append(f"{step}: {exc}")
        raise AssertionError(f"{command} composes for no step: {errors}")
    elif argv[:2] == ["segmodels", "step"]:
        load_config(argv[2], step_overrides(argv[2], argv[3:]))
    elif argv[0] == "segmodels":
        build_parser().parse_args(argv[1:])
    elif argv[:3] == ["mlflow", "models", "serve"]:  # served for real in tests/test_serving.py
        flags = mlflow_help("models", "serve")
        assert all(flag in flags for flag in argv[3:] if flag.startswith("-"))
    elif argv[:2] == ["mlflow", "ui"]:
        flags = mlflow_help("ui")
        assert all(flag in flags for flag in argv[2:] if flag.startswith("--"))
    elif argv[:2] == ["bash", ".ci/run"]:
        assert (PROJECT / ".ci" / "run").is_file()
    elif argv[:2] == ["docker", "compose"]:
        services = yaml.safe_load((PROJECT / "docker-compose.yml").read_text())["services"]
        assert all("healthcheck" in services[name] for name in ("postgres", "minio", "lakefs", "mlflow"))
    elif argv[0] in ("export", "python3", "pip", ".") or argv[:2] == ["python", "-m"] or "=" in argv[0]:
        check_setup_command(argv)
    else:
        raise AssertionError(f"README command not checked by any test: {command}")


def check_setup_command(argv: list[str]) -> None:
    """Environment and install lines: the tests they name exist, the installs are the project's own, pytest knows
    the options a pytest command passes (``-n`` needs pytest-xdist)."""
    if argv[:3] == ["python", "-m", "pytest"]:
        options = pytest_help()
        assert all(arg in options for arg in argv[3:] if re.fullmatch(r"--?[a-z][\w-]*", arg)), argv
    for arg in argv:
        if arg.startswith("tests/"):
            assert (PROJECT / arg).is_file(), arg
    if argv[0] == "pip":  # the project's two packages, editable (with or without their test extras), or torch
        packages = ["./embedded-lakefs", "."]
        assert argv[1] == "install"
        installed = [arg.removesuffix("[test]") for arg in argv[2:]]
        assert installed == [arg for package in packages for arg in ("-e", package)] or all(
            a.startswith("torch") for a in argv[2:]
        )
        assert all((PROJECT / package / "pyproject.toml").is_file() for package in packages)


@pytest.mark.parametrize("command", readme_commands())
def test_readme_command_is_valid(command):
    check(command)


def test_readme_shows_the_commands_that_matter():
    commands = readme_commands()
    assert "mlflow run . -e main --env-manager local" in commands
    assert "bash .ci/run" in commands
    assert any("overrides=" in command and "ce_dice" in command for command in commands)


def test_a_misspelt_group_option_in_the_readme_would_fail():
    with pytest.raises(Exception, match="dice_ce"):
        check('-P overrides="loss=dice_ce trainer.num_workers=0"')
