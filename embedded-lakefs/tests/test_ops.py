"""lakeFS operations of the embedded server beyond the basics: log filters, ref resolution, revert, cherry-pick,
conditional reads and user-metadata updates, each checked through ``lakefs-sdk`` (and ``lakefs`` where it has
the call) for the success path, the error statuses, and that no wrong answer is given."""

from __future__ import annotations

import datetime
import json
import random

import lakefs
import lakefs_sdk
import pytest
import urllib3
from lakefs.client import Client

from embedded_lakefs.catalog import Catalog, Commit, ResolvedRef
from embedded_lakefs.errors import NotFound
from embedded_lakefs.refs import RefManager
from embedded_lakefs.storage import Database


@pytest.fixture
def repo(sdk, repo_name) -> str:
    sdk.repositories_api.create_repository(
        lakefs_sdk.RepositoryCreation(name=repo_name, storage_namespace=f"local://{repo_name}", default_branch="main")
    )
    return repo_name


def status_of(call, *args, **kwargs) -> tuple[int, str]:
    with pytest.raises(lakefs_sdk.ApiException) as info:
        call(*args, **kwargs)
    message = json.loads(info.value.body)["message"]
    assert message
    return info.value.status, message


def put(sdk, repo, path, data: bytes, branch="main"):
    return sdk.objects_api.upload_object(repo, branch, path, content=data)


def commit(sdk, repo, message, branch="main", **kwargs) -> str:
    return sdk.commits_api.commit(repo, branch, lakefs_sdk.CommitCreation(message=message, **kwargs)).id


def commit_on_feature(sdk, repo, message="feature work", path="f.txt", data=b"f", **kwargs) -> tuple[str, str]:
    """main with a.txt committed ("base"), and branch "feature" from it with ``path`` committed: both commit ids."""
    put(sdk, repo, "a.txt", b"a")
    base = commit(sdk, repo, "base")
    sdk.branches_api.create_branch(repo, lakefs_sdk.BranchCreation(name="feature", source="main"))
    put(sdk, repo, path, data, branch="feature")
    return base, commit(sdk, repo, message, branch="feature", **kwargs)


def log_ids(sdk, repo, ref="main", **kwargs) -> list[str]:
    return [c.id for c in sdk.refs_api.log_commits(repo, ref, **kwargs).results]


def read(sdk, repo, ref, path) -> bytes:
    return bytes(sdk.objects_api.get_object(repo, ref, path))


def paths(sdk, repo, ref="main") -> list[str]:
    return [o.path for o in sdk.objects_api.list_objects(repo, ref).results]


# -- logCommits filters ------------------------------------------------------------------------------------------
@pytest.fixture
def history(sdk, repo):
    """c1: a.txt, dir/x; c2: b.txt; c3: dir/y (dated 2020); c4: changes a.txt; c5: deletes b.txt."""
    put(sdk, repo, "a.txt", b"1")
    put(sdk, repo, "dir/x", b"x")
    c1 = commit(sdk, repo, "c1", date=1_500_000_000)
    put(sdk, repo, "b.txt", b"b")
    c2 = commit(sdk, repo, "c2", date=1_550_000_000)
    put(sdk, repo, "dir/y", b"y")
    c3 = commit(sdk, repo, "c3", date=1_600_000_000)
    put(sdk, repo, "a.txt", b"2")
    c4 = commit(sdk, repo, "c4", date=1_650_000_000)
    sdk.objects_api.delete_object(repo, "main", "b.txt")
    c5 = commit(sdk, repo, "c5", date=1_700_000_000)
    root = log_ids(sdk, repo)[-1]
    return {"c1": c1, "c2": c2, "c3": c3, "c4": c4, "c5": c5, "root": root}


def test_log_objects_filter(sdk, repo, history):
    h = history
    assert log_ids(sdk, repo) == [h["c5"], h["c4"], h["c3"], h["c2"], h["c1"], h["root"]]
    assert log_ids(sdk, repo, objects=["a.txt"]) == [h["c4"], h["c1"]]
    assert log_ids(sdk, repo, objects=["b.txt"]) == [h["c5"], h["c2"]]
    assert log_ids(sdk, repo, objects=["nope.txt"]) == []
    assert log_ids(sdk, repo, objects=["a.txt", "b.txt"]) == [h["c5"], h["c4"], h["c2"], h["c1"]]
    assert log_ids(sdk, repo, objects=["dir"]) == []  # an object path, not a prefix


