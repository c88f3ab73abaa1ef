"""Turn what a user passes as a data reference into a ``lakefs://`` URI pinned to a commit id."""

from __future__ import annotations

from segmodels.versioning import LakeFS, LakeFSUri


def pin_data_ref(lakefs: LakeFS, data_ref: str, repo: str, branch: str, prefix: str) -> LakeFSUri:
    """Resolve ``data_ref`` to a commit-pinned URI.

    ``data_ref`` may be a ``lakefs://repo/ref/path`` URI, a commit id, tag or branch of ``repo``, or
    empty (the head of ``branch``). The path defaults to ``prefix`` when the reference names none.
    """
    if data_ref.startswith("lakefs://"):
        uri = LakeFSUri.parse(data_ref)
        repo, ref, path = uri.repo, uri.ref, uri.path or prefix
    else:
        ref, path = (data_ref or branch), prefix
    commit_id = lakefs.resolve_commit(repo, ref)
    return LakeFSUri(repo, commit_id, path.strip("/"))
