"""lakeFS' own system tests (``esti/`` in treeverse/lakeFS, v1.84.0), their REST scenarios re-expressed through
``lakefs_sdk`` against the embedded server: each test names the Go test it mirrors (file and function) and asserts
what that test asserts, plus the end state it implies."""

from __future__ import annotations

import secrets
from concurrent.futures import ThreadPoolExecutor

import lakefs_sdk
import pytest
from lakefs_sdk.client import LakeFSClient

CONTENT_LENGTH = 16  # esti's randomDataContentLength
MAIN = "main"


@pytest.fixture
def repo(sdk, repo_name) -> str:
    """esti's setupTest: a new repository with a ``main`` branch."""
    create_repository(sdk, repo_name)
    return repo_name


def create_repository(sdk: LakeFSClient, name: str, **fields) -> lakefs_sdk.Repository:
    return sdk.repositories_api.create_repository(
        lakefs_sdk.RepositoryCreation(name=name, storage_namespace=f"local://{name}", default_branch=MAIN, **fields)
    )


def upload_random(sdk: LakeFSClient, repo: str, branch: str, path: str, **force) -> str:
    """esti's UploadFileRandomData: ``CONTENT_LENGTH`` random characters; returns them."""
    content = secrets.token_hex(CONTENT_LENGTH // 2)
    sdk.objects_api.upload_object(repo, branch, path, content=content.encode(), **force)
    return content


def commit(sdk: LakeFSClient, repo: str, branch: str, message: str, **fields) -> lakefs_sdk.Commit:
    return sdk.commits_api.commit(repo, branch, lakefs_sdk.CommitCreation(message=message, **fields))


def found(sdk: LakeFSClient, repo: str, ref: str, path: str) -> bool:
    """esti's objectFound: the object answers 200, or 404."""
    try:
        sdk.objects_api.get_object(repo, ref, path)
    except lakefs_sdk.exceptions.NotFoundException:
        return False
    return True


def read(sdk: LakeFSClient, repo: str, ref: str, path: str) -> str:
    return bytes(sdk.objects_api.get_object(repo, ref, path)).decode()


def listed(sdk: LakeFSClient, repo: str, ref: str) -> list[str]:
    return [o.path for o in sdk.objects_api.list_objects(repo, ref, amount=1000).results]


def status_of(call, *args, **kwargs) -> int:
    with pytest.raises(lakefs_sdk.ApiException) as info:
        call(*args, **kwargs)
    return info.value.status


# -- esti/sanity_api_test.go ------------------------------------------------------------------------------------------
def test_sanity_api(sdk, repo):
    """TestSanityAPI."""
    assert listed(sdk, repo, MAIN) == []
    paths = [f"file{i}" for i in range(5)]
    contents = [upload_random(sdk, repo, MAIN, p) for p in paths]
    assert [read(sdk, repo, MAIN, p) for p in paths] == contents
    assert listed(sdk, repo, MAIN) == paths
    commit(sdk, repo, MAIN, "first commit")
    assert listed(sdk, repo, MAIN) == paths

    branch_ref = sdk.branches_api.create_branch(repo, lakefs_sdk.BranchCreation(name="branch1", source=MAIN))
    assert branch_ref
    branches = sdk.branches_api.list_branches(repo).results
    assert sorted(b.id for b in branches) == ["branch1", MAIN]
    assert all(b.commit_id and b.commit_id != b.id for b in branches)

    upload_random(sdk, repo, "branch1", "file0")
    sdk.objects_api.delete_object(repo, "branch1", "file1")
    upload_random(sdk, repo, "branch1", "fileX")
    assert listed(sdk, repo, MAIN) == paths
    assert listed(sdk, repo, "branch1") == ["file0", "file2", "file3", "file4", "fileX"]
    assert sdk.refs_api.diff_refs(repo, MAIN, "branch1").results == []  # nothing committed yet

    commit(sdk, repo, "branch1", "3 changes")
    diff = sdk.refs_api.diff_refs(repo, MAIN, "branch1", amount=-1).results
    assert sorted((d.path, d.path_type, d.type, d.size_bytes) for d in diff) == [
        ("file0", "object", "changed", CONTENT_LENGTH),
        ("file1", "object", "removed", CONTENT_LENGTH),
        ("fileX", "object", "added", CONTENT_LENGTH),
    ]
    merged = sdk.refs_api.merge_into_branch(repo, "branch1", MAIN, lakefs_sdk.Merge())
    assert merged.reference
    assert sdk.refs_api.diff_refs(repo, MAIN, "branch1").results == []
    assert sdk.refs_api.diff_refs(repo, "branch1", MAIN).results == []
    sdk.repositories_api.delete_repository(repo)
    assert status_of(sdk.repositories_api.get_repository, repo) == 404


# -- esti/commit_test.go ----------------------------------------------------------------------------------------------
def test_commit_single(sdk, repo):
    """TestCommitSingle."""
    content = upload_random(sdk, repo, MAIN, "1.txt")
    commit(sdk, repo, MAIN, "singleCommit")
    assert read(sdk, repo, MAIN, "1.txt") == content


def test_commit_in_mixed_order(sdk, repo):
    """TestCommitInMixedOrder: 100 objects uploaded by 5 parallel clients and committed, then 100 more whose names
    sort before the first ones."""
    first, second = [f"run2/foo{i + 1}" for i in range(100)], [f"run1/foo{i + 1}" for i in range(100)]
    for names, message in ((first, "mixedOrderCommit1"), (second, "mixedOrderCommit2")):
        with ThreadPoolExecutor(5) as pool:
            list(pool.map(lambda name: upload_random(sdk, repo, MAIN, name), names))
        commit(sdk, repo, MAIN, message)
    assert listed(sdk, repo, MAIN) == sorted(first + second)
    assert sdk.branches_api.diff_branch(repo, MAIN).results == []
    log = sdk.refs_api.log_commits(repo, MAIN).results
    assert [c.message for c in log] == ["mixedOrderCommit2", "mixedOrderCommit1", "Repository created"]


def test_commit_with_tombstone(sdk, repo):
    """TestCommitWithTombstone: a commit holding a tombstone for an object below the committed ones."""
    upload_random(sdk, repo, MAIN, "objb.txt")
    upload_random(sdk, repo, MAIN, "objc.txt")
    commit(sdk, repo, MAIN, "First commit")
    upload_random(sdk, repo, MAIN, "obja.txt")
    upload_random(sdk, repo, MAIN, "objd.txt")
    sdk.objects_api.delete_object(repo, MAIN, "obja.txt")
    made = commit(sdk, repo, MAIN, "Commit with tombstone")
    assert listed(sdk, repo, MAIN) == ["objb.txt", "objc.txt", "objd.txt"]
    changes = sdk.refs_api.diff_refs(repo, made.parents[0], made.id).results
    assert [(d.path, d.type) for d in changes] == [("objd.txt", "added")]


def test_commit_read_only_repo(sdk, repo_name):
    """TestCommitReadOnlyRepo."""
    create_repository(sdk, repo_name, read_only=True)
    assert status_of(commit, sdk, repo_name, MAIN, "singleCommit") == 403
    content = upload_random(sdk, repo_name, MAIN, "1.txt", force=True)
    commit(sdk, repo_name, MAIN, "singleCommit", force=True)
    assert read(sdk, repo_name, MAIN, "1.txt") == content


# -- esti/delete_test.go ----------------------------------------------------------------------------------------------
def test_delete_staging(sdk, repo):
    """TestDeleteStaging."""
    upload_random(sdk, repo, MAIN, "1.txt")
    assert found(sdk, repo, MAIN, "1.txt")
    sdk.objects_api.delete_object(repo, MAIN, "1.txt")
    assert not found(sdk, repo, MAIN, "1.txt")


def test_delete_committed(sdk, repo):
    """TestDeleteCommitted."""
    upload_random(sdk, repo, MAIN, "1.txt")
    commit(sdk, repo, MAIN, "singleCommit")
    sdk.objects_api.delete_object(repo, MAIN, "1.txt")
    assert not found(sdk, repo, MAIN, "1.txt")
    assert found(sdk, repo, f"{MAIN}@", "1.txt")  # still committed


def test_delete_objects_read_only_repository(sdk, repo_name):
    """TestDeleteObjectsReadOnlyRepository."""
    create_repository(sdk, repo_name, read_only=True)
    upload_random(sdk, repo_name, MAIN, "1.txt", force=True)
    assert status_of(sdk.objects_api.delete_object, repo_name, MAIN, "1.txt") == 403
    sdk.objects_api.delete_object(repo_name, MAIN, "1.txt", force=True)
    assert not found(sdk, repo_name, MAIN, "1.txt")


def test_commit_delete_committed(sdk, repo):
    """TestCommitDeleteCommitted."""
    upload_random(sdk, repo, MAIN, "1.txt")
    commit(sdk, repo, MAIN, "singleCommit")
    sdk.objects_api.delete_object(repo, MAIN, "1.txt")
    commit(sdk, repo, MAIN, "deleteCommit")
    assert not found(sdk, repo, MAIN, "1.txt")
    assert not found(sdk, repo, f"{MAIN}@", "1.txt")


# -- esti/merge_test.go -----------------------------------------------------------------------------------------------
def test_merge_and_list(sdk, repo):
    """TestMergeAndList: two rounds of ten new objects on a branch, merged with strategy source-wins, then
    dest-wins; the merge commit records the strategy; main lists README and the ten, one page."""
    contents = {upload_random(sdk, repo, MAIN, "README")}
    commit(sdk, repo, MAIN, "Initial content")
    assert sdk.branches_api.create_branch(repo, lakefs_sdk.BranchCreation(name="feature-1", source=MAIN))
    for strategy in ("source-wins", "dest-wins"):
        contents |= {upload_random(sdk, repo, "feature-1", f"{i}.txt") for i in range(10)}
        commit(sdk, repo, "feature-1", "Adding 10 files")
        merged = sdk.refs_api.merge_into_branch(repo, "feature-1", MAIN, lakefs_sdk.Merge(strategy=strategy))
        metadata = sdk.commits_api.get_commit(repo, merged.reference).metadata
        assert metadata[".lakefs.merge.strategy"] == strategy
        page = sdk.objects_api.list_objects(repo, MAIN, amount=100)
        assert not page.pagination.has_more and page.pagination.results == len(page.results) == 11
        assert all(read(sdk, repo, MAIN, o.path) in contents for o in page.results)
    assert read(sdk, repo, MAIN, "0.txt") == read(sdk, repo, "feature-1", "0.txt")  # no conflict: the source's


# -- esti/rollback_test.go --------------------------------------------------------------------------------------------
def test_reset_all(sdk, repo):
    """TestResetAll."""
    content = upload_random(sdk, repo, MAIN, "1.txt")
    commit(sdk, repo, MAIN, "resetAll")
    sdk.objects_api.delete_object(repo, MAIN, "1.txt")
    sdk.branches_api.reset_branch(repo, MAIN, lakefs_sdk.ResetCreation(type="reset"))
    assert read(sdk, repo, MAIN, "1.txt") == content


def test_hard_reset(sdk, repo):
    """TestHardReset: hard reset to ``main~`` makes that commit the head, exactly."""
    upload_random(sdk, repo, MAIN, "1.txt")
    first = commit(sdk, repo, MAIN, "resetAll")
    commit(sdk, repo, MAIN, "another commit", allow_empty=True)
    sdk.experimental_api.hard_reset_branch(repo, MAIN, ref=f"{MAIN}~")
    assert sdk.commits_api.get_commit(repo, MAIN) == first


def test_reset_path(sdk, repo):
    """TestResetPath: resetting a common prefix restores what is below it only."""
    content = upload_random(sdk, repo, MAIN, "prefix/1.txt")
    upload_random(sdk, repo, MAIN, "2.txt")
    commit(sdk, repo, MAIN, "resetPath")
    sdk.objects_api.delete_object(repo, MAIN, "prefix/1.txt")
    sdk.objects_api.delete_object(repo, MAIN, "2.txt")
    sdk.branches_api.reset_branch(repo, MAIN, lakefs_sdk.ResetCreation(type="common_prefix", path="prefix"))
    assert read(sdk, repo, MAIN, "prefix/1.txt") == content
    assert not found(sdk, repo, MAIN, "2.txt")


def test_reset_object(sdk, repo):
    """TestResetObject."""
    content = upload_random(sdk, repo, MAIN, "1.txt")
    upload_random(sdk, repo, MAIN, "2.txt")
    commit(sdk, repo, MAIN, "resetObject")
    sdk.objects_api.delete_object(repo, MAIN, "1.txt")
    sdk.objects_api.delete_object(repo, MAIN, "2.txt")
    sdk.branches_api.reset_branch(repo, MAIN, lakefs_sdk.ResetCreation(type="object", path="1.txt"))
    assert read(sdk, repo, MAIN, "1.txt") == content
    assert not found(sdk, repo, MAIN, "2.txt")


def test_revert(sdk, repo):
    """TestRevert: reverting the first of two commits (parent_number 0, Go's zero value) undoes it only."""
    upload_random(sdk, repo, MAIN, "1.txt")
    reverted = commit(sdk, repo, MAIN, "singleCommit").id
    content = upload_random(sdk, repo, MAIN, "2.txt")
    commit(sdk, repo, MAIN, "revert")
    sdk.branches_api.revert_branch(repo, MAIN, lakefs_sdk.RevertCreation(ref=reverted, parent_number=0))
    assert not found(sdk, repo, MAIN, "1.txt")
    assert read(sdk, repo, MAIN, "2.txt") == content


# -- esti/repository_test.go ------------------------------------------------------------------------------------------
def test_repository_basic_ops(sdk, repo_name):
    """TestRepositoryBasicOps: five repositories are listed, then deleted."""
    names = [f"{repo_name}-{i}" for i in range(5)]
    for name in names:
        create_repository(sdk, name)
    listed_names = [r.id for r in sdk.repositories_api.list_repositories(prefix=repo_name, amount=1000).results]
    assert listed_names == names  # by prefix: the session's server holds other tests' repositories too
    for name in names:
        sdk.repositories_api.delete_repository(name)
    remaining = [r.id for r in sdk.repositories_api.list_repositories(prefix=repo_name).results]
    assert remaining == []


def test_repository_create_sample_repo(sdk, repo_name):
    """TestRepositoryCreateSampleRepo."""
    create_repository(sdk, repo_name, sample_data=True)
    assert sdk.repositories_api.get_repository(repo_name).id == repo_name
    assert listed(sdk, repo_name, MAIN)
