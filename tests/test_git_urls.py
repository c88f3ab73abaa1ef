"""``mlflow run <git url>``: the fetched commit's own code runs (not the installed segmodels), the run is tagged with
that commit, and state outlives MLflow's temporary checkouts (the segmodels home is ``~/.segmodels``); and ``main``
refuses an env manager whose tools are missing with one line.

The git test serves a copy of this working tree, committed twice in a temp repository, from a local ``git daemon``
and runs ``ingest`` at the first commit, then ``train`` at the second, which records every import of segmodels."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from segmodels.data.demo import generate_demo_dataset
from segmodels.pipeline import StepError
from segmodels.pipeline.main import check_env_manager_tools
from segmodels.tracking import lineage

PROJECT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
EXPERIMENT = "git-urls"
IMPORT_LOG_ENV = "SEGMODELS_TEST_IMPORT_LOG"
# Commit B's change: every process that imports B's segmodels says so, with the file it imported.
RECORD_IMPORTS = f"""
import os as _os
if _os.environ.get("{IMPORT_LOG_ENV}"):
    with open(_os.environ["{IMPORT_LOG_ENV}"], "a") as _log:
        _log.write(f"{{_os.getpid()}} {{__file__}}\\n")
"""


def git(*args: str, cwd: Path) -> str:
    result = subprocess.run(
        ["git", "-c", "user.name=test", "-c", "user.email=test@example.com", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout.strip()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def embedded_servers(under: Path) -> dict[int, Path]:
    """pid -> data dir of every live embedded lakeFS server whose data dir lies under ``under``."""
    found = {}
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if "embedded_lakefs" in argv and "--data-dir" in argv:
            data_dir = Path(argv[argv.index("--data-dir") + 1])
            if data_dir.is_relative_to(under):
                found[int(entry.name)] = data_dir
    return found


def stop(pid: int, timeout: float = 15.0) -> None:
    """SIGTERM ``pid`` (a detached server: not our child), SIGKILL it after ``timeout``; return once it is gone."""

    def gone() -> bool:
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
        except (OSError, IndexError):
            return True

    with_signal, deadline = signal.SIGTERM, time.monotonic() + timeout
    while not gone():
        if time.monotonic() > deadline:
            with_signal = signal.SIGKILL
        try:
            os.kill(pid, with_signal)
        except ProcessLookupError:
            return
        time.sleep(0.2)


class GitSandbox:
    """A bare repository of this working tree behind ``git daemon``, and a user (own HOME, MLflow store, temp
    folder, no SEGMODELS_HOME) who runs ``mlflow run git://...`` from a folder of their own."""

    def __init__(self, root: Path):
        self.root = root
        self.user_home = root / "home"
        self.cwd = root / "cwd"
        self.tmp = root / "tmp"  # MLflow's temporary checkouts land here
        self.import_log = root / "imports.log"
        for folder in (self.user_home, self.cwd, self.tmp):
            folder.mkdir()
        self.env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("LAKECTL_", "MLFLOW_", "GIT_")) and key not in ("SEGMODELS_HOME", "PYTHONPATH")
        }
        self.env.update(
            {
                "HOME": str(self.user_home),
                "TMPDIR": str(self.tmp),
                IMPORT_LOG_ENV: str(self.import_log),
                "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
                "MLFLOW_EXPERIMENT_NAME": EXPERIMENT,
                "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}",
            }
        )

    def build_repository(self) -> None:
        """Commit A: this working tree (tracked and untracked, not ignored, files); commit B: A plus the import
        record. Both in a bare repository under ``served/``."""
        work = self.root / "work"
        listed = subprocess.run(
            ["git", "ls-files", "-co", "--exclude-standard", "-z"],
            cwd=PROJECT,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        for name in filter(None, listed.split("\0")):
            source = PROJECT / name
            if source.is_file():  # not a tracked file deleted in the work tree
                (work / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, work / name)
        git("init", "-q", "-b", "main", cwd=work)
        git("add", "-A", cwd=work)
        git("commit", "-q", "-m", "A: the working tree", cwd=work)
        self.commit_a = git("rev-parse", "HEAD", cwd=work)
        with open(work / "segmodels" / "__init__.py", "a") as init:
            init.write(RECORD_IMPORTS)
        git("commit", "-q", "-am", "B: record imports", cwd=work)
        self.commit_b = git("rev-parse", "HEAD", cwd=work)
        served = self.root / "served"
        git("clone", "-q", "--bare", str(work), str(served / "segmodels.git"), cwd=self.root)

    def start_daemon(self) -> None:
        served = self.root / "served"
        self.port = free_port()
        self.url = f"git://127.0.0.1:{self.port}/segmodels.git"
        self.daemon = subprocess.Popen(
            [
                "git",
                "daemon",
                "--reuseaddr",
                f"--base-path={served}",
                "--export-all",
                f"--port={self.port}",
                "--listen=127.0.0.1",
                str(served),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while subprocess.run(["git", "ls-remote", self.url], capture_output=True, timeout=30).returncode != 0:
            assert self.daemon.poll() is None, "git daemon exited"
            assert time.monotonic() < deadline, "git daemon did not answer within 30 s"
            time.sleep(0.2)

    def mlflow_run(self, commit: str, entry_point: str, **params) -> subprocess.CompletedProcess:
        command = ["mlflow", "run", self.url, "-v", commit, "-e", entry_point, "--env-manager", "local"]
        for key, value in params.items():
            command += ["-P", f"{key}={value}"]
        return subprocess.run(command, cwd=self.cwd, env=self.env, capture_output=True, text=True, timeout=600)

    def checkouts(self) -> list[Path]:
        return [path.parent for path in self.tmp.glob("*/MLproject")]

    def close(self) -> None:
        for pid in embedded_servers(self.root):
            stop(pid)
        if getattr(self, "daemon", None) is not None:
            os.killpg(self.daemon.pid, signal.SIGTERM)
            self.daemon.wait(timeout=30)


@pytest.fixture(scope="module")
def git_runs(tmp_path_factory):
    """ingest at commit A, then train (two processes under torchrun) at commit B, both from the git URL."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    sandbox = GitSandbox(tmp_path_factory.mktemp("git-urls"))
    try:
        sandbox.build_repository()
        sandbox.start_daemon()
        mlflow.set_tracking_uri(sandbox.env["MLFLOW_TRACKING_URI"])
        MlflowClient().create_experiment(EXPERIMENT, artifact_location=(sandbox.root / "artifacts").as_uri())
        source = generate_demo_dataset(sandbox.root / "source", num_images=16, image_size=32, seed=5)
        started = time.monotonic()
        sandbox.ingest = sandbox.mlflow_run(sandbox.commit_a, "ingest", source=source)
        sandbox.ingest_seconds = time.monotonic() - started
        assert sandbox.ingest.returncode == 0, sandbox.ingest.stderr[-3000:]
        sandbox.imports_after_ingest = sandbox.import_log.read_text() if sandbox.import_log.exists() else ""
        started = time.monotonic()
        sandbox.train = sandbox.mlflow_run(
            sandbox.commit_b, "train", nproc=2, epochs=1, image_size=32, batch_size=4, overrides="trainer.num_workers=0"
        )
        sandbox.train_seconds = time.monotonic() - started
        assert sandbox.train.returncode == 0, sandbox.train.stderr[-3000:]
        yield sandbox
    finally:
        sandbox.close()


def step_run(step: str) -> mlflow.entities.Run:
    client = MlflowClient()
    [run] = client.search_runs(
        [client.get_experiment_by_name(EXPERIMENT).experiment_id], f"tags.`{lineage.TAG_STEP}` = '{step}'"
    )
    return run


@pytest.mark.slow
def test_each_commit_runs_its_own_code_and_is_tagged_with_it(git_runs):
    mlflow.set_tracking_uri(git_runs.env["MLFLOW_TRACKING_URI"])
    assert git_runs.imports_after_ingest == "", "commit A has no import record: nothing may have written one"
    records = [line.split(" ", 1) for line in git_runs.import_log.read_text().splitlines()]
    checkouts = git_runs.checkouts()
    assert len(checkouts) == 2, checkouts
    # B's segmodels is what ran: the launcher (python -m segmodels.training.launch) and both torchrun workers
    assert len({pid for pid, _ in records}) >= 3, records
    assert all(
        Path(path).is_relative_to(git_runs.tmp) and Path(path).parts[-2:] == ("segmodels", "__init__.py")
        for _, path in records
    ), records
    assert len({Path(path).parents[1] for _, path in records}) == 1, "all from the one checkout of B"
    for step, commit in (("ingest", git_runs.commit_a), ("train", git_runs.commit_b)):
        run = step_run(step)
        assert run.info.status == "FINISHED"
        assert run.data.tags[lineage.TAG_GIT_COMMIT] == commit, step
        assert run.data.tags["mlflow.source.git.commit"] == commit, step
        assert run.data.tags[lineage.TAG_GIT_DIRTY] == "false", step


@pytest.mark.slow
def test_state_outlives_the_temporary_checkouts(git_runs):
    mlflow.set_tracking_uri(git_runs.env["MLFLOW_TRACKING_URI"])
    ingest, train = step_run("ingest"), step_run("train")
    assert train.data.params["data_commit"] == ingest.data.tags[lineage.TAG_DATA_COMMIT], (
        "train found the data the earlier git-URL run ingested"
    )
    assert train.data.tags[lineage.TAG_MODEL_URI].startswith(f"lakefs://{ingest.data.tags[lineage.TAG_LAKEFS_REPO]}/")
    home = git_runs.user_home / ".segmodels"
    state = json.loads((home / "lakefs" / "server.json").read_text())
    for checkout in git_runs.checkouts():
        assert not (checkout / ".segmodels").exists(), checkout
    assert not (git_runs.cwd / ".segmodels").exists()
    servers = embedded_servers(git_runs.root)
    assert servers == {state["pid"]: home / "lakefs"}, "one embedded server, over ~/.segmodels, for every checkout"


def test_every_step_script_puts_its_checkout_first_before_importing_segmodels():
    """The header that makes a fetched commit run its own code; a new entry point needs it too."""
    import ast

    scripts = sorted(path for path in (PROJECT / "steps").glob("*.py") if path.name != "_checkout.py")
    assert scripts
    for script in scripts:
        body = ast.parse(script.read_text()).body
        first_import = next(
            i
            for i, node in enumerate(body)
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "segmodels"
        )
        before = ast.unparse(ast.Module(body=body[:first_import], type_ignores=[]))
        assert "import _checkout" in before, script.name
    header = (PROJECT / "steps" / "_checkout.py").read_text()
    assert "sys.path.insert(0, PROJECT_ROOT)" in header and 'os.environ["PYTHONPATH"]' in header
    assert "PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))" in header


# -- env managers ------------------------------------------------------------------------------------------------


def fake_tools(folder: Path, *names: str) -> str:
    """A PATH of just ``folder``, holding an executable stub for each of ``names``."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_text("#!/bin/sh\nexit 0\n")
        (folder / name).chmod(0o755)
    return str(folder)


@pytest.mark.parametrize("manager, tool", [("uv", "uv"), ("virtualenv", "pyenv"), ("conda", "conda")])
def test_an_env_manager_without_its_tool_is_refused_in_one_line(manager, tool, tmp_path, monkeypatch):
    for key in ("MLFLOW_CONDA_HOME", "CONDA_EXE", "MLFLOW_CONDA_CREATE_ENV_CMD"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("PATH", fake_tools(tmp_path / "bin"))
    with pytest.raises(StepError) as refused:
        check_env_manager_tools(manager)
    assert str(refused.value).startswith(f"env_manager={manager} needs {tool} on PATH (")
    assert "\n" not in str(refused.value)
    monkeypatch.setenv("PATH", fake_tools(tmp_path / "bin", tool))
    check_env_manager_tools(manager)  # found: no error
    check_env_manager_tools("local")  # needs nothing


def test_conda_is_looked_for_where_mlflow_looks(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", fake_tools(tmp_path / "bin", "conda"))
    monkeypatch.setenv("MLFLOW_CONDA_HOME", str(tmp_path / "conda"))
    with pytest.raises(StepError, match=f"needs {tmp_path / 'conda' / 'bin' / 'conda'} at that path"):
        check_env_manager_tools("conda")
    fake_tools(tmp_path / "conda" / "bin", "conda")
    check_env_manager_tools("conda")
    monkeypatch.setenv("MLFLOW_CONDA_CREATE_ENV_CMD", "mamba")
    with pytest.raises(StepError, match="needs .*mamba"):
        check_env_manager_tools("conda")


@pytest.mark.slow
def test_main_with_env_manager_uv_and_no_uv_says_so_in_one_line(tmp_path):
    """The user's view: ``mlflow run . -e main -P env_manager=uv`` where uv is not installed."""
    path = os.pathsep.join([str(VENV_BIN), "/usr/bin", "/bin"])
    if shutil.which("uv", path=path):
        pytest.skip("uv is installed in /usr/bin or /bin")
    env = {key: value for key, value in os.environ.items() if not key.startswith(("LAKECTL_", "MLFLOW_"))}
    env.update(
        {
            "PATH": path,
            "HOME": str(tmp_path),
            "SEGMODELS_HOME": str(tmp_path / "segmodels-home"),
            "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        }
    )
    result = subprocess.run(
        ["mlflow", "run", str(PROJECT), "-e", "main", "-P", "env_manager=uv", "--env-manager", "local"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("segmodels main: error:")]
    assert len(errors) == 1 and errors[0].startswith("segmodels main: error: env_manager=uv needs uv on PATH ("), (
        result.stderr[-3000:]
    )
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "segmodels-home").exists(), "refused before the embedded lakeFS server started"
