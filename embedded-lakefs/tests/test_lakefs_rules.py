"""Rules where the embedded server once differed from lakeFS (issue 27): each found by running lakeFS' own clients'
suites (lakefs-spec's tests, the Python wrapper's integration tests) against it, each asserted here through
``lakefs_sdk`` as lakeFS answers."""

from __future__ import annotations

import io
import json

import lakefs_sdk
import pytest
import urllib3
from lakefs_sdk.client import LakeFSClient

from embedded_lakefs import samplerepo


def create_repo(sdk: LakeFSClient, name: str, **fields) -> lakefs_sdk.Repository:
    return sdk.repositories_api.create_repository(
        lakefs_sdk.RepositoryCreation(name=name, storage_namespace=f"local://{name}", **fields)
    )


def refused(call, *args, **kwargs) -> tuple[int, str]:
    """The status and message of a call the server refuses."""
    with pytest.raises(lakefs_sdk.ApiException) as info:
        call(*args, **kwargs)
    return info.value.status, json.loads(info.value.body)["message"]


def all_paths(sdk: LakeFSClient, repo: str, ref: str) -> list[str]:
    return [o.path for o in sdk.objects_api.list_objects(repo, ref, amount=1000).results]


# -- sample_data (lakeFS' pkg/samplerepo) -----------------------------------------------------------------------------
def test_sample_data_commits_the_sample_and_protects_the_default_branch(sdk, repo_name):
    create_repo(sdk, repo_name, default_branch="trunk", sample_data=True)

    paths = all_paths(sdk, repo_name, "trunk")
    assert {"README.md", "lakes.parquet", "data/lakes.source.md"} <= set(paths)
    assert sum(p.startswith("images/") for p in paths) == samplerepo.IMAGE_COUNT
    log = sdk.refs_api.log_commits(repo_name, "trunk").results
    assert [c.message for c in log] == [samplerepo.COMMIT_MESSAGE, "Repository created"]
    assert not sdk.branches_api.diff_branch(repo_name, "trunk").results  # nothing left uncommitted
    rules = sdk.repositories_api.get_branch_protection_rules(repo_name)
    assert [r.pattern for r in rules] == ["trunk"]
    status, _ = refused(sdk.objects_api.upload_object, repo_name, "trunk", "new.txt", content=b"x")
    assert status == 403
    readme = sdk.objects_api.get_object(repo_name, "trunk", "README.md").decode()
    assert repo_name in readme


def test_sample_lakes_parquet_is_over_512_kib_and_readable(sdk, repo_name):
    pq = pytest.importorskip("pyarrow.parquet")
    create_repo(sdk, repo_name, sample_data=True)
    stat = sdk.objects_api.stat_object(repo_name, "main", "lakes.parquet")
    assert stat.size_bytes >= 2**19
    table = pq.read_table(io.BytesIO(bytes(sdk.objects_api.get_object(repo_name, "main", "lakes.parquet"))))
    assert table.num_rows == samplerepo.LAKE_ROWS
    assert table.column_names == ["id", "name", "country", "area_km2", "max_depth_m"]
    assert table.column("name")[7].as_py() == "Lake 00007"


def test_sample_images_are_pngs(sdk, repo_name):
    image = pytest.importorskip("PIL.Image")
    create_repo(sdk, repo_name, sample_data=True)
    content = bytes(sdk.objects_api.get_object(repo_name, "main", "images/sample-05.png"))
    picture = image.open(io.BytesIO(content))
    picture.load()
    assert picture.format == "PNG" and picture.size == (16, 16)


def test_without_sample_data_the_repository_is_empty(sdk, repo_name):
    create_repo(sdk, repo_name, sample_data=False)
    assert all_paths(sdk, repo_name, "main") == []
    assert sdk.repositories_api.get_branch_protection_rules(repo_name) == []


# -- storage_id ---------------------------------------------------------------------------------------------------
def test_repositories_answer_an_empty_storage_id(sdk, repo_name):
    created = create_repo(sdk, repo_name, storage_id="")
    assert created.storage_id == ""
    assert sdk.repositories_api.get_repository(repo_name).storage_id == ""
    listed = sdk.repositories_api.list_repositories(prefix=repo_name).results
    assert [r.storage_id for r in listed] == [""]


def test_an_unknown_storage_id_is_refused_and_creates_nothing(sdk, repo_name):
    status, message = refused(create_repo, sdk, repo_name, storage_id="invalidvalue")
    assert (status, message) == (400, "storage id: invalid value: validation error")
    assert refused(sdk.repositories_api.get_repository, repo_name)[0] == 404


# -- copy and setup -------------------------------------------------------------------------------------------------
def test_shallow_copy_is_not_implemented(sdk, repo_name):
    create_repo(sdk, repo_name)
    sdk.objects_api.upload_object(repo_name, "main", "a.txt", content=b"a")
    creation = lakefs_sdk.ObjectCopyCreation(src_path="a.txt", shallow=True)
    status, message = refused(sdk.objects_api.copy_object, repo_name, "main", "b.txt", creation)
    assert (status, message) == (501, "functionality not implemented")
    assert all_paths(sdk, repo_name, "main") == ["a.txt"]
    sdk.objects_api.copy_object(repo_name, "main", "c.txt", lakefs_sdk.ObjectCopyCreation(src_path="a.txt"))
    assert all_paths(sdk, repo_name, "main") == ["a.txt", "c.txt"]


