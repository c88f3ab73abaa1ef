"""Every query parameter and request body field that lakeFS' API spec (``tests/data/swagger.yml``, lakeFS v1.84.0)
declares for an operation the server routes is either honoured (``HONOURED`` names the test asserting its
behaviour) or refused as lakeFS refuses what it does not implement (``REFUSED``: status and message, asserted here).
A field a newer spec adds fails ``test_every_declared_field_is_honoured_or_refused`` until it is handled."""

from __future__ import annotations

import ast
import base64
import json
import re
import urllib.parse
from functools import cache
from pathlib import Path

import lakefs_sdk
import pytest
import urllib3
import yaml
from lakefs_sdk.client import LakeFSClient

TESTS = Path(__file__).parent
SPEC = TESTS / "data" / "swagger.yml"

# (operationId, "query" | "body", field) -> (the test asserting the field's behaviour, a string its source holds)
HONOURED = {
    ("listRepositories", "query", "prefix"): ("test_contract_sdk.py::test_repository_lifecycle", "prefix="),
    ("listRepositories", "query", "after"): ("test_lakefs_rules.py::test_repositories_are_searched_by_substring", ""),
    ("listRepositories", "query", "amount"): ("test_lakefs_rules.py::test_repositories_are_searched_by_substring", ""),
    ("listRepositories", "query", "search"): ("test_lakefs_rules.py::test_repositories_are_searched_by_substring", ""),
    ("createRepository", "body", "name"): ("test_contract_sdk.py::test_repository_lifecycle", ""),
    ("createRepository", "body", "storage_namespace"): ("test_contract_sdk.py::test_repository_lifecycle", ""),
    ("createRepository", "body", "default_branch"): ("test_contract_sdk.py::test_repository_lifecycle", ""),
    ("createRepository", "body", "storage_id"): (
        "test_lakefs_rules.py::test_an_unknown_storage_id_is_refused_and_creates_nothing",
        "",
    ),
    ("createRepository", "body", "sample_data"): (
        "test_lakefs_rules.py::test_sample_data_commits_the_sample_and_protects_the_default_branch",
        "",
    ),
    ("createRepository", "body", "read_only"): ("test_ops.py::test_read_only_repository_refuses_writes", ""),
    ("deleteRepository", "query", "force"): (
        "test_lakefs_rules.py::test_a_read_only_repository_is_deleted_only_with_force",
        "",
    ),
    ("setBranchProtectionRules", "body", "pattern"): (
        "test_ops.py::test_branch_protection_rules_get_set_and_etag",
        "",
    ),
    ("listTags", "query", "prefix"): ("test_swagger_walk.py::test_tag_and_branch_listings_page", ""),
    ("listTags", "query", "after"): ("test_swagger_walk.py::test_tag_and_branch_listings_page", ""),
    ("listTags", "query", "amount"): ("test_swagger_walk.py::test_tag_and_branch_listings_page", ""),
    ("createTag", "body", "id"): ("test_contract_sdk.py::test_tags", "TagCreation(id="),
    ("createTag", "body", "ref"): ("test_contract_sdk.py::test_tags", "ref="),
    ("createTag", "body", "force"): ("test_ops.py::test_read_only_repository_refuses_writes", ""),
    ("deleteTag", "query", "force"): ("test_ops.py::test_read_only_repository_refuses_writes", "delete_tag("),
    ("listBranches", "query", "prefix"): ("test_swagger_walk.py::test_tag_and_branch_listings_page", ""),
    ("listBranches", "query", "after"): ("test_contract_sdk.py::test_branch_lifecycle", ""),
    ("listBranches", "query", "amount"): ("test_contract_sdk.py::test_branch_lifecycle", ""),
    ("listBranches", "query", "show_hidden"): (
        "test_lakefs_rules.py::test_hidden_branches_are_listed_only_with_show_hidden",
        "",
    ),
    ("createBranch", "body", "name"): ("test_contract_sdk.py::test_branch_lifecycle", ""),
    ("createBranch", "body", "source"): ("test_contract_sdk.py::test_branch_lifecycle", ""),
    ("createBranch", "body", "force"): ("test_swagger_walk.py::test_force_lets_writes_into_a_read_only_repository", ""),
    ("createBranch", "body", "hidden"): (
        "test_lakefs_rules.py::test_hidden_branches_are_listed_only_with_show_hidden",
        "",
    ),
    ("logCommits", "query", "after"): ("test_contract_sdk.py::test_commit_and_log", ""),
    ("logCommits", "query", "amount"): ("test_contract_sdk.py::test_commit_and_log", ""),
    ("logCommits", "query", "objects"): ("test_ops.py::test_log_objects_filter", ""),
    ("logCommits", "query", "prefixes"): ("test_ops.py::test_log_prefixes_filter", ""),
    ("logCommits", "query", "limit"): ("test_ops.py::test_log_filter_pagination_and_limit", ""),
    ("logCommits", "query", "first_parent"): ("test_ops.py::test_log_first_parent", ""),
    ("logCommits", "query", "since"): ("test_ops.py::test_log_since_and_stop_at", ""),
    ("logCommits", "query", "stop_at"): ("test_ops.py::test_log_since_and_stop_at", ""),
    ("commit", "body", "message"): ("test_contract_sdk.py::test_commit_and_log", ""),
    ("commit", "body", "metadata"): ("test_swagger_walk.py::test_commit_takes_date_and_metadata", ""),
    ("commit", "body", "date"): ("test_swagger_walk.py::test_commit_takes_date_and_metadata", ""),
    ("commit", "body", "allow_empty"): ("test_ops.py::test_read_only_repository_refuses_writes", ""),
    ("commit", "body", "force"): ("test_ops.py::test_read_only_repository_refuses_writes", ""),
    ("deleteBranch", "query", "force"): (
        "test_swagger_walk.py::test_force_lets_writes_into_a_read_only_repository",
        "",
    ),
    ("resetBranch", "body", "type"): ("test_contract_sdk.py::test_reset_branch_drops_uncommitted", ""),
    ("resetBranch", "body", "path"): ("test_contract_sdk.py::test_reset_branch_drops_uncommitted", ""),
    ("resetBranch", "body", "force"): ("test_swagger_walk.py::test_force_lets_writes_into_a_read_only_repository", ""),
    ("hardResetBranch", "query", "ref"): (
        "test_swagger_walk.py::test_force_lets_writes_into_a_read_only_repository",
        "",
    ),
    ("hardResetBranch", "query", "force"): (
        "test_swagger_walk.py::test_force_lets_writes_into_a_read_only_repository",
        "",
    ),
    ("revertBranch", "body", "ref"): ("test_ops.py::test_revert_branch", ""),
    ("revertBranch", "body", "parent_number"): ("test_ops.py::test_revert_merge_needs_parent_number", ""),
    ("revertBranch", "body", "commit_overrides"): (
        "test_swagger_walk.py::test_revert_and_cherry_pick_take_commit_overrides",
        "",
    ),
    ("revertBranch", "body", "force"): ("test_swagger_walk.py::test_force_lets_writes_into_a_read_only_repository", ""),
    ("revertBranch", "body", "allow_empty"): (
        "test_swagger_walk.py::test_revert_and_cherry_pick_take_commit_overrides",
        "",
    ),
    ("cherryPick", "body", "ref"): ("test_ops.py::test_cherry_pick", ""),
    ("cherryPick", "body", "parent_number"): ("test_ops.py::test_revert_merge_needs_parent_number", ""),
    ("cherryPick", "body", "commit_overrides"): (
        "test_swagger_walk.py::test_revert_and_cherry_pick_take_commit_overrides",
        "",
    ),
    ("cherryPick", "body", "force"): ("test_swagger_walk.py::test_force_lets_writes_into_a_read_only_repository", ""),
    ("mergeIntoBranch", "body", "message"): ("test_swagger_walk.py::test_squash_merge_has_one_parent", ""),
    ("mergeIntoBranch", "body", "metadata"): ("test_swagger_walk.py::test_squash_merge_has_one_parent", ""),
    ("mergeIntoBranch", "body", "strategy"): ("test_contract_sdk.py::test_three_way_merge_and_conflict", ""),
    ("mergeIntoBranch", "body", "force"): (
        "test_swagger_walk.py::test_force_lets_writes_into_a_read_only_repository",
        "",
    ),
    ("mergeIntoBranch", "body", "allow_empty"): (
        "test_lakefs_rules.py::test_merging_a_source_whose_metarange_is_the_bases_has_no_changes",
        "",
    ),
    ("mergeIntoBranch", "body", "squash_merge"): ("test_swagger_walk.py::test_squash_merge_has_one_parent", ""),
    ("diffBranch", "query", "after"): ("test_swagger_walk.py::test_diff_listings_page", ""),
    ("diffBranch", "query", "amount"): ("test_swagger_walk.py::test_diff_listings_page", ""),
    ("diffBranch", "query", "prefix"): ("test_swagger_walk.py::test_diff_listings_page", ""),
    ("diffBranch", "query", "delimiter"): ("test_swagger_walk.py::test_diff_listings_page", ""),
    ("diffRefs", "query", "after"): ("test_swagger_walk.py::test_diff_listings_page", ""),
    ("diffRefs", "query", "amount"): ("test_swagger_walk.py::test_diff_listings_page", ""),
    ("diffRefs", "query", "prefix"): ("test_swagger_walk.py::test_diff_listings_page", ""),
    ("diffRefs", "query", "delimiter"): ("test_swagger_walk.py::test_diff_listings_page", ""),
    ("diffRefs", "query", "type"): ("test_contract_sdk.py::test_diff_uncommitted_and_between_refs", "two_dot"),
    ("getObject", "query", "path"): ("test_contract_sdk.py::test_upload_stat_get_octet_stream_with_metadata", "get_"),
    ("getObject", "query", "presign"): (
        "test_ops.py::test_presign_is_refused_as_lakefs_refuses_it_for_the_local_blockstore",
        "",
    ),
    ("headObject", "query", "path"): ("test_swagger_walk.py::test_head_object", ""),
    ("uploadObject", "query", "path"): ("test_contract_sdk.py::test_upload_stat_get_octet_stream_with_metadata", ""),
    ("uploadObject", "query", "storageClass"): ("test_lakefs_rules.py::test_upload_accepts_a_storage_class", ""),
    ("uploadObject", "query", "force"): ("test_ops.py::test_read_only_repository_refuses_writes", ""),
    ("uploadObject", "body", "content"): ("test_contract_sdk.py::test_upload_stat_get_octet_stream_with_metadata", ""),
    ("deleteObject", "query", "path"): ("test_contract_sdk.py::test_list_objects_prefix_delimiter_pagination", ""),
    ("deleteObject", "query", "force"): (
        "test_swagger_walk.py::test_force_lets_writes_into_a_read_only_repository",
        "",
    ),
    ("deleteObject", "query", "no_tombstone"): ("test_lakefs_rules.py::test_no_tombstone_deletes_as_without_it", ""),
    ("deleteObjects", "query", "force"): ("test_lakefs_rules.py::test_delete_objects_takes_force_from_the_query", ""),
    ("deleteObjects", "query", "no_tombstone"): ("test_lakefs_rules.py::test_no_tombstone_deletes_as_without_it", ""),
    ("deleteObjects", "body", "paths"): ("test_contract_sdk.py::test_delete_objects_many", ""),
    ("copyObject", "query", "dest_path"): ("test_swagger_walk.py::test_copy_reads_from_src_ref", "copy_object("),
    ("copyObject", "body", "src_path"): ("test_swagger_walk.py::test_copy_reads_from_src_ref", ""),
    ("copyObject", "body", "src_ref"): ("test_swagger_walk.py::test_copy_reads_from_src_ref", ""),
    ("copyObject", "body", "force"): ("test_swagger_walk.py::test_force_lets_writes_into_a_read_only_repository", ""),
    ("statObject", "query", "path"): ("test_contract_sdk.py::test_upload_stat_get_octet_stream_with_metadata", ""),
    ("statObject", "query", "user_metadata"): ("test_swagger_walk.py::test_user_metadata_false_leaves_it_out", ""),
    ("statObject", "query", "presign"): (
        "test_ops.py::test_presign_is_refused_as_lakefs_refuses_it_for_the_local_blockstore",
        "",
    ),
    ("updateObjectUserMetadata", "query", "path"): ("test_ops.py::test_update_object_user_metadata", ""),
    ("updateObjectUserMetadata", "body", "set"): ("test_ops.py::test_update_object_user_metadata", ""),
    ("listObjects", "query", "user_metadata"): ("test_swagger_walk.py::test_user_metadata_false_leaves_it_out", ""),
    ("listObjects", "query", "presign"): (
        "test_ops.py::test_presign_is_refused_as_lakefs_refuses_it_for_the_local_blockstore",
        "",
    ),
    ("listObjects", "query", "after"): ("test_contract_sdk.py::test_list_objects_prefix_delimiter_pagination", ""),
    ("listObjects", "query", "amount"): ("test_contract_sdk.py::test_list_objects_prefix_delimiter_pagination", ""),
    ("listObjects", "query", "delimiter"): ("test_contract_sdk.py::test_list_objects_prefix_delimiter_pagination", ""),
    ("listObjects", "query", "prefix"): ("test_contract_sdk.py::test_list_objects_prefix_delimiter_pagination", ""),
}