def test_log_prefixes_filter(sdk, repo, history):
    h = history
    assert log_ids(sdk, repo, prefixes=["dir/"]) == [h["c3"], h["c1"]]
    assert log_ids(sdk, repo, prefixes=["nope/"]) == []
    assert log_ids(sdk, repo, prefixes=["dir/"], objects=["b.txt"]) == [h["c5"], h["c3"], h["c2"], h["c1"]]


def test_log_filter_pagination_and_limit(sdk, repo, history):
    h = history
    page = sdk.refs_api.log_commits(repo, "main", objects=["a.txt", "b.txt"], amount=2)
    assert [c.id for c in page.results] == [h["c5"], h["c4"]] and page.pagination.has_more
    page2 = sdk.refs_api.log_commits(
        repo, "main", objects=["a.txt", "b.txt"], amount=2, after=page.pagination.next_offset
    )
    assert [c.id for c in page2.results] == [h["c2"], h["c1"]] and not page2.pagination.has_more
    limited = sdk.refs_api.log_commits(repo, "main", objects=["a.txt"], amount=1, limit=True)
    assert [c.id for c in limited.results] == [h["c4"]] and not limited.pagination.has_more


def test_log_since_and_stop_at(sdk, repo, history):
    h = history
    since = datetime.datetime.fromtimestamp(1_600_000_000, tz=datetime.timezone.utc)
    assert log_ids(sdk, repo, since=since) == [h["c5"], h["c4"], h["c3"]]
    assert log_ids(sdk, repo, since=since, objects=["a.txt"]) == [h["c4"]]
    assert log_ids(sdk, repo, stop_at=h["c4"]) == [h["c5"], h["c4"]]
    future = datetime.datetime(2100, 1, 1, tzinfo=datetime.timezone.utc)
    assert log_ids(sdk, repo, since=future) == []


def test_log_first_parent(sdk, repo):
    base, feature = commit_on_feature(sdk, repo)
    put(sdk, repo, "n.txt", b"n")
    main_work = commit(sdk, repo, "main work")
    merge = sdk.refs_api.merge_into_branch(repo, "feature", "main").reference
    assert feature in log_ids(sdk, repo)
    first_parent = log_ids(sdk, repo, first_parent=True)
    assert first_parent[:3] == [merge, main_work, base] and feature not in first_parent
    assert log_ids(sdk, repo, objects=["f.txt"]) == [merge, feature]


def test_log_bad_parameters(sdk, repo, lakefs_settings):
    headers = urllib3.make_headers(basic_auth=f"{lakefs_settings.access_key_id}:{lakefs_settings.secret_access_key}")
    base = f"{lakefs_settings.api_url}/repositories/{repo}/refs/main/commits"
    for query in ("since=yesterday", "limit=maybe", "first_parent=1", "amount=5000"):
        response = urllib3.request("GET", f"{base}?{query}", headers=headers, retries=False)
        assert response.status == 400, query
        assert json.loads(response.data)["message"]
    assert status_of(sdk.refs_api.log_commits, repo, "nope")[0] == 404
    ok = urllib3.request("GET", f"{base}?objects=&objects=..%2Fx", headers=headers, retries=False)
    assert ok.status == 200 and json.loads(ok.data)["results"] == []  # filters that match nothing


# -- ref resolution ----------------------------------------------------------------------------------------------
def test_commit_id_prefixes_and_committed_modifier(sdk, repo):
    put(sdk, repo, "a.txt", b"committed")
    c1 = commit(sdk, repo, "c1")
    put(sdk, repo, "a.txt", b"staged")
    assert read(sdk, repo, "main", "a.txt") == b"staged"
    assert read(sdk, repo, "main@", "a.txt") == b"committed"
    assert read(sdk, repo, "main$", "a.txt") == b"staged"  # "$": the branch with its staging area
    root = log_ids(sdk, repo)[-1]
    shortest = next(n for n in range(1, 65) if root[:n] != c1[:n])
    for ref in (c1, c1[:12], c1[:shortest]):
        assert sdk.commits_api.get_commit(repo, ref).id == c1
        assert read(sdk, repo, ref, "a.txt") == b"committed"
    assert status_of(sdk.commits_api.get_commit, repo, "0" * 64)[0] == 404
    assert sdk.commits_api.get_commit(repo, "main~1").id == root
    assert sdk.commits_api.get_commit(repo, "main^1").id == root
    assert sdk.commits_api.get_commit(repo, "main^0").id == c1
    sdk.tags_api.create_tag(repo, lakefs_sdk.TagCreation(id="v1", ref=c1))
    assert (
        status_of(sdk.branches_api.create_branch, repo, lakefs_sdk.BranchCreation(name="b", source="main$"))[0] == 400
    )
    for bad in ("main@~1", "main~1@", "main@@", "main$@", "main@1", "v1@", c1 + "@"):
        assert status_of(sdk.commits_api.get_commit, repo, bad)[0] == 400, bad


