"""Contract suite over ``lakefs_sdk``: the embedded server answers as lakeFS does (paths, shapes, statuses).

Runs against the embedded server, or a real lakeFS when ``LAKEFS_TEST_ENDPOINT`` is set.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlencode

import lakefs_sdk
import pytest
import urllib3
from lakefs_sdk.client import LakeFSClient


@pytest.fixture(scope="module")
def sdk(contract_target) -> LakeFSClient:
    configuration = lakefs_sdk.Configuration(
        host=contract_target.api_url, username=contract_target.access_key_id, password=contract_target.secret_access_key
    )
    return LakeFSClient(configuration)


@pytest.fixture(scope="module")
def namespace_prefix(sdk) -> str:
    storage = sdk.config_api.get_config().storage_config
    return storage.default_namespace_prefix or "local://"


@pytest.fixture
def repo(sdk, namespace_prefix) -> str:
    name = f"contract-{uuid.uuid4().hex[:10]}"
    sdk.repositories_api.create_repository(
        lakefs_sdk.RepositoryCreation(
            name=name,
            storage_namespace=namespace_prefix.rstrip("/") + "/" + name
            if not namespace_prefix.endswith("://")
            else namespace_prefix + name,
            default_branch="main",
        )
    )
    yield name
    sdk.repositories_api.delete_repository(name)


def status_of(call, *args, **kwargs) -> int:
    with pytest.raises(lakefs_sdk.ApiException) as info:
        call(*args, **kwargs)
    assert json.loads(info.value.body)["message"]
    return info.value.status


def raw(
    target, method: str, path: str, body: bytes | None = None, headers: dict | None = None, auth: bool = True
) -> urllib3.BaseHTTPResponse:
    """A request outside the sdk (which validates client-side) to the API path ``path``."""
    all_headers = urllib3.make_headers(basic_auth=f"{target.access_key_id}:{target.secret_access_key}") if auth else {}
    all_headers.update(headers or {})
    return urllib3.request(method, target.api_url + path, body=body, headers=all_headers, retries=False)


def upload(sdk, repo, branch, path, data: bytes, **kwargs):
    return sdk.objects_api.upload_object(repo, branch, path, content=data, **kwargs)


def commit(sdk, repo, branch, message="c", metadata=None):
    return sdk.commits_api.commit(repo, branch, lakefs_sdk.CommitCreation(message=message, metadata=metadata or {}))


# -- server, auth ------------------------------------------------------------------------------------------------
def test_health_check_needs_no_auth(contract_target):
    assert raw(contract_target, "GET", "/healthcheck", auth=False).status == 204


def test_wrong_key_is_401_with_error_body(contract_target):
    headers = urllib3.make_headers(basic_auth=f"{contract_target.access_key_id}:wrong")
    response = raw(contract_target, "GET", "/repositories", headers=headers)
    assert response.status == 401
    assert json.loads(response.data)["message"]
    assert raw(contract_target, "GET", "/repositories", auth=False).status == 401


def test_config_without_presign(sdk, against_real_lakefs):
    config = sdk.config_api.get_config()
    assert config.version_config.version
    if not against_real_lakefs:
        assert config.storage_config.pre_sign_support is False
        assert config.storage_config.blockstore_type == "local"


# -- repositories ------------------------------------------------------------------------------------------------
def test_repository_lifecycle(sdk, namespace_prefix):
    name = f"contract-{uuid.uuid4().hex[:10]}"
    namespace = (
        namespace_prefix + name if namespace_prefix.endswith("://") else namespace_prefix.rstrip("/") + "/" + name
    )
    created = sdk.repositories_api.create_repository(
        lakefs_sdk.RepositoryCreation(name=name, storage_namespace=namespace, default_branch="trunk")
    )
    assert (created.id, created.default_branch, created.storage_namespace) == (name, "trunk", namespace)
    assert sdk.repositories_api.get_repository(name).default_branch == "trunk"
    assert name in [r.id for r in sdk.repositories_api.list_repositories(prefix="contract-", amount=1000).results]
    assert sdk.branches_api.get_branch(name, "trunk").commit_id
    log = sdk.refs_api.log_commits(name, "trunk").results
    assert [c.message for c in log] == ["Repository created"] and log[0].parents == []
    assert status_of(
        sdk.repositories_api.create_repository,
        lakefs_sdk.RepositoryCreation(name=name, storage_namespace=namespace + "-2"),
    ) in (400, 409)
    sdk.repositories_api.delete_repository(name)
    assert status_of(sdk.repositories_api.get_repository, name) == 404


def test_invalid_repository_name_is_400(contract_target, namespace_prefix):
    body = json.dumps({"name": "Bad_Name!", "storage_namespace": namespace_prefix + "bad"}).encode()
    response = raw(contract_target, "POST", "/repositories", body, {"Content-Type": "application/json"})
    assert response.status == 400 and json.loads(response.data)["message"]


# -- branches ----------------------------------------------------------------------------------------------------
def test_branch_lifecycle(sdk, repo):
    main = sdk.branches_api.get_branch(repo, "main").commit_id
    assert sdk.branches_api.create_branch(repo, lakefs_sdk.BranchCreation(name="dev", source="main")) == main
    assert sdk.branches_api.get_branch(repo, "dev").commit_id == main
    assert status_of(sdk.branches_api.create_branch, repo, lakefs_sdk.BranchCreation(name="dev", source="main")) == 409
    assert status_of(sdk.branches_api.create_branch, repo, lakefs_sdk.BranchCreation(name="x", source="nope")) == 404
    for i in range(3):
        sdk.branches_api.create_branch(repo, lakefs_sdk.BranchCreation(name=f"b{i}", source="dev"))
    page = sdk.branches_api.list_branches(repo, amount=2)
    assert [b.id for b in page.results] == ["b0", "b1"] and page.pagination.has_more
    rest = sdk.branches_api.list_branches(repo, after=page.pagination.next_offset)
    assert [b.id for b in rest.results] == ["b2", "dev", "main"] and not rest.pagination.has_more
    sdk.branches_api.delete_branch(repo, "b0")
    assert status_of(sdk.branches_api.get_branch, repo, "b0") == 404
    assert status_of(sdk.branches_api.delete_branch, repo, "b0") == 404


def test_branch_from_commit_and_tag(sdk, repo):
    upload(sdk, repo, "main", "a", b"1")
    first = commit(sdk, repo, "main", "first").id
    sdk.tags_api.create_tag(repo, lakefs_sdk.TagCreation(id="v1", ref="main"))
    upload(sdk, repo, "main", "a", b"2")
    commit(sdk, repo, "main", "second")
    assert sdk.branches_api.create_branch(repo, lakefs_sdk.BranchCreation(name="from-tag", source="v1")) == first
    assert sdk.branches_api.create_branch(repo, lakefs_sdk.BranchCreation(name="from-id", source=first)) == first
    assert sdk.objects_api.get_object(repo, "from-tag", "a") == b"1"


def test_reset_branch_drops_uncommitted(sdk, repo):
    upload(sdk, repo, "main", "keep/a", b"a")
    commit(sdk, repo, "main")
    upload(sdk, repo, "main", "keep/a", b"changed")
    upload(sdk, repo, "main", "new/b", b"b")
    upload(sdk, repo, "main", "new/c", b"c")
    sdk.branches_api.reset_branch(repo, "main", lakefs_sdk.ResetCreation(type="object", path="keep/a"))
    assert sdk.objects_api.get_object(repo, "main", "keep/a") == b"a"
    sdk.branches_api.reset_branch(repo, "main", lakefs_sdk.ResetCreation(type="common_prefix", path="new/"))
    assert sdk.branches_api.diff_branch(repo, "main").results == []
    upload(sdk, repo, "main", "x", b"x")
    sdk.branches_api.reset_branch(repo, "main", lakefs_sdk.ResetCreation(type="reset"))
    assert sdk.branches_api.diff_branch(repo, "main").results == []


# -- objects -----------------------------------------------------------------------------------------------------
def test_upload_stat_get_octet_stream_with_metadata(sdk, repo, contract_target):
    response = raw(
        contract_target,
        "POST",
        f"/repositories/{repo}/branches/main/objects?path=tables/t.csv",
        b"a,b\n1,2\n",
        {"Content-Type": "text/csv", "X-Lakefs-Meta-Source": "camera-1"},
    )
    assert response.status == 201
    stats = json.loads(response.data)
    assert stats["checksum"] == hashlib.md5(b"a,b\n1,2\n").hexdigest()
    stat = sdk.objects_api.stat_object(repo, "main", "tables/t.csv")
    assert (stat.path, stat.path_type, stat.size_bytes, stat.content_type) == ("tables/t.csv", "object", 8, "text/csv")
    assert stat.metadata == {"source": "camera-1"} and stat.checksum == stats["checksum"]
    assert sdk.objects_api.get_object(repo, "main", "tables/t.csv") == b"a,b\n1,2\n"


def test_checksum_is_md5_of_content(sdk, repo):
    data = bytes(range(256)) * 100
    stats = upload(sdk, repo, "main", "bin/data", data)
    assert stats.checksum == hashlib.md5(data).hexdigest() and stats.size_bytes == len(data)
    response = sdk.objects_api.get_object_with_http_info(repo, "main", "bin/data")
    assert response.headers["ETag"].strip('"') == stats.checksum


def test_get_with_range(sdk, repo):
    upload(sdk, repo, "main", "r", b"0123456789")
    assert sdk.objects_api.get_object(repo, "main", "r", range="bytes=2-4") == b"234"
    assert sdk.objects_api.get_object(repo, "main", "r", range="bytes=7-") == b"789"
    assert sdk.objects_api.get_object(repo, "main", "r", range="bytes=-3") == b"789"
    with pytest.raises(lakefs_sdk.ApiException) as info:
        sdk.objects_api.get_object(repo, "main", "r", range="bytes=20-30")
    assert info.value.status == 416


def test_missing_object_is_404(sdk, repo):
    assert status_of(sdk.objects_api.stat_object, repo, "main", "nope") == 404
    assert status_of(sdk.objects_api.get_object, repo, "main", "nope") == 404
    assert status_of(sdk.objects_api.delete_object, repo, "main", "nope") == 404
    assert status_of(sdk.objects_api.upload_object, repo, "no-branch", "a", content=b"x") == 404
    assert status_of(sdk.objects_api.stat_object, "no-such-repo", "main", "a") == 404


def test_if_none_match_refuses_overwrite_with_412(sdk, repo):
    upload(sdk, repo, "main", "once", b"1", if_none_match="*")
    assert status_of(sdk.objects_api.upload_object, repo, "main", "once", content=b"2", if_none_match="*") == 412
    assert sdk.objects_api.get_object(repo, "main", "once") == b"1"


def test_list_objects_prefix_delimiter_pagination(sdk, repo):
    for path in ["a/1", "a/2", "a/sub/3", "b/4", "c", "d/5"]:
        upload(sdk, repo, "main", path, path.encode())
    commit(sdk, repo, "main")
    upload(sdk, repo, "main", "a/0", b"staged")
    sdk.objects_api.delete_object(repo, "main", "b/4")
    top = sdk.objects_api.list_objects(repo, "main", delimiter="/")
    assert [(o.path, o.path_type) for o in top.results] == [
        ("a/", "common_prefix"),
        ("c", "object"),
        ("d/", "common_prefix"),
    ]
    below_a = sdk.objects_api.list_objects(repo, "main", prefix="a/", delimiter="/")
    assert [o.path for o in below_a.results] == ["a/0", "a/1", "a/2", "a/sub/"]
    flat = sdk.objects_api.list_objects(repo, "main", amount=2)
    assert [o.path for o in flat.results] == ["a/0", "a/1"] and flat.pagination.has_more
    assert flat.pagination.next_offset == "a/1" and flat.pagination.results == 2
    rest = sdk.objects_api.list_objects(repo, "main", after="a/1", amount=100)
    assert [o.path for o in rest.results] == ["a/2", "a/sub/3", "c", "d/5"] and not rest.pagination.has_more
    committed = sdk.objects_api.list_objects(repo, "main@")
    assert [o.path for o in committed.results] == ["a/1", "a/2", "a/sub/3", "b/4", "c", "d/5"]


def test_delete_objects_many(sdk, repo):
    for path in ["x/1", "x/2", "x/3"]:
        upload(sdk, repo, "main", path, b"x")
    result = sdk.objects_api.delete_objects(repo, "main", lakefs_sdk.PathList(paths=["x/1", "x/3", "x/none"]))
    assert result.errors == []
    assert [o.path for o in sdk.objects_api.list_objects(repo, "main").results] == ["x/2"]


# -- commits, refs, tags -----------------------------------------------------------------------------------------
def test_commit_and_log(sdk, repo):
    upload(sdk, repo, "main", "a", b"1")
    first = commit(sdk, repo, "main", "first", {"run": "1"})
    assert first.message == "first" and first.metadata == {"run": "1"} and len(first.parents) == 1
    assert first.committer and first.meta_range_id and len(first.id) == 64
    assert sdk.commits_api.get_commit(repo, first.id) == first
    assert sdk.branches_api.diff_branch(repo, "main").results == []
    upload(sdk, repo, "main", "b", b"2")
    second = commit(sdk, repo, "main", "second")
    assert second.parents == [first.id]
    page = sdk.refs_api.log_commits(repo, "main", amount=2)
    assert [c.id for c in page.results] == [second.id, first.id] and page.pagination.has_more
    rest = sdk.refs_api.log_commits(repo, "main", after=page.pagination.next_offset)
    assert [c.message for c in rest.results] == ["Repository created"]
    assert status_of(sdk.commits_api.get_commit, repo, "f" * 64) == 404


def test_empty_commit_is_refused(sdk, repo):
    assert status_of(commit, sdk, repo, "main", "nothing") == 400
    upload(sdk, repo, "main", "a", b"1")
    sdk.objects_api.delete_object(repo, "main", "a")
    assert status_of(commit, sdk, repo, "main", "still nothing") == 400


def test_ref_expressions(sdk, repo):
    ids = []
    for i in range(3):
        upload(sdk, repo, "main", f"f{i}", b"x")
        ids.append(commit(sdk, repo, "main", f"c{i}").id)
    assert sdk.commits_api.get_commit(repo, "main~1").id == ids[1]
    assert sdk.commits_api.get_commit(repo, "main~2").id == ids[0]
    assert sdk.commits_api.get_commit(repo, "main^").id == ids[1]
    assert sdk.commits_api.get_commit(repo, "main^1^1").id == ids[0]
    assert sdk.commits_api.get_commit(repo, ids[2] + "~1").id == ids[1]
    sdk.tags_api.create_tag(repo, lakefs_sdk.TagCreation(id="release", ref="main~1"))
    assert sdk.commits_api.get_commit(repo, "release~1").id == ids[0]
    assert sdk.objects_api.list_objects(repo, "main~2").pagination.results == 1


def test_tags(sdk, repo):
    upload(sdk, repo, "main", "a", b"1")
    head = commit(sdk, repo, "main").id
    assert sdk.tags_api.create_tag(repo, lakefs_sdk.TagCreation(id="v1", ref="main")).commit_id == head
    assert status_of(sdk.tags_api.create_tag, repo, lakefs_sdk.TagCreation(id="v1", ref="main")) == 409
    sdk.tags_api.create_tag(repo, lakefs_sdk.TagCreation(id="v2", ref=head))
    assert sdk.tags_api.get_tag(repo, "v1").commit_id == head
    assert [t.id for t in sdk.tags_api.list_tags(repo).results] == ["v1", "v2"]
    sdk.tags_api.delete_tag(repo, "v1")
    assert status_of(sdk.tags_api.get_tag, repo, "v1") == 404


# -- diff and merge ----------------------------------------------------------------------------------------------
def test_diff_uncommitted_and_between_refs(sdk, repo):
    upload(sdk, repo, "main", "keep", b"1")
    upload(sdk, repo, "main", "change", b"1")
    upload(sdk, repo, "main", "remove", b"1")
    base = commit(sdk, repo, "main").id
    upload(sdk, repo, "main", "change", b"2")
    upload(sdk, repo, "main", "add", b"1")
    sdk.objects_api.delete_object(repo, "main", "remove")
    diff = sdk.branches_api.diff_branch(repo, "main").results
    assert [(d.path, d.type) for d in diff] == [("add", "added"), ("change", "changed"), ("remove", "removed")]
    head = commit(sdk, repo, "main").id
    between = sdk.refs_api.diff_refs(repo, base, head).results
    assert [(d.path, d.type) for d in between] == [("add", "added"), ("change", "changed"), ("remove", "removed")]
    assert sdk.refs_api.diff_refs(repo, head, base, type="two_dot").results[0].type == "removed"


def test_merge_without_changes_on_destination(sdk, repo):
    upload(sdk, repo, "main", "base", b"0")
    commit(sdk, repo, "main")
    sdk.branches_api.create_branch(repo, lakefs_sdk.BranchCreation(name="feature", source="main"))
    upload(sdk, repo, "feature", "new", b"1")
    feature_head = commit(sdk, repo, "feature", "feature work").id
    merged = sdk.refs_api.merge_into_branch(repo, "feature", "main").reference
    assert sdk.branches_api.get_branch(repo, "main").commit_id == merged
    assert feature_head in sdk.commits_api.get_commit(repo, merged).parents or merged == feature_head
    assert sdk.objects_api.get_object(repo, "main", "new") == b"1"


def test_three_way_merge_and_conflict(sdk, repo):
    upload(sdk, repo, "main", "shared", b"0")
    commit(sdk, repo, "main")
    sdk.branches_api.create_branch(repo, lakefs_sdk.BranchCreation(name="left", source="main"))
    sdk.branches_api.create_branch(repo, lakefs_sdk.BranchCreation(name="right", source="main"))
    upload(sdk, repo, "left", "l", b"l")
    commit(sdk, repo, "left")
    upload(sdk, repo, "main", "m", b"m")
    commit(sdk, repo, "main")
    merged = sdk.refs_api.merge_into_branch(
        repo, "left", "main", merge=lakefs_sdk.Merge(message="merge left", metadata={"k": "v"})
    )
    merge_commit = sdk.commits_api.get_commit(repo, merged.reference)
    assert merge_commit.message == "merge left" and merge_commit.metadata["k"] == "v"
    assert merge_commit.metadata[".lakefs.merge.strategy"] == "default"
    assert len(merge_commit.parents) == 2
    assert sorted(o.path for o in sdk.objects_api.list_objects(repo, "main").results) == ["l", "m", "shared"]
    upload(sdk, repo, "right", "shared", b"right")
    commit(sdk, repo, "right")
    upload(sdk, repo, "main", "shared", b"main")
    commit(sdk, repo, "main")
    assert status_of(sdk.refs_api.merge_into_branch, repo, "right", "main") == 409
    assert sdk.objects_api.get_object(repo, "main", "shared") == b"main"
    sdk.refs_api.merge_into_branch(repo, "right", "main", merge=lakefs_sdk.Merge(strategy="source-wins"))
    assert sdk.objects_api.get_object(repo, "main", "shared") == b"right"


def test_merge_with_nothing_to_merge_is_refused(sdk, repo):
    sdk.branches_api.create_branch(repo, lakefs_sdk.BranchCreation(name="same", source="main"))
    assert status_of(sdk.refs_api.merge_into_branch, repo, "same", "main") == 400


# -- safety (embedded server only: real lakeFS keys are opaque strings) ------------------------------------------
@pytest.mark.parametrize("path", ["../escape", "a/../../b", "/absolute", "nul\x00byte"])
def test_paths_leaving_the_data_directory_are_400(contract_target, against_real_lakefs, repo, path):
    if against_real_lakefs:
        pytest.skip("lakeFS accepts any key; the embedded server refuses keys that could escape a directory")
    response = raw(
        contract_target,
        "POST",
        f"/repositories/{repo}/branches/main/objects?{urlencode({'path': path})}",
        b"x",
        {"Content-Type": "application/octet-stream"},
    )
    assert response.status == 400 and json.loads(response.data)["message"]


def test_concurrent_clients(sdk, repo):
    def work(i: int) -> str:
        return upload(sdk, repo, "main", f"c/{i:03d}", str(i).encode()).checksum

    with ThreadPoolExecutor(16) as pool:
        checksums = list(pool.map(work, range(200)))
    assert checksums == [hashlib.md5(str(i).encode()).hexdigest() for i in range(200)]
    listed = sdk.objects_api.list_objects(repo, "main", amount=1000).results
    assert [o.path for o in listed] == [f"c/{i:03d}" for i in range(200)]


# -- log filters, revert, conditional get --------------------------------------------------------------------------
def test_log_commits_objects_and_prefixes_filters(sdk, repo):
    upload(sdk, repo, "main", "a.txt", b"a")
    c1 = commit(sdk, repo, "main", "c1").id
    upload(sdk, repo, "main", "dir/b", b"b")
    c2 = commit(sdk, repo, "main", "c2").id
    upload(sdk, repo, "main", "a.txt", b"a2")
    c3 = commit(sdk, repo, "main", "c3").id

    def ids(**kwargs):
        return [c.id for c in sdk.refs_api.log_commits(repo, "main", **kwargs).results]

    assert ids(objects=["a.txt"]) == [c3, c1]
    assert ids(objects=["nope.txt"]) == []
    assert ids(prefixes=["dir/"]) == [c2]
    assert ids(objects=["a.txt"], amount=1, limit=True) == [c3]
    assert ids(stop_at=c2) == [c3, c2]


def test_revert_and_cherry_pick(sdk, repo):
    upload(sdk, repo, "main", "a.txt", b"a")
    commit(sdk, repo, "main", "c1")
    upload(sdk, repo, "main", "b.txt", b"b")
    c2 = commit(sdk, repo, "main", "c2").id
    sdk.branches_api.revert_branch(repo, "main", lakefs_sdk.RevertCreation(ref=c2, parent_number=0))
    assert [o.path for o in sdk.objects_api.list_objects(repo, "main").results] == ["a.txt"]
    picked = sdk.branches_api.cherry_pick(repo, "main", lakefs_sdk.CherryPickCreation(ref=c2))
    assert picked.message == "c2"
    assert [o.path for o in sdk.objects_api.list_objects(repo, "main").results] == ["a.txt", "b.txt"]
    assert (
        status_of(
            sdk.branches_api.revert_branch, repo, "main", lakefs_sdk.RevertCreation(ref="no-such-ref", parent_number=0)
        )
        == 404
    )


def test_get_object_if_none_match_is_304(sdk, repo, contract_target):
    upload(sdk, repo, "main", "a.txt", b"hello")
    etag = sdk.objects_api.stat_object(repo, "main", "a.txt").checksum
    path = f"/repositories/{repo}/refs/main/objects?path=a.txt"
    assert raw(contract_target, "GET", path, headers={"If-None-Match": f'"{etag}"'}).status == 304
    response = raw(contract_target, "GET", path, headers={"If-None-Match": '"different"'})
    assert (response.status, response.data) == (200, b"hello")