NOT_IMPLEMENTED = (501, "functionality not implemented")
ALREADY_SET_UP = (409, "lakeFS already initialized")  # the one user and its keys exist from the start
# (operationId, "query" | "body", field) -> (a non-default value, lakeFS' status, lakeFS' message (its start))
REFUSED = {
    ("createRepository", "query", "bare"): ("true", *NOT_IMPLEMENTED),  # for refs-restore, which is not served
    ("commit", "query", "source_metarange"): ("0" * 64, *NOT_IMPLEMENTED),
    ("diffRefs", "query", "include_right_stats"): ("true", *NOT_IMPLEMENTED),
    ("copyObject", "body", "shallow"): (True, *NOT_IMPLEMENTED),
    ("setup", "body", "username"): ("admin", *ALREADY_SET_UP),
    ("setup", "body", "key"): ({"access_key_id": "AKIAEXAMPLE", "secret_access_key": "example"}, *ALREADY_SET_UP),
    ("setup", "body", "firstName"): ("Ada", *ALREADY_SET_UP),
    ("setup", "body", "lastName"): ("Lovelace", *ALREADY_SET_UP),
    ("setup", "body", "email"): ("ada@example.com", *ALREADY_SET_UP),
    ("setup", "body", "companyName"): ("Example", *ALREADY_SET_UP),
    ("setup", "body", "featureUpdates"): (True, *ALREADY_SET_UP),
    ("setup", "body", "securityUpdates"): (True, *ALREADY_SET_UP),
}
# operationId -> (method, path, query, body) of a request the server accepts, which REFUSED's fields are added to
BASE_REQUESTS = {
    "createRepository": (
        "POST",
        "/repositories",
        {},
        {"name": "{repo}-new", "storage_namespace": "local://{repo}-new"},
    ),
    "commit": ("POST", "/repositories/{repo}/branches/main/commits", {}, {"message": "m", "allow_empty": True}),
    "diffRefs": ("GET", "/repositories/{repo}/refs/main/diff/main", {}, None),
    "copyObject": ("POST", "/repositories/{repo}/branches/main/objects/copy", {"dest_path": "b"}, {"src_path": "a"}),
    "setup": ("POST", "/setup_lakefs", {}, {}),
}
BASE_STATUS = {"setup": 409}  # refused whatever it carries: the server is set up from the start