def test_ambiguous_commit_prefix_is_not_resolved(tmp_path):
    catalog = Catalog(tmp_path / "catalog.db", synchronous="OFF")
    catalog.create_repository("repo-a", "local://repo-a")
    root = catalog.get_branch("repo-a", "main")
    with catalog.store.write() as tx:  # two commits whose ids share the prefix "abcdef"
        for suffix in ("1", "2"):
            tx.refs.add_commit("repo-a", Commit("abcdef" + suffix * 58, [root], "u", "m", 0, "", {}, 2))
    for ambiguous in ("abcdef", "abc", "a"):
        with pytest.raises(NotFound):
            catalog.resolve("repo-a", ambiguous)
    assert catalog.resolve("repo-a", "abcdef1").commit_id == "abcdef" + "1" * 58
    assert catalog.resolve("repo-a", "abcdef" + "2" * 58).commit_id == "abcdef" + "2" * 58
    # as lakeFS' revResolve: a branch or tag wins over a unique commit id prefix (a branch "b" is branch b, whatever
    # commit ids start with "b"); a full commit id cannot name a branch (refused as a conflict)
    full = "abcdef" + "2" * 58
    for name in ("abcdef", "abcdef1"):
        catalog.create_branch("repo-a", name, "main")
    catalog.create_tag("repo-a", "abcdef2", "main")
    assert catalog.resolve("repo-a", "abcdef") == ResolvedRef(root, "abcdef")
    assert catalog.resolve("repo-a", "abcdef1") == ResolvedRef(root, "abcdef1")
    assert catalog.resolve("repo-a", "abcdef2") == ResolvedRef(root)  # the tag, not commit abcdef222...
    assert catalog.resolve("repo-a", full) == ResolvedRef(full)
    assert catalog.resolve("repo-a", "abcdef11").commit_id == "abcdef" + "1" * 58  # no branch or tag of that name


# -- revert and cherry-pick --------------------------------------------------------------------------------------
def test_revert_branch(sdk, repo):
    put(sdk, repo, "a.txt", b"1")
    commit(sdk, repo, "c1")
    put(sdk, repo, "a.txt", b"2")
    put(sdk, repo, "b.txt", b"b")
    c2 = commit(sdk, repo, "c2")
    put(sdk, repo, "c.txt", b"c")
    commit(sdk, repo, "c3")
    sdk.branches_api.revert_branch(repo, "main", lakefs_sdk.RevertCreation(ref=c2, parent_number=0))
    assert read(sdk, repo, "main", "a.txt") == b"1"
    assert paths(sdk, repo) == ["a.txt", "c.txt"]
    head = sdk.commits_api.get_commit(repo, "main")
    assert head.message == f"Revert {c2}" and len(head.parents) == 1
    assert sdk.refs_api.diff_refs(repo, "main~1", "main", type="two_dot").pagination.results == 2


