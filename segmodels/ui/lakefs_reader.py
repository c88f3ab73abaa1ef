"""Read-only, paged lakeFS reads for the browser: one page of repositories, refs, commits, objects or diff entries
per call (``after`` / ``amount``, as lakeFS pages), so a page never reads more than it shows."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable, TypeVar

from lakefs_sdk.exceptions import ApiException, BadRequestException, NotFoundException

from embedded_lakefs.validation import check_object_path, check_ref, check_repository
from segmodels.versioning import LakeFS

T = TypeVar("T")
MAX_PAGE = 1000  # lakeFS' largest page


class NotFound(LookupError):
    """A repository, ref or object that does not exist (a 404 page)."""


class BadInput(ValueError):
    """A repository, ref or path from a URL that lakeFS would refuse (a 400 page)."""


@dataclass(frozen=True)
class Page:
    """One page of results and the ``after`` value of the next (empty when this is the last)."""

    items: list
    next_after: str


def valid_repository(repo: str) -> str:
    return _validated(check_repository, repo)


def valid_ref(ref: str) -> str:
    return _validated(check_ref, ref)


def valid_path(path: str) -> str:
    return _validated(check_object_path, path)


def _validated(check: Callable[[str], str], value: str) -> str:
    from embedded_lakefs.errors import BadRequest

    try:
        return check(value)
    except BadRequest as error:
        raise BadInput(error.message.removeprefix("validation error: ")) from None


class LakeFSReader:
    """Paged reads through a project client's ``lakefs_sdk`` (works against the embedded server and lakeFS)."""

    def __init__(self, lakefs: LakeFS):
        self.sdk = lakefs.sdk

    def _call(self, what: str, fn: Callable[..., T], *args, **kwargs) -> T:
        what = what if len(what) <= 120 else what[:117] + "..."  # it names values from a URL
        try:
            return fn(*args, **kwargs)
        except NotFoundException:
            raise NotFound(f"{what}: not found") from None
        except BadRequestException as error:
            raise BadInput(f"{what}: {_reason(error)}") from None
        except ApiException as error:
            raise RuntimeError(f"{what}: lakeFS answered {error.status}: {_reason(error)}") from None

    def repositories(self, after: str = "", amount: int = 100, prefix: str = "") -> Page:
        """A page of the repositories (those whose name starts with ``prefix``), by name."""
        page = self._call(
            "repositories",
            self.sdk.repositories_api.list_repositories,
            prefix=prefix,
            after=after,
            amount=_amount(amount),
        )
        return Page(list(page.results), page.pagination.next_offset if page.pagination.has_more else "")

    def repository(self, repo: str):
        return self._call(f"repository {repo}", self.sdk.repositories_api.get_repository, valid_repository(repo))

    def branches(self, repo: str, after: str = "", amount: int = 100) -> Page:
        page = self._call(
            f"branches of {repo}",
            self.sdk.branches_api.list_branches,
            valid_repository(repo),
            after=after,
            amount=_amount(amount),
        )
        return Page(list(page.results), page.pagination.next_offset if page.pagination.has_more else "")

    def tags(self, repo: str, after: str = "", amount: int = 100) -> Page:
        page = self._call(
            f"tags of {repo}", self.sdk.tags_api.list_tags, valid_repository(repo), after=after, amount=_amount(amount)
        )
        return Page(list(page.results), page.pagination.next_offset if page.pagination.has_more else "")

    def commit(self, repo: str, ref: str):
        return self._call(f"{repo}/{ref}", self.sdk.commits_api.get_commit, valid_repository(repo), valid_ref(ref))

    def log(self, repo: str, ref: str, after: str = "", amount: int = 20) -> Page:
        """The branch's own history (first parents: merges into it, not the ephemeral branches' commits)."""
        page = self._call(
            f"log of {repo}/{ref}",
            self.sdk.refs_api.log_commits,
            valid_repository(repo),
            valid_ref(ref),
            after=after,
            amount=_amount(amount),
            first_parent=True,
        )
        return Page(list(page.results), page.pagination.next_offset if page.pagination.has_more else "")

    def objects(self, repo: str, ref: str, prefix: str, after: str = "", amount: int = 100) -> Page:
        page = self._call(
            f"{repo}/{ref}/{prefix}",
            self.sdk.objects_api.list_objects,
            valid_repository(repo),
            valid_ref(ref),
            prefix=prefix,
            after=after,
            amount=_amount(amount),
            user_metadata=False,
        )
        return Page(list(page.results), page.pagination.next_offset if page.pagination.has_more else "")

    def stat(self, repo: str, ref: str, path: str):
        return self._call(
            f"{repo}/{ref}/{path}",
            self.sdk.objects_api.stat_object,
            valid_repository(repo),
            valid_ref(ref),
            valid_path(path),
        )

    def read(self, repo: str, ref: str, path: str) -> bytes:
        return bytes(
            self._call(
                f"{repo}/{ref}/{path}",
                self.sdk.objects_api.get_object,
                valid_repository(repo),
                valid_ref(ref),
                valid_path(path),
            )
        )

    def diff(self, repo: str, left: str, right: str, prefix: str = "", after: str = "", amount: int = 1000) -> Page:
        page = self._call(
            f"diff {repo} {left}...{right}",
            self.sdk.refs_api.diff_refs,
            valid_repository(repo),
            valid_ref(left),
            valid_ref(right),
            prefix=prefix,
            after=after,
            amount=_amount(amount),
        )
        return Page(list(page.results), page.pagination.next_offset if page.pagination.has_more else "")


def _amount(amount: int) -> int:
    return max(1, min(int(amount), MAX_PAGE))


def _reason(error: ApiException) -> str:
    """lakeFS' ``message`` of an error answer, on one line, shortened."""
    try:
        text = str(json.loads(error.body or "{}").get("message") or error.reason)
    except (ValueError, AttributeError):
        text = str(error.reason)
    text = " ".join(text.split())
    return text if len(text) <= 120 else text[:117] + "..."


def open_reader() -> LakeFSReader:
    """A reader over the configured lakeFS (LAKECTL_* / ~/.lakectl.yaml), else the embedded server (started when
    not running), as the pipeline connects."""
    from segmodels.versioning import connect

    return LakeFSReader(connect())
