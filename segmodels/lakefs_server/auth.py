"""Access keys of the embedded server and HTTP basic-auth checking."""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import os
import secrets
import string
from dataclasses import dataclass, field
from pathlib import Path

from .errors import Unauthorized

USER_ID = "admin"


@dataclass(frozen=True)
class Credentials:
    """An access key pair; the secret never appears in the repr."""

    access_key_id: str
    secret_access_key: str = field(repr=False)

    @classmethod
    def generate(cls) -> "Credentials":
        """A new key pair shaped like lakeFS' (``AKIAJ...`` id, 40-char secret)."""
        alphabet = string.ascii_uppercase + string.digits
        key_id = "AKIAJ" + "".join(secrets.choice(alphabet) for _ in range(15))
        secret = "".join(secrets.choice(string.ascii_letters + string.digits + "+/") for _ in range(40))
        return cls(key_id, secret)

    @classmethod
    def load_or_create(cls, path: Path) -> "Credentials":
        """Read ``path`` (JSON), or create it with mode 0600 holding a new key pair."""
        path = Path(path)
        if path.exists():
            data = json.loads(path.read_text())
            try:
                return cls(data["access_key_id"], data["secret_access_key"])
            except KeyError as exc:
                raise ValueError(f"{path}: credentials file lacks {exc.args[0]!r}") from None
        credentials = cls.generate()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump({"access_key_id": credentials.access_key_id,
                       "secret_access_key": credentials.secret_access_key}, out)
        try:
            os.link(tmp, path)  # never replaces credentials another process created meanwhile
        except FileExistsError:
            os.unlink(tmp)
            return cls.load_or_create(path)
        os.unlink(tmp)
        return credentials

    def check_authorization(self, header: str | None) -> str:
        """Return the user id for a valid ``Authorization: Basic`` header, else raise 401."""
        if header and header.startswith("Basic "):
            try:
                key_id, _, secret = base64.b64decode(header[6:], validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                key_id, secret = "", ""
            if hmac.compare_digest(key_id.encode(), self.access_key_id.encode()) and hmac.compare_digest(
                    secret.encode(), self.secret_access_key.encode()):
                return USER_ID
        raise Unauthorized("error authenticating request")