def test_revert_errors(sdk, repo):
    put(sdk, repo, "a.txt", b"1")
    c1 = commit(sdk, repo, "c1")
    put(sdk, repo, "a.txt", b"2")
    commit(sdk, repo, "c2")
    head = sdk.branches_api.get_branch(repo, "main").commit_id
    # reverting c1 (which created a.txt) conflicts with c2 (which changed it)
    assert (
        status_of(sdk.branches_api.revert_branch, repo, "main", lakefs_sdk.RevertCreation(ref=c1, parent_number=0))[0]
        == 409
    )
    assert (
        status_of(sdk.branches_api.revert_branch, repo, "main", lakefs_sdk.RevertCreation(ref="nope", parent_number=0))[
            0
        ]
        == 404
    )
    assert (
        status_of(sdk.branches_api.revert_branch, repo, "nope", lakefs_sdk.RevertCreation(ref=c1, parent_number=0))[0]
        == 404
    )
    assert (
        status_of(sdk.branches_api.revert_branch, repo, "main", lakefs_sdk.RevertCreation(ref=c1, parent_number=2))[0]
        == 400
    )
    put(sdk, repo, "dirty", b"d")
    assert (
        status_of(sdk.branches_api.revert_branch, repo, "main", lakefs_sdk.RevertCreation(ref="main", parent_number=0))[
            0
        ]
        == 400
    )
    assert sdk.branches_api.get_branch(repo, "main").commit_id == head  # nothing changed on failure


def test_revert_merge_needs_parent_number(sdk, repo):
    commit_on_feature(sdk, repo)
    merge = sdk.refs_api.merge_into_branch(repo, "feature", "main").reference
    assert (
        status_of(sdk.branches_api.revert_branch, repo, "main", lakefs_sdk.RevertCreation(ref=merge, parent_number=0))[
            0
        ]
        == 409
    )  # as lakeFS answers
    assert status_of(sdk.branches_api.cherry_pick, repo, "main", lakefs_sdk.CherryPickCreation(ref=merge))[0] == 400
    sdk.branches_api.revert_branch(repo, "main", lakefs_sdk.RevertCreation(ref=merge, parent_number=1))
    assert paths(sdk, repo) == ["a.txt"]


def test_cherry_pick(sdk, repo):
    _, picked = commit_on_feature(sdk, repo, "add f", metadata={"k": "v"})
    put(sdk, repo, "g.txt", b"g", branch="feature")
    commit(sdk, repo, "add g", branch="feature")
    result = sdk.branches_api.cherry_pick(repo, "main", lakefs_sdk.CherryPickCreation(ref=picked))
    origin = sdk.commits_api.get_commit(repo, picked)
    assert result.message == "add f"
    assert result.metadata == {"k": "v", "cherry-pick-origin": picked, "cherry-pick-committer": origin.committer}
    assert sdk.branches_api.get_branch(repo, "main").commit_id == result.id
    assert paths(sdk, repo) == ["a.txt", "f.txt"]
    # picking it again has nothing to change; a missing ref is 404
    assert status_of(sdk.branches_api.cherry_pick, repo, "main", lakefs_sdk.CherryPickCreation(ref=picked))[0] == 400
    assert status_of(sdk.branches_api.cherry_pick, repo, "main", lakefs_sdk.CherryPickCreation(ref="nope"))[0] == 404


def test_cherry_pick_conflict_and_dirty(sdk, repo):
    _, picked = commit_on_feature(sdk, repo, "feature a", path="a.txt", data=b"feature")
    put(sdk, repo, "a.txt", b"main")
    commit(sdk, repo, "main a")
    head = sdk.branches_api.get_branch(repo, "main").commit_id
    assert status_of(sdk.branches_api.cherry_pick, repo, "main", lakefs_sdk.CherryPickCreation(ref=picked))[0] == 409
    put(sdk, repo, "dirty", b"d")
    assert status_of(sdk.branches_api.cherry_pick, repo, "main", lakefs_sdk.CherryPickCreation(ref=picked))[0] == 400
    assert sdk.branches_api.get_branch(repo, "main").commit_id == head


def test_high_level_revert_and_cherry_pick(lakefs_settings, repo):
    client = Client(
        host=lakefs_settings.endpoint,
        username=lakefs_settings.access_key_id,
        password=lakefs_settings.secret_access_key,
    )
    repository = lakefs.Repository(repo, client=client)
    main = repository.branch("main")
    main.object("a.txt").upload(b"1")
    main.commit("c1")
    main.object("b.txt").upload(b"2")
    c2 = main.commit("c2")
    reverted = main.revert(c2.get_commit().id)
    assert reverted.message == f"Revert {c2.get_commit().id}"
    assert [o.path for o in main.objects()] == ["a.txt"]
    feature = repository.branch("feature").create(source_reference=c2.get_commit().id)
    picked = main.cherry_pick(c2.get_commit().id)
    assert picked.message == "c2" and [o.path for o in main.objects()] == ["a.txt", "b.txt"]
    assert feature.get_commit().id == c2.get_commit().id