def test_setup_of_a_set_up_server_conflicts(lakefs_settings):
    response = urllib3.request(
        "POST",
        lakefs_settings.api_url + "/setup_lakefs",
        body=json.dumps({"username": "admin"}).encode(),
        headers={"Content-Type": "application/json"},
    )
    assert response.status == 409
    assert response.json() == {"message": "lakeFS already initialized"}


# -- diff and merge -----------------------------------------------------------------------------------------------
def test_an_uncommitted_removal_reports_the_tombstones_size(sdk, repo_name):
    create_repo(sdk, repo_name)
    sdk.objects_api.upload_object(repo_name, "main", "gone.txt", content=b"12345")
    sdk.commits_api.commit(repo_name, "main", lakefs_sdk.CommitCreation(message="add"))
    sdk.objects_api.delete_object(repo_name, "main", "gone.txt")
    sdk.objects_api.upload_object(repo_name, "main", "new.txt", content=b"123")

    changes = sdk.branches_api.diff_branch(repo_name, "main").results
    assert [(c.path, c.type, c.size_bytes) for c in changes] == [("gone.txt", "removed", 0), ("new.txt", "added", 3)]
    committed = sdk.commits_api.commit(repo_name, "main", lakefs_sdk.CommitCreation(message="swap"))
    between = sdk.refs_api.diff_refs(repo_name, committed.parents[0], committed.id).results
    assert [(c.path, c.type) for c in between] == [("gone.txt", "removed"), ("new.txt", "added")]


def commit_file(sdk, repo, branch, path, content: bytes | None) -> str:
    """Upload (or, with None, delete) ``path`` on ``branch`` and commit; the commit id."""
    if content is None:
        sdk.objects_api.delete_object(repo, branch, path)
    else:
        sdk.objects_api.upload_object(repo, branch, path, content=content)
    return sdk.commits_api.commit(repo, branch, lakefs_sdk.CommitCreation(message=f"{path}")).id


def test_merging_a_commit_whose_tree_equals_the_destination_merges(sdk, repo_name):
    """The wrapper's test_reference_merge_into: a source with an empty tree, over the first commit as base, onto an
    empty destination is a merge in lakeFS (the first commit's metarange is "", the source's is not)."""
    create_repo(sdk, repo_name)
    sdk.branches_api.create_branch(repo_name, lakefs_sdk.BranchCreation(name="work", source="main"))
    commit_file(sdk, repo_name, "work", "f", b"x")
    emptied = commit_file(sdk, repo_name, "work", "f", None)
    sdk.branches_api.create_branch(repo_name, lakefs_sdk.BranchCreation(name="other", source="main"))

    sdk.refs_api.merge_into_branch(repo_name, emptied, "other", lakefs_sdk.Merge(message="Merge1"))
    head = sdk.commits_api.get_commit(repo_name, "other")
    assert head.message == "Merge1" and head.parents[1] == emptied


def test_merging_a_source_whose_metarange_is_the_bases_has_no_changes(sdk, repo_name):
    create_repo(sdk, repo_name)
    commit_file(sdk, repo_name, "main", "f", b"x")
    for name in ("a", "b"):
        sdk.branches_api.create_branch(repo_name, lakefs_sdk.BranchCreation(name=name, source="main"))
    status, message = refused(sdk.refs_api.merge_into_branch, repo_name, "a", "b", lakefs_sdk.Merge())
    assert (status, message) == (400, "no changes")
    for flag in ({"allow_empty": True}, {"force": True}):
        sdk.refs_api.merge_into_branch(repo_name, "a", "b", lakefs_sdk.Merge(**flag))
    assert len(sdk.refs_api.log_commits(repo_name, "b").results) == 4  # two merges over "f" and the first commit
    # the first commit as source: its metarange ("") is the base's
    first = sdk.refs_api.log_commits(repo_name, "main").results[-1].id
    assert refused(sdk.refs_api.merge_into_branch, repo_name, first, "a", lakefs_sdk.Merge())[1] == "no changes"


# -- request fields the swagger walk found ignored (test_swagger_walk.py) --------------------------------------------
def test_hidden_branches_are_listed_only_with_show_hidden(sdk, repo_name):
    create_repo(sdk, repo_name)
    sdk.branches_api.create_branch(repo_name, lakefs_sdk.BranchCreation(name="secret", source="main", hidden=True))
    sdk.branches_api.create_branch(repo_name, lakefs_sdk.BranchCreation(name="open", source="main"))
    commit_file(sdk, repo_name, "secret", "f", b"x")  # moving it keeps it hidden

    def listed(**query) -> list[str]:
        return [b.id for b in sdk.branches_api.list_branches(repo_name, **query).results]

    assert listed() == ["main", "open"]
    assert listed(show_hidden=False) == ["main", "open"]
    assert listed(show_hidden=True) == ["main", "open", "secret"]
    assert sdk.branches_api.get_branch(repo_name, "secret").id == "secret"  # found by name