@cache
def spec() -> dict:
    return yaml.safe_load(SPEC.read_text())


def _follow(node: dict) -> dict:
    """``node`` with its ``$ref`` (``#/components/...``) followed."""
    while "$ref" in node:
        target = spec()
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def body_fields(schema: dict) -> set[str]:
    """The properties of a body schema (an array's items; ``allOf`` parts merged)."""
    schema = _follow(schema)
    if schema.get("type") == "array":
        schema = _follow(schema["items"])
    names = set(schema.get("properties", {}))
    for part in schema.get("allOf", []):
        names |= body_fields(part)
    return names


def declared_fields(router) -> set[tuple[str, str, str]]:
    """``(operationId, "query" | "body", name)`` of every operation in the spec that ``router`` routes."""
    declared = set()
    for template, item in spec()["paths"].items():
        for method, operation in item.items():
            if method == "parameters":
                continue
            handler, _, _ = router.match(method.upper(), re.sub(r"\{[^}]+\}", "x", template))
            if handler is None:
                continue
            op = operation["operationId"]
            for parameter in map(_follow, item.get("parameters", []) + operation.get("parameters", [])):
                if parameter["in"] == "query":
                    declared.add((op, "query", parameter["name"]))
            for content in operation.get("requestBody", {}).get("content", {}).values():
                declared |= {(op, "body", name) for name in body_fields(content["schema"])}
    return declared