# -- conditional get, user metadata --------------------------------------------------------------------------------
def test_get_object_if_none_match(sdk, repo, lakefs_settings):
    put(sdk, repo, "a.txt", b"hello")
    etag = sdk.objects_api.stat_object(repo, "main", "a.txt").checksum
    headers = urllib3.make_headers(basic_auth=f"{lakefs_settings.access_key_id}:{lakefs_settings.secret_access_key}")
    url = f"{lakefs_settings.api_url}/repositories/{repo}/refs/main/objects?path=a.txt"
    response = urllib3.request("GET", url, headers={**headers, "If-None-Match": f'"{etag}"'}, retries=False)
    assert response.status == 304 and response.data == b""
    assert response.headers["ETag"] == f'"{etag}"'
    response = urllib3.request("GET", url, headers={**headers, "If-None-Match": '"other"'}, retries=False)
    assert response.status == 200 and response.data == b"hello"
    missing = urllib3.request(
        "GET", url.replace("a.txt", "nope"), headers={**headers, "If-None-Match": '"x"'}, retries=False
    )
    assert missing.status == 404


def test_update_object_user_metadata(sdk, repo):
    put(sdk, repo, "a.txt", b"hello")
    commit(sdk, repo, "c1")
    sdk.objects_api.update_object_user_metadata(
        repo, "main", "a.txt", lakefs_sdk.UpdateObjectUserMetadata(set={"Owner": "me"})
    )
    stat = sdk.objects_api.stat_object(repo, "main", "a.txt")
    assert stat.metadata == {"Owner": "me"}
    assert read(sdk, repo, "main", "a.txt") == b"hello"
    assert sdk.objects_api.stat_object(repo, "main@", "a.txt").metadata == {}  # staged, not committed
    assert [d.path for d in sdk.branches_api.diff_branch(repo, "main").results] == ["a.txt"]
    status, _ = status_of(
        sdk.objects_api.update_object_user_metadata, repo, "main", "nope", lakefs_sdk.UpdateObjectUserMetadata(set={})
    )
    assert status == 404
    assert (
        status_of(
            sdk.objects_api.update_object_user_metadata,
            repo,
            "nope",
            "a.txt",
            lakefs_sdk.UpdateObjectUserMetadata(set={}),
        )[0]
        == 404
    )


# -- branch protection, read-only repositories ---------------------------------------------------------------------
def test_branch_protection_rules_get_set_and_etag(sdk, repo):
    response = sdk.repositories_api.get_branch_protection_rules_with_http_info(repo)
    assert response.data == []
    etag = response.headers["ETag"]
    rule = lakefs_sdk.BranchProtectionRule(pattern="main")
    sdk.repositories_api.set_branch_protection_rules(repo, [rule], if_match=etag)
    assert [r.pattern for r in sdk.repositories_api.get_branch_protection_rules(repo)] == ["main"]
    # the old ETag no longer matches
    assert status_of(sdk.repositories_api.set_branch_protection_rules, repo, [], if_match=etag)[0] == 412
    assert [r.pattern for r in sdk.repositories_api.get_branch_protection_rules(repo)] == ["main"]
    assert status_of(sdk.repositories_api.get_branch_protection_rules, "no-such-repo")[0] == 404
    sdk.repositories_api.set_branch_protection_rules(repo, [])
    assert sdk.repositories_api.get_branch_protection_rules(repo) == []


