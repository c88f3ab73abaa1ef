"""Where lakeFS is and how to log in: environment (``LAKECTL_*``) then ``~/.lakectl.yaml``; how long to wait for it
(``SEGMODELS_LAKEFS_*``, read when settings are made)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .errors import LakeFSError

API_PATH = "/api/v1"
ENV_ENDPOINT = "LAKECTL_SERVER_ENDPOINT_URL"
ENV_ACCESS_KEY_ID = "LAKECTL_CREDENTIALS_ACCESS_KEY_ID"
ENV_SECRET_ACCESS_KEY = "LAKECTL_CREDENTIALS_SECRET_ACCESS_KEY"

# Seconds. Every request waits at most CONNECT_TIMEOUT for a connection and at most READ_TIMEOUT for each socket
# read or write after that (per read, not per request: a big upload or download may take longer as long as it
# moves). A failed request is retried with backoff, but no retry starts RETRY_WINDOW seconds after the first
# attempt: a call fails after at most about RETRY_WINDOW + CONNECT_TIMEOUT + READ_TIMEOUT seconds.
ENV_CONNECT_TIMEOUT = "SEGMODELS_LAKEFS_CONNECT_TIMEOUT"
ENV_READ_TIMEOUT = "SEGMODELS_LAKEFS_READ_TIMEOUT"
ENV_RETRY_WINDOW = "SEGMODELS_LAKEFS_RETRY_WINDOW"
# Ephemeral branches of atomic writes whose writer cannot be shown alive are deleted after this many seconds.
ENV_EPHEMERAL_MAX_AGE = "SEGMODELS_LAKEFS_EPHEMERAL_MAX_AGE"
DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_READ_TIMEOUT = 60.0
DEFAULT_RETRY_WINDOW = 45.0
DEFAULT_EPHEMERAL_MAX_AGE = 24 * 3600.0


def lakectl_config_path() -> Path:
    """The lakectl configuration file read for settings (``~/.lakectl.yaml``)."""
    return Path.home() / ".lakectl.yaml"


def normalize_endpoint(endpoint: str) -> str:
    """``http://host:port`` from ``http://host:port``, ``.../`` or lakectl-style ``.../api/v1``."""
    endpoint = (endpoint or "").strip().rstrip("/")
    if endpoint.endswith(API_PATH):
        endpoint = endpoint[: -len(API_PATH)]
    if not endpoint.startswith(("http://", "https://")):
        raise LakeFSError(f"lakeFS endpoint {endpoint!r}: must start with http:// or https://")
    return endpoint


def seconds_from_environment(name: str, default: float) -> float:
    """``$name`` as a positive number of seconds, ``default`` when unset or empty."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise LakeFSError(f"{name}={raw!r}: expected a positive number of seconds")
    return value


def _seconds(name: str, default: float):
    return field(default_factory=lambda: seconds_from_environment(name, default))


@dataclass(frozen=True)
class LakeFSSettings:
    """Endpoint (normalised, without ``/api/v1``) and credentials; the repr hides the secret.

    The waits (seconds) default to ``$SEGMODELS_LAKEFS_CONNECT_TIMEOUT`` (10), ``..._READ_TIMEOUT`` (60),
    ``..._RETRY_WINDOW`` (45) and ``..._EPHEMERAL_MAX_AGE`` (86400), read when the settings are made.
    """

    endpoint: str
    access_key_id: str
    secret_access_key: str = field(repr=False)
    connect_timeout: float = _seconds(ENV_CONNECT_TIMEOUT, DEFAULT_CONNECT_TIMEOUT)
    read_timeout: float = _seconds(ENV_READ_TIMEOUT, DEFAULT_READ_TIMEOUT)
    retry_window: float = _seconds(ENV_RETRY_WINDOW, DEFAULT_RETRY_WINDOW)
    ephemeral_max_age: float = _seconds(ENV_EPHEMERAL_MAX_AGE, DEFAULT_EPHEMERAL_MAX_AGE)

    def __post_init__(self):
        object.__setattr__(self, "endpoint", normalize_endpoint(self.endpoint))
        for name in ("connect_timeout", "read_timeout", "retry_window", "ephemeral_max_age"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not (math.isfinite(value) and value > 0)
            ):
                raise LakeFSError(f"lakeFS settings: {name}={value!r}: expected a positive number of seconds")
            object.__setattr__(self, name, float(value))

    @property
    def api_url(self) -> str:
        """Base URL of the REST API, as the sdk wants it."""
        return self.endpoint + API_PATH

    @classmethod
    def from_environment(cls, lakectl_config: Path | None = None) -> LakeFSSettings | None:
        """Settings from ``LAKECTL_*`` variables, else from ``~/.lakectl.yaml``; None when no endpoint is set."""
        config = _read_lakectl_config(lakectl_config or lakectl_config_path())
        endpoint = os.environ.get(ENV_ENDPOINT) or config.get("server", {}).get("endpoint_url")
        if not endpoint:
            return None
        credentials = config.get("credentials", {})
        access_key_id = os.environ.get(ENV_ACCESS_KEY_ID) or credentials.get("access_key_id")
        secret = os.environ.get(ENV_SECRET_ACCESS_KEY) or credentials.get("secret_access_key")
        if not access_key_id or not secret:
            raise LakeFSError(
                f"lakeFS endpoint {endpoint} is configured without credentials: set "
                f"{ENV_ACCESS_KEY_ID} and {ENV_SECRET_ACCESS_KEY} or credentials in ~/.lakectl.yaml"
            )
        return cls(endpoint, access_key_id, secret)


def _read_lakectl_config(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise LakeFSError(f"{path}: not valid YAML ({exc.__class__.__name__})") from None
    if not isinstance(data, dict):
        raise LakeFSError(f"{path}: expected a mapping with server/credentials sections")
    return {key: value for key, value in data.items() if isinstance(value, dict)}