def test_every_declared_field_is_honoured_or_refused(lakefs_server):
    declared = declared_fields(lakefs_server.api.router)
    assert len({op for op, _, _ in declared}) >= 25  # the walk found the routed operations
    assert not HONOURED.keys() & REFUSED.keys()
    assert declared - HONOURED.keys() - REFUSED.keys() == set(), "declared, neither honoured nor refused"
    assert (HONOURED.keys() | REFUSED.keys()) - declared == set(), "listed, not declared for a routed operation"


def test_every_routed_operation_is_in_the_spec(lakefs_server):
    routed = {(method, template) for method, template, _ in lakefs_server.api._routes()}
    in_spec = {
        (method.upper(), re.sub(r"\{[^}]+\}", "{}", template))
        for template, item in spec()["paths"].items()
        for method in item
        if method != "parameters"
    }
    assert {(m, re.sub(r"\{[^}]+\}", "{}", t)) for m, t in routed} - in_spec == set()


@cache
def function_sources() -> dict[str, str]:
    """``file::test name`` -> the test function's source, for every test module here."""
    sources = {}
    for path in sorted(TESTS.glob("test_*.py")):
        text = path.read_text()
        for node in ast.parse(text).body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                sources[f"{path.name}::{node.name}"] = ast.get_source_segment(text, node)
    return sources