def test_protected_branch_refuses_writes_but_takes_merges(sdk, repo):
    base, feature_commit = commit_on_feature(sdk, repo, "f")
    sdk.repositories_api.set_branch_protection_rules(repo, [lakefs_sdk.BranchProtectionRule(pattern="ma*")])
    head = sdk.branches_api.get_branch(repo, "main").commit_id
    forbidden = [
        (sdk.objects_api.upload_object, (repo, "main", "x"), {"content": b"x"}),
        (sdk.objects_api.delete_object, (repo, "main", "a.txt"), {}),
        (sdk.objects_api.copy_object, (repo, "main", "c.txt", lakefs_sdk.ObjectCopyCreation(src_path="a.txt")), {}),
        (
            sdk.objects_api.update_object_user_metadata,
            (repo, "main", "a.txt", lakefs_sdk.UpdateObjectUserMetadata(set={"k": "v"})),
            {},
        ),
        (sdk.commits_api.commit, (repo, "main", lakefs_sdk.CommitCreation(message="m", allow_empty=True)), {}),
        (sdk.branches_api.reset_branch, (repo, "main", lakefs_sdk.ResetCreation(type="reset")), {}),
        (sdk.branches_api.revert_branch, (repo, "main", lakefs_sdk.RevertCreation(ref="main", parent_number=0)), {}),
        (sdk.branches_api.cherry_pick, (repo, "main", lakefs_sdk.CherryPickCreation(ref=feature_commit)), {}),
    ]
    for call, args, kwargs in forbidden:
        status, message = status_of(call, *args, **kwargs)
        assert status == 403, call
        assert "protected branch" in message
    refused = sdk.objects_api.delete_objects(repo, "main", lakefs_sdk.PathList(paths=["a.txt"])).errors
    assert [(e.path, e.status_code, e.message) for e in refused] == [("a.txt", 403, "cannot write to protected branch")]
    assert sdk.branches_api.get_branch(repo, "main").commit_id == head == base
    assert paths(sdk, repo) == ["a.txt"]
    merged = sdk.refs_api.merge_into_branch(repo, "feature", "main").reference  # merges are what protection allows
    assert sdk.branches_api.get_branch(repo, "main").commit_id == merged
    put(sdk, repo, "g.txt", b"g", branch="feature")  # other branches stay writable


def test_read_only_repository_refuses_writes(sdk, repo_name):
    sdk.repositories_api.create_repository(
        lakefs_sdk.RepositoryCreation(
            name=repo_name, storage_namespace=f"local://{repo_name}", default_branch="main", read_only=True
        )
    )
    assert sdk.repositories_api.get_repository(repo_name).read_only is True
    status, message = status_of(sdk.objects_api.upload_object, repo_name, "main", "x", content=b"x")
    assert (status, message) == (403, "read-only repository")
    assert (
        status_of(sdk.commits_api.commit, repo_name, "main", lakefs_sdk.CommitCreation(message="m", allow_empty=True))[
            0
        ]
        == 403
    )
    assert status_of(sdk.branches_api.reset_branch, repo_name, "main", lakefs_sdk.ResetCreation(type="reset"))[0] == 403
    assert status_of(sdk.repositories_api.set_branch_protection_rules, repo_name, [])[0] == 403
    assert (
        status_of(sdk.branches_api.create_branch, repo_name, lakefs_sdk.BranchCreation(name="b2", source="main"))[0]
        == 403
    )
    assert status_of(sdk.branches_api.delete_branch, repo_name, "main")[0] == 403
    assert [b.id for b in sdk.branches_api.list_branches(repo_name).results] == ["main"]
    assert paths(sdk, repo_name) == []
    # force writes through, as lakeFS allows for read-only repositories
    put_forced = sdk.objects_api.upload_object(repo_name, "main", "x", content=b"x", force=True)
    assert put_forced.path == "x"
    sdk.commits_api.commit(repo_name, "main", lakefs_sdk.CommitCreation(message="forced", force=True))
    assert paths(sdk, repo_name) == ["x"]
    # tags too: created and deleted only with force
    assert status_of(sdk.tags_api.create_tag, repo_name, lakefs_sdk.TagCreation(id="v1", ref="main"))[0] == 403
    sdk.tags_api.create_tag(repo_name, lakefs_sdk.TagCreation(id="v1", ref="main", force=True))
    assert status_of(sdk.tags_api.delete_tag, repo_name, "v1")[0] == 403
    sdk.tags_api.delete_tag(repo_name, "v1", force=True)
    assert sdk.tags_api.list_tags(repo_name).results == []


