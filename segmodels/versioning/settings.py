"""Where lakeFS is and how to log in: environment (``LAKECTL_*``) then ``~/.lakectl.yaml``."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .errors import LakeFSError

API_PATH = "/api/v1"
ENV_ENDPOINT = "LAKECTL_SERVER_ENDPOINT_URL"
ENV_ACCESS_KEY_ID = "LAKECTL_CREDENTIALS_ACCESS_KEY_ID"
ENV_SECRET_ACCESS_KEY = "LAKECTL_CREDENTIALS_SECRET_ACCESS_KEY"


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


@dataclass(frozen=True)
class LakeFSSettings:
    """Endpoint (normalised, without ``/api/v1``) and credentials; the repr hides the secret."""

    endpoint: str
    access_key_id: str
    secret_access_key: str = field(repr=False)

    def __post_init__(self):
        object.__setattr__(self, "endpoint", normalize_endpoint(self.endpoint))

    @property
    def api_url(self) -> str:
        """Base URL of the REST API, as the sdk wants it."""
        return self.endpoint + API_PATH

    @classmethod
    def from_environment(cls, lakectl_config: Path | None = None) -> "LakeFSSettings | None":
        """Settings from ``LAKECTL_*`` variables, else from ``~/.lakectl.yaml``; None when no endpoint is set."""
        config = _read_lakectl_config(lakectl_config or lakectl_config_path())
        endpoint = os.environ.get(ENV_ENDPOINT) or config.get("server", {}).get("endpoint_url")
        if not endpoint:
            return None
        credentials = config.get("credentials", {})
        access_key_id = os.environ.get(ENV_ACCESS_KEY_ID) or credentials.get("access_key_id")
        secret = os.environ.get(ENV_SECRET_ACCESS_KEY) or credentials.get("secret_access_key")
        if not access_key_id or not secret:
            raise LakeFSError(f"lakeFS endpoint {endpoint} is configured without credentials: set "
                              f"{ENV_ACCESS_KEY_ID} and {ENV_SECRET_ACCESS_KEY} or credentials in ~/.lakectl.yaml")
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