@pytest.mark.parametrize("field", sorted(HONOURED), ids="-".join)
def test_each_honoured_field_names_a_test_that_uses_it(field):
    test, evidence = HONOURED[field]
    assert test in function_sources(), f"{test} does not exist"
    assert (evidence or field[2]) in function_sources()[test], f"{test} never mentions {evidence or field[2]!r}"


def api_call(settings, method: str, path: str, query: dict, body) -> tuple[int, dict]:
    keys = base64.b64encode(f"{settings.access_key_id}:{settings.secret_access_key}".encode()).decode()
    response = urllib3.request(
        method,
        settings.api_url + path + ("?" + urllib.parse.urlencode(query) if query else ""),
        body=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Basic {keys}", "Content-Type": "application/json"},
    )
    return response.status, (response.json() if response.data else {})


@pytest.mark.parametrize("field", sorted(REFUSED), ids="-".join)
def test_each_refused_field_is_refused_as_lakefs_refuses_it(field, lakefs_settings, sdk, repo_name):
    op, where, name = field
    value, status, message = REFUSED[field]
    create_repo(sdk, repo_name)
    sdk.objects_api.upload_object(repo_name, "main", "a", content=b"a")
    head = sdk.commits_api.commit(repo_name, "main", lakefs_sdk.CommitCreation(message="a")).id
    method, template, query, body = BASE_REQUESTS[op]
    path = template.format(repo=repo_name)
    body = None if body is None else {k: v.format(repo=repo_name) if isinstance(v, str) else v for k, v in body.items()}
    given_query, given_body = dict(query), None if body is None else dict(body)
    if where == "query":
        given_query[name] = value
    else:
        given_body[name] = value

    answered, answer = api_call(lakefs_settings, method, path, given_query, given_body)
    assert answered == status and answer["message"].startswith(message), answer
    assert sdk.commits_api.get_commit(repo_name, "main").id == head  # nothing left behind
    assert all_paths(sdk, repo_name, "main") == ["a"]
    assert refused_status(sdk.repositories_api.get_repository, f"{repo_name}-new") == 404
    answered, answer = api_call(lakefs_settings, method, path, query, body)  # the same without the field
    assert answered == BASE_STATUS.get(op, answered) and (answered < 300 or op in BASE_STATUS), answer


