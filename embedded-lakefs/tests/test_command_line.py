"""``embedded-lakefs serve`` (and the command-less ``embedded-lakefs --data-dir DIR`` programs spawn): one line
names the endpoint and where the keys are, never the secret; a start that fails says why in one line and leaves
no data directory it created. ``embedded-lakefs gc``: see test_gc.py."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import lakefs_sdk
import pytest
from lakefs_sdk.client import LakeFSClient

from embedded_lakefs import create_server
from embedded_lakefs.datadir import read_server_state

KEY_VARIABLES = ("LAKECTL_CREDENTIALS_ACCESS_KEY_ID", "LAKECTL_CREDENTIALS_SECRET_ACCESS_KEY")


def environment(**keys: str) -> dict:
    env = {name: value for name, value in os.environ.items() if name not in KEY_VARIABLES}
    return {**env, **keys}


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "embedded_lakefs", *args], capture_output=True, text=True, timeout=60, env=env
    )


def start(*args: str, env: dict) -> tuple[subprocess.Popen, str]:
    """The server started with ``args``, and the first line it printed."""
    process = subprocess.Popen(
        [sys.executable, "-m", "embedded_lakefs", *args], env=env, stdout=subprocess.PIPE, text=True
    )
    return process, process.stdout.readline()


def stop(process: subprocess.Popen, data_dir) -> None:
    """SIGTERM once it serves (it has recorded itself in server.json): it stops cleanly, and removes that record."""
    deadline = time.monotonic() + 30
    while read_server_state(data_dir) is None and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0


def sdk(endpoint: str, keys: dict) -> LakeFSClient:
    return LakeFSClient(
        lakefs_sdk.Configuration(
            host=endpoint + "/api/v1", username=keys["access_key_id"], password=keys["secret_access_key"]
        )
    )


@pytest.mark.parametrize("command", [["serve", "--port", "0"], []], ids=["serve", "no command"])
def test_start_line_names_the_endpoint_and_the_credentials_file(tmp_path, command):
    data_dir = tmp_path / "data"
    process, line = start(*command, "--data-dir", str(data_dir), env=environment())
    try:
        credentials = data_dir / "credentials.json"
        keys = json.loads(credentials.read_text())
        endpoint = re.fullmatch(
            rf"lakeFS-compatible server on (http://127\.0\.0\.1:\d+) \(data in {re.escape(str(data_dir))}; "
            rf"access key id {keys['access_key_id']}, secret in {re.escape(str(credentials))}\)\n",
            line,
        ).group(1)
        assert keys["secret_access_key"] not in line
        client = sdk(endpoint, keys)
        client.repositories_api.create_repository(
            lakefs_sdk.RepositoryCreation(name="cli", storage_namespace="local://cli")
        )
        assert [repo.id for repo in client.repositories_api.list_repositories().results] == ["cli"]
    finally:
        stop(process, data_dir)
    assert not (data_dir / "server.json").exists()


def test_serve_takes_lakectls_keys_from_the_environment_and_only_serve_does(tmp_path):
    keys = {"access_key_id": "AKIAEXAMPLEFROMENV", "secret_access_key": "secret-from-env"}
    env = environment(**dict(zip(KEY_VARIABLES, keys.values())))
    process, line = start("serve", "--port", "0", "--data-dir", str(tmp_path / "served"), env=env)
    try:
        assert line.endswith(
            "; keys from LAKECTL_CREDENTIALS_ACCESS_KEY_ID and LAKECTL_CREDENTIALS_SECRET_ACCESS_KEY)\n"
        )
        assert keys["secret_access_key"] not in line
        endpoint = line.split()[3]
        assert sdk(endpoint, keys).repositories_api.list_repositories().results == []
        wrong = sdk(endpoint, {**keys, "secret_access_key": "nope"})
        with pytest.raises(lakefs_sdk.exceptions.UnauthorizedException):
            wrong.repositories_api.list_repositories()
    finally:
        stop(process, tmp_path / "served")
    # the command-less form (how segmodels spawns it) keeps the data directory's keys: its clients read them there
    process, line = start("--data-dir", str(tmp_path / "spawned"), env=env)
    try:
        assert "secret in " in line and keys["access_key_id"] not in line
    finally:
        stop(process, tmp_path / "spawned")


def test_half_of_lakectls_keys_is_refused_in_one_line(tmp_path):
    done = run("serve", "--data-dir", str(tmp_path / "data"), env=environment(**{KEY_VARIABLES[0]: "AKIAONLY"}))
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        "embedded-lakefs serve: error: set both LAKECTL_CREDENTIALS_ACCESS_KEY_ID and "
        "LAKECTL_CREDENTIALS_SECRET_ACCESS_KEY, or neither"
    ]
    assert not (tmp_path / "data").exists()


def test_no_command_and_no_data_dir_is_a_usage_error():
    done = run()
    assert done.returncode == 2
    assert (
        done.stderr.strip().splitlines()[-1] == "embedded-lakefs: error: give a command (serve, gc) or --data-dir DIR"
    )


def test_serve_on_a_locked_data_dir_fails_in_one_line(tmp_path):
    holder = create_server(tmp_path / "data")
    try:
        done = run("serve", "--port", "0", "--data-dir", str(tmp_path / "data"))
    finally:
        holder.shutdown()
    assert done.returncode != 0
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "data" in done.stderr
    assert (tmp_path / "data" / "credentials.json").is_file()  # not its own: left as it was


def test_serve_on_a_busy_port_fails_in_one_line(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = run("serve", "--port", str(port), "--data-dir", str(tmp_path / "data"))
    assert done.returncode != 0
    assert "Traceback" not in done.stderr and done.stderr.strip().splitlines() == [
        f"embedded-lakefs serve: error: cannot listen on 127.0.0.1:{port}: Address already in use"
    ]
    assert not (tmp_path / "data").exists()  # it created the data directory: nothing left behind
    # the data dir was released: a server can start on it at once
    create_server(tmp_path / "data").shutdown()
