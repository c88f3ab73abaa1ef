"""Shared fixtures: the embedded server over a temp data directory, the address and keys clients use, and a
unique repository name per test. Set ``LAKEFS_TEST_ENDPOINT`` (with ``LAKEFS_TEST_ACCESS_KEY_ID`` and
``LAKEFS_TEST_SECRET_ACCESS_KEY``) to run the contract suites against a real lakeFS instead."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field

import lakefs_sdk
import pytest
from lakefs_sdk.client import LakeFSClient

from embedded_lakefs import create_server

API_PATH = "/api/v1"


@dataclass(frozen=True)
class Target:
    """Where a lakeFS answers, and the keys to ask it with."""

    endpoint: str
    access_key_id: str
    secret_access_key: str = field(repr=False)

    @property
    def api_url(self) -> str:
        return self.endpoint.rstrip("/") + API_PATH


@pytest.fixture(scope="session")
def lakefs_server(tmp_path_factory):
    """An embedded server over a temp data directory, serving from a thread for the whole session."""
    server = create_server(tmp_path_factory.mktemp("lakefs-server")).start_in_thread()
    yield server
    server.shutdown()


@pytest.fixture
def lakefs_settings(lakefs_server) -> Target:
    return Target(lakefs_server.endpoint, lakefs_server.access_key_id, lakefs_server.secret_access_key)


@pytest.fixture
def sdk(lakefs_settings) -> LakeFSClient:
    """A lakefs-sdk client of the session's server."""
    return LakeFSClient(
        lakefs_sdk.Configuration(
            host=lakefs_settings.api_url,
            username=lakefs_settings.access_key_id,
            password=lakefs_settings.secret_access_key,
        )
    )


@pytest.fixture
def repo_name() -> str:
    """A repository name unique to the test (the session server is shared)."""
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def against_real_lakefs() -> bool:
    return bool(os.environ.get("LAKEFS_TEST_ENDPOINT"))


@pytest.fixture(scope="session")
def contract_target(request, against_real_lakefs) -> Target:
    """The server the contract suites run against: a real lakeFS when ``LAKEFS_TEST_ENDPOINT`` is set, else the
    embedded one."""
    if against_real_lakefs:
        return Target(
            os.environ["LAKEFS_TEST_ENDPOINT"],
            os.environ["LAKEFS_TEST_ACCESS_KEY_ID"],
            os.environ["LAKEFS_TEST_SECRET_ACCESS_KEY"],
        )
    server = request.getfixturevalue("lakefs_server")
    return Target(server.endpoint, server.access_key_id, server.secret_access_key)