def test_branch_and_tag_names_never_shadow_each_other_or_a_commit(sdk, repo):
    """As lakeFS' catalog: a new branch or tag may not take a commit id or the other kind's name (409), and
    ``force`` does not overwrite an existing one (it only passes a read-only repository)."""
    head = commit(sdk, repo, "first", allow_empty=True)
    sdk.tags_api.create_tag(repo, lakefs_sdk.TagCreation(id="v1", ref="main"))
    sdk.branches_api.create_branch(repo, lakefs_sdk.BranchCreation(name="dev", source="main"))
    cases = [
        (
            sdk.branches_api.create_branch,
            lakefs_sdk.BranchCreation(name="v1", source="main"),
            "tag ID v1: conflict found",
        ),
        (
            sdk.branches_api.create_branch,
            lakefs_sdk.BranchCreation(name=head, source="main"),
            f"commit ID {head}: conflict found",
        ),
        (
            sdk.branches_api.create_branch,
            lakefs_sdk.BranchCreation(name="dev", source="main", force=True),
            "branch already exists",
        ),
        (sdk.tags_api.create_tag, lakefs_sdk.TagCreation(id="dev", ref="main"), "branch name dev: conflict found"),
        (sdk.tags_api.create_tag, lakefs_sdk.TagCreation(id=head, ref="main"), f"commit ID {head}: conflict found"),
        (sdk.tags_api.create_tag, lakefs_sdk.TagCreation(id="v1", ref="dev", force=True), "tag already exists"),
    ]
    for call, body, message in cases:
        assert status_of(call, repo, body) == (409, message)
    assert sdk.tags_api.get_tag(repo, "v1").commit_id == head
    assert sorted(b.id for b in sdk.branches_api.list_branches(repo).results) == ["dev", "main"]


# -- presign over a blockstore that cannot presign -------------------------------------------------------------------
def test_presign_is_refused_as_lakefs_refuses_it_for_the_local_blockstore(sdk, repo):
    assert sdk.config_api.get_config().storage_config.pre_sign_support is False
    put(sdk, repo, "a.txt", b"hello")
    for call in (sdk.objects_api.stat_object, sdk.objects_api.get_object):
        status, message = status_of(call, repo, "main", "a.txt", presign=True)
        assert status == 400 and "not supported" in message
        assert status_of(call, repo, "main", "nope", presign=True)[0] == 404  # the object is looked up first
    assert status_of(sdk.objects_api.list_objects, repo, "main", presign=True)[0] == 400
    assert sdk.objects_api.list_objects(repo, "main", prefix="nope/", presign=True).results == []
    assert read(sdk, repo, "main", "a.txt") == b"hello"
    assert sdk.objects_api.stat_object(repo, "main", "a.txt", presign=False).path == "a.txt"


def reachable(refs: RefManager, commit_id: str, first_parent: bool = False) -> dict:
    """Every commit reachable from ``commit_id`` (the definition, walked plainly)."""
    found, frontier = {}, [commit_id]
    while frontier:
        current = frontier.pop()
        if current not in found:
            found[current] = refs.commit("r", current)
            frontier.extend(found[current].parents[:1] if first_parent else found[current].parents)
    return found


@pytest.mark.parametrize("seed", range(5))
def test_merge_base_and_log_order_in_random_histories(tmp_path, seed):
    """The walks that stop early give what the definitions say: the merge base is, of the common ancestors, the
    highest generation (then the highest id), None for unrelated commits; the log lists every reachable commit,
    each time the newest (then highest id) of those whose child was listed (lakeFS' commit iterator)."""
    rng = random.Random(seed)
    db = Database(tmp_path / "refs.db", synchronous="OFF")
    with db.write() as tx:
        commits: list[str] = []
        for i in range(120):
            recent = commits[-15:]
            parents = [] if i < 3 else rng.sample(recent, k=rng.choice([1, 1, 2]))  # three unrelated roots
            commits.append(tx.refs.create_commit("r", parents, "me", f"c{i}", rng.randrange(50), "", {}).id)
        for _ in range(200):
            a, b = rng.choice(commits), rng.choice(commits)
            ours, theirs = reachable(tx.refs, a), reachable(tx.refs, b)
            common = [ours[c] for c in ours if c in theirs]
            expected = max(common, key=lambda c: (c.generation, c.id)).id if common else None
            assert tx.refs.merge_base("r", a, b) == expected
        for start in rng.sample(commits, 20):
            for first_parent in (False, True):
                everything = reachable(tx.refs, start, first_parent)
                order, frontier = [], {start}
                while frontier:
                    newest = max(frontier, key=lambda c: (everything[c].creation_date, c))
                    order.append(everything[newest])
                    parents = everything[newest].parents[:1] if first_parent else everything[newest].parents
                    frontier = (frontier | set(parents)) - {c.id for c in order}
                assert list(tx.refs.history("r", start, first_parent)) == order
