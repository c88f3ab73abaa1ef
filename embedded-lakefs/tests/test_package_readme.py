"""Every command the package's README shows works: its ``serve`` starts the server (on a free port: port 8000 may be
taken where tests run) through the installed ``embedded-lakefs`` script, its lakectl variables and Python snippets
(the ``lakefs`` wrapper, ``lakefs-sdk``, lakefs-spec) run against it in order, its ``gc`` runs beside it, and the
install and test lines name what exists. (Named apart from segmodels' tests/test_readme.py: one pytest run collects
both folders.)"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]
README = (PACKAGE / "README.md").read_text()
SHOWN_ENDPOINT = "http://127.0.0.1:8000"


def blocks(language: str, text: str = README) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def section(title: str) -> str:
    """The README's text from ``## title`` to the next ``## ``."""
    return re.search(rf"^## {title}\n(.*?)(?=^## |\Z)", README, flags=re.S | re.M).group(1)


def shell_commands() -> list[str]:
    """The bash blocks' commands: comments dropped, ``&&`` chains split."""
    commands = []
    for block in blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            commands += [part.strip() for part in line.split("&&") if part.strip()]
    return commands


def the_command(prefix: str) -> str:
    (command,) = [c for c in shell_commands() if c.startswith(prefix)]
    return command


def test_every_shell_command_is_run_or_checked():
    pyproject = (PACKAGE / "pyproject.toml").read_text()
    for command in shell_commands():
        argv = shlex.split(command)
        if argv[:2] in (["embedded-lakefs", "serve"], ["embedded-lakefs", "gc"]) or argv[0] == "export":
            continue  # run in test_the_quickstart_runs
        if argv[:3] == ["pip", "install", "-e"]:
            name, _, extra = argv[3].partition("[")
            assert name == "./embedded-lakefs", command
            assert not extra or re.search(rf"^{extra.rstrip(']')} = \[", pyproject, flags=re.M), command
        elif argv[:3] == ["python", "-m", "pytest"]:
            assert all((PACKAGE.parent / arg).is_dir() for arg in argv[3:] if not arg.startswith("-")), command
        elif argv == ["bash", ".ci/run"]:
            assert (PACKAGE.parent / ".ci" / "run").is_file()
        else:
            raise AssertionError(f"README command not checked by any test: {command}")


def test_the_quickstart_runs(tmp_path):
    script = Path(sys.executable).parent / "embedded-lakefs"
    assert script.is_file(), "pip install -e ./embedded-lakefs installs the embedded-lakefs command"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAKECTL_")}
    serve = shlex.split(the_command("embedded-lakefs serve"))
    process = subprocess.Popen(
        [str(script), *serve[1:], "--port", "0"], cwd=tmp_path, env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        line = process.stdout.readline()
        shown = re.search(
            r"^lakeFS-compatible server on \S+ \(data in .*; access key id .*, secret in .*\)$", README, re.M
        )
        assert shown, "the README shows the start line"
        endpoint = re.match(r"lakeFS-compatible server on (http://127\.0\.0\.1:\d+) \(data in ", line).group(1)
        assert f"secret in {tmp_path / 'lakefs-data' / 'credentials.json'})" in line

        exports = [c for c in shell_commands() if c.startswith("export ")]
        snippets = [
            f"{shlex.quote(sys.executable)} - <<'PY'\n{snippet}PY" for snippet in blocks("python", section("Connect"))
        ]
        connect = "\n".join(["set -e", *exports, *snippets]).replace(SHOWN_ENDPOINT, endpoint)
        done = subprocess.run(
            ["bash", "-c", connect], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        wrapper, sdk, spec = done.stdout.splitlines()
        assert re.fullmatch(r"[0-9a-f]{64} b'hello'", wrapper)
        assert sdk == "['main']" and spec == "b'hello'"

        gc = subprocess.run(
            [str(script), *shlex.split(the_command("embedded-lakefs gc"))[1:]],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert gc.returncode == 0 and gc.stdout.startswith("embedded-lakefs gc: would free "), gc.stderr
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