# -- behaviour of honoured fields no other test exercised ------------------------------------------------------------
def create_repo(sdk: LakeFSClient, name: str, **fields) -> None:
    sdk.repositories_api.create_repository(
        lakefs_sdk.RepositoryCreation(name=name, storage_namespace=f"local://{name}", **fields)
    )


def refused_status(call, *args, **kwargs) -> int:
    with pytest.raises(lakefs_sdk.ApiException) as info:
        call(*args, **kwargs)
    return info.value.status


def all_paths(sdk: LakeFSClient, repo: str, ref: str) -> list[str]:
    return [o.path for o in sdk.objects_api.list_objects(repo, ref, amount=1000).results]


def put_and_commit(sdk: LakeFSClient, repo: str, branch: str, path: str, **force) -> str:
    sdk.objects_api.upload_object(repo, branch, path, content=path.encode(), **force)
    return sdk.commits_api.commit(repo, branch, lakefs_sdk.CommitCreation(message=path, **force)).id


def test_force_lets_writes_into_a_read_only_repository(sdk, repo_name):
    """Each write refused with 403 in a read-only repository passes with force=true (lakeFS' WithForce)."""
    create_repo(sdk, repo_name, read_only=True)
    forced = {"force": True}
    put_and_commit(sdk, repo_name, "main", "a", **forced)
    branches, objects, refs = sdk.branches_api, sdk.objects_api, sdk.refs_api

    def refused_then_forced(call, *args, **kwargs):
        assert refused_status(call, *args, **kwargs) == 403
        call(*args, **kwargs, **forced)

    refused_then_forced(
        lambda **f: branches.create_branch(repo_name, lakefs_sdk.BranchCreation(name="dev", source="main", **f))
    )
    source = put_and_commit(sdk, repo_name, "dev", "b", **forced)
    refused_then_forced(lambda **f: refs.merge_into_branch(repo_name, "dev", "main", lakefs_sdk.Merge(**f)))
    assert all_paths(sdk, repo_name, "main") == ["a", "b"]
    refused_then_forced(
        lambda **f: branches.revert_branch(
            repo_name, "main", lakefs_sdk.RevertCreation(ref="main", parent_number=1, **f)
        )
    )
    assert all_paths(sdk, repo_name, "main") == ["a"]
    refused_then_forced(
        lambda **f: branches.cherry_pick(repo_name, "main", lakefs_sdk.CherryPickCreation(ref=source, **f))
    )
    assert all_paths(sdk, repo_name, "main") == ["a", "b"]
    refused_then_forced(
        lambda **f: objects.copy_object(repo_name, "main", "c", lakefs_sdk.ObjectCopyCreation(src_path="a", **f))
    )
    refused_then_forced(objects.delete_object, repo_name, "main", "b")
    assert all_paths(sdk, repo_name, "main") == ["a", "c"]
    refused_then_forced(
        lambda **f: branches.reset_branch(repo_name, "main", lakefs_sdk.ResetCreation(type="object", path="c", **f))
    )
    assert all_paths(sdk, repo_name, "main") == ["a"]  # b's deletion stays, c's copy is gone
    refused_then_forced(sdk.experimental_api.hard_reset_branch, repo_name, "main", ref=source)
    assert sdk.branches_api.get_branch(repo_name, "main").commit_id == source
    refused_then_forced(branches.delete_branch, repo_name, "dev")
    assert [b.id for b in branches.list_branches(repo_name).results] == ["main"]


