"""``segmodels lakefs serve``: starts the embedded server by hand, prints endpoint and credentials."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import lakefs_sdk
import pytest
from lakefs_sdk.client import LakeFSClient


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
    lines = [process.stdout.readline() for _ in range(5)]
    printed = dict(re.findall(r"export (\w+)=(\S+)", "".join(lines)))
    return process, printed


@pytest.mark.parametrize("keys_from_env", [False, True])
def test_serve_prints_working_endpoint_and_credentials(tmp_path, keys_from_env):
    env = dict(os.environ)
    if keys_from_env:
        env["LAKECTL_CREDENTIALS_ACCESS_KEY_ID"] = "AKIAEXAMPLEFROMENV"
        env["LAKECTL_CREDENTIALS_SECRET_ACCESS_KEY"] = "secret-from-env"
    process, printed = serve(tmp_path, env)
    try:
        assert printed["LAKECTL_SERVER_ENDPOINT_URL"].startswith("http://127.0.0.1:")
        if keys_from_env:
            assert printed["LAKECTL_CREDENTIALS_ACCESS_KEY_ID"] == "AKIAEXAMPLEFROMENV"
            assert printed["LAKECTL_CREDENTIALS_SECRET_ACCESS_KEY"] == "secret-from-env"
        config = lakefs_sdk.Configuration(
            host=printed["LAKECTL_SERVER_ENDPOINT_URL"] + "/api/v1",
            username=printed["LAKECTL_CREDENTIALS_ACCESS_KEY_ID"],
            password=printed["LAKECTL_CREDENTIALS_SECRET_ACCESS_KEY"],
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
