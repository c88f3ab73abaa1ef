"""``lakefs://repo/ref/path`` URIs."""

from __future__ import annotations

import re
from dataclasses import dataclass

from segmodels.redaction import shown

from .errors import LakeFSError

SCHEME = "lakefs://"
REPOSITORY_NAME = re.compile(r"[a-z0-9][a-z0-9-]{2,62}", re.ASCII)  # as lakeFS names repositories


@dataclass(frozen=True)
class LakeFSUri:
    """A location in lakeFS: repository, ref (branch, tag, commit id or expression) and object path or prefix."""

    repo: str
    ref: str
    path: str = ""

    @classmethod
    def parse(cls, uri: str) -> LakeFSUri:
        """Parse ``lakefs://repo/ref[/path]``; a URI with user info (``lakefs://user:pass@repo/...``: credentials come
        from ``LAKECTL_*`` or ``~/.lakectl.yaml``) or no repository name is refused in one line that shows the URI
        redacted and cut short."""
        if not isinstance(uri, str) or not uri.startswith(SCHEME):
            raise LakeFSError(f"{shown(uri)}: not a lakeFS URI (expected lakefs://repo/ref/path)")
        repo, _, rest = uri[len(SCHEME) :].partition("/")
        ref, _, path = rest.partition("/")
        if "@" in repo or ("@" in uri and not REPOSITORY_NAME.fullmatch(repo)):
            raise LakeFSError(
                f"{shown(uri)}: a lakeFS URI takes no user info; pass credentials as "
                "LAKECTL_CREDENTIALS_ACCESS_KEY_ID/LAKECTL_CREDENTIALS_SECRET_ACCESS_KEY "
                "or in ~/.lakectl.yaml"
            )
        if not repo or not ref:
            raise LakeFSError(f"{shown(uri)}: a lakeFS URI needs a repository and a ref (lakefs://repo/ref/path)")
        if not REPOSITORY_NAME.fullmatch(repo):
            raise LakeFSError(
                f"{shown(uri)}: {shown(repo, 40)!r} is not a lakeFS repository name "
                "(3-63 characters: a-z, 0-9, '-', not starting with '-')"
            )
        return cls(repo, ref, path)

    def __str__(self) -> str:
        return f"{SCHEME}{self.repo}/{self.ref}/{self.path}" if self.path else f"{SCHEME}{self.repo}/{self.ref}"
