"""HTTP basic-auth checking against the embedded server's access keys."""

from __future__ import annotations

import base64
import binascii
import hmac

from .datadir import Credentials
from .errors import Unauthorized

USER_ID = "admin"


def check_authorization(credentials: Credentials, header: str | None) -> str:
    """The user id for an ``Authorization: Basic`` header carrying ``credentials``, else raise 401."""
    if header and header.startswith("Basic "):
        try:
            key_id, _, secret = base64.b64decode(header[6:], validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            key_id, secret = "", ""
        if hmac.compare_digest(key_id.encode(), credentials.access_key_id.encode()) and hmac.compare_digest(
            secret.encode(), credentials.secret_access_key.encode()
        ):
            return USER_ID
    raise Unauthorized("error authenticating request")