def test_revert_and_cherry_pick_take_commit_overrides(sdk, repo_name):
    create_repo(sdk, repo_name)
    sdk.branches_api.create_branch(repo_name, lakefs_sdk.BranchCreation(name="dev", source="main"))
    picked = put_and_commit(sdk, repo_name, "dev", "a")
    overrides = lakefs_sdk.CommitOverrides(message="picked a", metadata={"why": "test"})
    creation = lakefs_sdk.CherryPickCreation(ref=picked, commit_overrides=overrides)
    made = sdk.branches_api.cherry_pick(repo_name, "main", creation)
    assert made.message == "picked a" and made.metadata["why"] == "test"
    overrides = lakefs_sdk.CommitOverrides(message="undo a", metadata={"undo": "yes"})
    sdk.branches_api.revert_branch(
        repo_name, "main", lakefs_sdk.RevertCreation(ref="main", parent_number=0, commit_overrides=overrides)
    )
    head = sdk.commits_api.get_commit(repo_name, "main")
    assert head.message == "undo a" and head.metadata["undo"] == "yes"
    assert all_paths(sdk, repo_name, "main") == []
    again = lakefs_sdk.RevertCreation(ref=picked, parent_number=0)  # its change is undone already: nothing to do
    assert refused_status(sdk.branches_api.revert_branch, repo_name, "main", again) == 400
    again.allow_empty = True
    sdk.branches_api.revert_branch(repo_name, "main", again)
    assert sdk.commits_api.get_commit(repo_name, "main").parents == [head.id]


def test_squash_merge_has_one_parent(sdk, repo_name):
    create_repo(sdk, repo_name)
    for name in ("squashed", "merged"):
        sdk.branches_api.create_branch(repo_name, lakefs_sdk.BranchCreation(name=name, source="main"))
        put_and_commit(sdk, repo_name, name, f"{name}.txt")
    before = sdk.branches_api.get_branch(repo_name, "main").commit_id
    merge = lakefs_sdk.Merge(message="squash it", metadata={"k": "v"}, squash_merge=True)
    sdk.refs_api.merge_into_branch(repo_name, "squashed", "main", merge)
    head = sdk.commits_api.get_commit(repo_name, "main")
    assert (head.parents, head.message, head.metadata["k"]) == ([before], "squash it", "v")
    sdk.refs_api.merge_into_branch(repo_name, "merged", "main", lakefs_sdk.Merge(squash_merge=False))
    assert len(sdk.commits_api.get_commit(repo_name, "main").parents) == 2
    assert all_paths(sdk, repo_name, "main") == ["merged.txt", "squashed.txt"]


def test_commit_takes_date_and_metadata(sdk, repo_name):
    create_repo(sdk, repo_name)
    creation = lakefs_sdk.CommitCreation(message="dated", date=1_700_000_000, metadata={"a": "1"}, allow_empty=True)
    made = sdk.commits_api.commit(repo_name, "main", creation)
    assert (made.creation_date, made.metadata) == (1_700_000_000, {"a": "1"})
    logged = sdk.refs_api.log_commits(repo_name, "main", amount=1).results[0]
    assert (logged.id, logged.creation_date, logged.metadata) == (made.id, 1_700_000_000, {"a": "1"})


def test_user_metadata_false_leaves_it_out(sdk, repo_name):
    create_repo(sdk, repo_name)
    sdk.objects_api.upload_object(repo_name, "main", "a", content=b"a", _headers={"x-lakefs-meta-color": "blue"})
    assert sdk.objects_api.stat_object(repo_name, "main", "a").metadata == {"color": "blue"}
    assert sdk.objects_api.stat_object(repo_name, "main", "a", user_metadata=False).metadata in ({}, None)
    listed = sdk.objects_api.list_objects(repo_name, "main", user_metadata=False).results
    assert [o.metadata for o in listed] in ([{}], [None])
    assert sdk.objects_api.list_objects(repo_name, "main", user_metadata=True).results[0].metadata == {"color": "blue"}


