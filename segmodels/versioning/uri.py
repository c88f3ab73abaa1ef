"""``lakefs://repo/ref/path`` URIs."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import LakeFSError

SCHEME = "lakefs://"


@dataclass(frozen=True)
class LakeFSUri:
    """A location in lakeFS: repository, ref (branch, tag, commit id or expression) and object path or prefix."""

    repo: str
    ref: str
    path: str = ""

    @classmethod
    def parse(cls, uri: str) -> "LakeFSUri":
        """Parse ``lakefs://repo/ref[/path]``."""
        if not isinstance(uri, str) or not uri.startswith(SCHEME):
            raise LakeFSError(f"{uri!r}: not a lakeFS URI (expected lakefs://repo/ref/path)")
        repo, _, rest = uri[len(SCHEME):].partition("/")
        ref, _, path = rest.partition("/")
        if not repo or not ref:
            raise LakeFSError(f"{uri!r}: a lakeFS URI needs a repository and a ref (lakefs://repo/ref/path)")
        return cls(repo, ref, path)

    def __str__(self) -> str:
        return f"{SCHEME}{self.repo}/{self.ref}/{self.path}" if self.path else f"{SCHEME}{self.repo}/{self.ref}"