def test_log_lists_commits_of_one_second_newest_first(sdk, repo_name):
    """The wrapper's test_reference_merge_into: Merge1 and the source's head have the same generation and are
    created in the same second; lakeFS lists the newer first (nanosecond creation times). Several repositories, as
    commit ids once broke the tie by chance."""
    for attempt in range(6):
        repo = f"{repo_name}-{attempt}"
        create_repo(sdk, repo)
        sdk.branches_api.create_branch(repo, lakefs_sdk.BranchCreation(name="work", source="main"))
        older = commit_file(sdk, repo, "work", "a", b"a")
        head = commit_file(sdk, repo, "work", "b", b"b")
        sdk.branches_api.create_branch(repo, lakefs_sdk.BranchCreation(name="other", source="main"))
        sdk.refs_api.merge_into_branch(repo, older, "other", lakefs_sdk.Merge(message="Merge1"))
        sdk.refs_api.merge_into_branch(repo, "work", "other", lakefs_sdk.Merge(message="Merge2"))
        log = sdk.refs_api.log_commits(repo, "other", amount=4).results
        assert [c.message for c in log[:2]] == ["Merge2", "Merge1"]
        assert [c.id for c in log[2:4]] == [head, older]


def test_repositories_are_searched_by_substring(sdk, repo_name):
    for name in (f"{repo_name}-alpha", f"{repo_name}-beta", f"{repo_name}-alphabet"):
        create_repo(sdk, name)

    def found(**query) -> list[str]:
        return [r.id for r in sdk.repositories_api.list_repositories(prefix=repo_name, **query).results]

    assert found(search="alpha") == [f"{repo_name}-alpha", f"{repo_name}-alphabet"]
    assert found(search="ALPHA") == []  # case-sensitive, as Go's strings.Contains
    assert found(search="alpha", amount=1) == [f"{repo_name}-alpha"]
    assert found(search="alpha", after=f"{repo_name}-alpha") == [f"{repo_name}-alphabet"]
    assert len(found()) == 3


def test_a_read_only_repository_is_deleted_only_with_force(sdk, repo_name):
    create_repo(sdk, repo_name, read_only=True)
    assert refused(sdk.repositories_api.delete_repository, repo_name) == (403, "read-only repository")
    sdk.repositories_api.get_repository(repo_name)
    sdk.repositories_api.delete_repository(repo_name, force=True)
    assert refused(sdk.repositories_api.get_repository, repo_name)[0] == 404


def test_delete_objects_takes_force_from_the_query(sdk, repo_name):
    """lakeFS reports a refused deletion per path (status 403) in a 200; force=true (a query parameter) passes a
    read-only repository."""
    create_repo(sdk, repo_name, read_only=True)
    sdk.objects_api.upload_object(repo_name, "main", "a.txt", content=b"a", force=True)
    paths = lakefs_sdk.PathList(paths=["a.txt", "b.txt"])
    refused_paths = sdk.objects_api.delete_objects(repo_name, "main", paths).errors
    assert [(e.path, e.status_code, e.message) for e in refused_paths] == [
        ("a.txt", 403, "read-only repository"),
        ("b.txt", 403, "read-only repository"),
    ]
    assert all_paths(sdk, repo_name, "main") == ["a.txt"]
    assert sdk.objects_api.delete_objects(repo_name, "main", paths, force=True).errors == []
    assert all_paths(sdk, repo_name, "main") == []


def test_no_tombstone_deletes_as_without_it(sdk, repo_name):
    """lakeFS' no_tombstone ("when possible"): an uncommitted object leaves no trace, a committed one is hidden."""
    create_repo(sdk, repo_name)
    commit_file(sdk, repo_name, "main", "committed.txt", b"c")
    sdk.objects_api.upload_object(repo_name, "main", "staged.txt", content=b"s")
    sdk.objects_api.delete_object(repo_name, "main", "staged.txt", no_tombstone=True)
    sdk.objects_api.delete_objects(repo_name, "main", lakefs_sdk.PathList(paths=["committed.txt"]), no_tombstone=True)
    assert all_paths(sdk, repo_name, "main") == []
    changes = sdk.branches_api.diff_branch(repo_name, "main").results
    assert [(c.path, c.type) for c in changes] == [("committed.txt", "removed")]


def test_upload_accepts_a_storage_class(sdk, repo_name):
    """lakeFS passes storageClass to its blockstore adapter; the local adapter (this server's) ignores it."""
    create_repo(sdk, repo_name)
    sdk.objects_api.upload_object(repo_name, "main", "a.txt", content=b"a", storage_class="GLACIER")
    assert sdk.objects_api.get_object(repo_name, "main", "a.txt") == b"a"