def test_copy_reads_from_src_ref(sdk, repo_name):
    create_repo(sdk, repo_name)
    put_and_commit(sdk, repo_name, "main", "a")
    sdk.tags_api.create_tag(repo_name, lakefs_sdk.TagCreation(id="v1", ref="main"))
    sdk.objects_api.upload_object(repo_name, "main", "a", content=b"changed")
    copied = lakefs_sdk.ObjectCopyCreation(src_path="a", src_ref="v1")
    sdk.objects_api.copy_object(repo_name, "main", "from-tag", copied)
    sdk.objects_api.copy_object(repo_name, "main", "from-branch", lakefs_sdk.ObjectCopyCreation(src_path="a"))
    assert sdk.objects_api.get_object(repo_name, "main", "from-tag") == b"a"
    assert sdk.objects_api.get_object(repo_name, "main", "from-branch") == b"changed"


def test_head_object(sdk, repo_name):
    create_repo(sdk, repo_name)
    sdk.objects_api.upload_object(repo_name, "main", "a", content=b"abc")
    info = sdk.objects_api.head_object_with_http_info(repo_name, "main", path="a")
    assert info.status_code == 200 and info.headers["Content-Length"] == "3"
    assert refused_status(sdk.objects_api.head_object, repo_name, "main", path="missing") == 404


def test_diff_listings_page(sdk, repo_name):
    create_repo(sdk, repo_name)
    base = put_and_commit(sdk, repo_name, "main", "keep")
    for path in ("a/1", "a/2", "b/1", "c"):
        sdk.objects_api.upload_object(repo_name, "main", path, content=b"x")

    def paths(result) -> list[str]:
        return [d.path for d in result.results]

    diff_branch = sdk.branches_api.diff_branch
    assert paths(diff_branch(repo_name, "main", delimiter="/")) == ["a/", "b/", "c"]
    assert paths(diff_branch(repo_name, "main", prefix="a/")) == ["a/1", "a/2"]
    page = diff_branch(repo_name, "main", amount=2)
    assert paths(page) == ["a/1", "a/2"] and page.pagination.has_more
    assert paths(diff_branch(repo_name, "main", after=page.pagination.next_offset)) == ["b/1", "c"]
    head = sdk.commits_api.commit(repo_name, "main", lakefs_sdk.CommitCreation(message="four")).id
    diff_refs = sdk.refs_api.diff_refs
    assert paths(diff_refs(repo_name, base, head, delimiter="/")) == ["a/", "b/", "c"]
    assert paths(diff_refs(repo_name, base, head, prefix="b/")) == ["b/1"]
    page = diff_refs(repo_name, base, head, amount=3)
    assert paths(page) == ["a/1", "a/2", "b/1"] and page.pagination.has_more
    assert paths(diff_refs(repo_name, base, head, after="b/1")) == ["c"]


def test_tag_and_branch_listings_page(sdk, repo_name):
    create_repo(sdk, repo_name)
    for name in ("v1", "v2", "w1"):
        sdk.tags_api.create_tag(repo_name, lakefs_sdk.TagCreation(id=name, ref="main"))
        sdk.branches_api.create_branch(repo_name, lakefs_sdk.BranchCreation(name=f"b-{name}", source="main"))
    tags = sdk.tags_api.list_tags
    assert [t.id for t in tags(repo_name, prefix="v").results] == ["v1", "v2"]
    page = tags(repo_name, amount=2)
    assert [t.id for t in page.results] == ["v1", "v2"] and page.pagination.has_more
    assert [t.id for t in tags(repo_name, after="v2").results] == ["w1"]
    assert [b.id for b in sdk.branches_api.list_branches(repo_name, prefix="b-v").results] == ["b-v1", "b-v2"]
