"""``segmodels lakefs serve|gc``: embedded-lakefs' own ``serve`` and ``gc`` under segmodels' name, over the segmodels
home's data directory by default. ``serve`` starts the embedded server by hand and prints the endpoint and where the
keys are, never the secret; a start that fails says why in one line."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys

import lakefs_sdk
import pytest
from lakefs_sdk.client import LakeFSClient

from embedded_lakefs import create_server
from segmodels.cli import build_parser
from segmodels.home import embedded_server_dir


def serve(tmp_path, env):
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "segmodels.cli",
            "lakefs",
            "serve",
            "--port",
            "0",
            "--data-dir",
            str(tmp_path / "lakefs"),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return process, process.stdout.readline()


@pytest.mark.parametrize("keys_from_env", [False, True])
def test_serve_prints_working_endpoint_and_credentials(tmp_path, keys_from_env):
    env = dict(os.environ)
    if keys_from_env:
        env["LAKECTL_CREDENTIALS_ACCESS_KEY_ID"] = "AKIAEXAMPLEFROMENV"
        env["LAKECTL_CREDENTIALS_SECRET_ACCESS_KEY"] = "secret-from-env"
    process, line = serve(tmp_path, env)
    try:
        endpoint = re.match(r"lakeFS-compatible server on (http://127\.0\.0\.1:\d+) ", line).group(1)
        if keys_from_env:
            keys = {"access_key_id": "AKIAEXAMPLEFROMENV", "secret_access_key": "secret-from-env"}
            assert "keys from LAKECTL_CREDENTIALS_ACCESS_KEY_ID and LAKECTL_CREDENTIALS_SECRET_ACCESS_KEY" in line
        else:
            credentials = tmp_path / "lakefs" / "credentials.json"
            keys = json.loads(credentials.read_text())
            assert f"access key id {keys['access_key_id']}, secret in {credentials}" in line
        assert keys["secret_access_key"] not in line
        config = lakefs_sdk.Configuration(
            host=endpoint + "/api/v1", username=keys["access_key_id"], password=keys["secret_access_key"]
        )
        client = LakeFSClient(config)
        client.repositories_api.create_repository(
            lakefs_sdk.RepositoryCreation(name="cli", storage_namespace="local://cli", default_branch="main")
        )
        assert [repo.id for repo in client.repositories_api.list_repositories().results] == ["cli"]
        wrong = LakeFSClient(lakefs_sdk.Configuration(host=config.host, username=config.username, password="nope"))
        with pytest.raises(lakefs_sdk.exceptions.UnauthorizedException):
            wrong.repositories_api.list_repositories()
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=20)
    assert process.returncode is not None


def _serve(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "segmodels.cli", "lakefs", "serve", *args], capture_output=True, text=True, timeout=60
    )


def test_serve_on_a_locked_data_dir_fails_in_one_line(tmp_path):
    holder = create_server(tmp_path / "data")
    try:
        done = _serve("--port", "0", "--data-dir", str(tmp_path / "data"))
    finally:
        holder.shutdown()
    assert done.returncode != 0
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "data" in done.stderr and done.stderr.startswith("segmodels lakefs serve: error: ")


def test_serve_on_a_busy_port_fails_in_one_line(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        done = _serve("--port", str(busy.getsockname()[1]), "--data-dir", str(tmp_path / "data"))
    assert done.returncode != 0
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    # the data dir was released: a server can start on it at once
    create_server(tmp_path / "data").shutdown()


def test_lakefs_commands_default_to_the_segmodels_homes_data_dir(isolated_lakefs_environment):
    for command in ("serve", "gc"):
        args = build_parser().parse_args(["lakefs", command])
        assert args.data_dir == embedded_server_dir() == isolated_lakefs_environment / "lakefs"
    assert build_parser().parse_args(["lakefs", "serve"]).port == 8000


def test_gc_reports_and_refuses_bad_input(tmp_path):
    server = create_server(tmp_path / "lakefs", fsync=False).start_in_thread()
    try:
        client = LakeFSClient(
            lakefs_sdk.Configuration(
                host=server.endpoint + "/api/v1", username=server.access_key_id, password=server.secret_access_key
            )
        )
        client.repositories_api.create_repository(
            lakefs_sdk.RepositoryCreation(name="gc-test", storage_namespace="local://gc-test")
        )
        client.objects_api.upload_object("gc-test", "main", "x", content=b"x")
        client.commits_api.commit("gc-test", "main", lakefs_sdk.CommitCreation(message="x"))
        data_dir = tmp_path / "lakefs"
        command = [sys.executable, "-m", "segmodels.cli", "lakefs", "gc", "--data-dir", str(data_dir)]
        done = subprocess.run(command + ["--dry-run"], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("segmodels lakefs gc: would free 0 blobs")
        bad = subprocess.run(command + ["--retention-days", "-1"], capture_output=True, text=True, timeout=120)
        assert bad.returncode == 2 and bad.stderr.strip().endswith("--retention-days -1.0: must not be negative")
        missing = subprocess.run(command[:-1] + [str(data_dir / "nope")], capture_output=True, text=True, timeout=120)
        assert missing.returncode == 1 and "lakefs.db is missing" in missing.stderr
        assert not (data_dir / "nope").exists()
        assert bytes(client.objects_api.get_object("gc-test", "main", "x")) == b"x"
    finally:
        server.shutdown()
