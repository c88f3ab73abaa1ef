"""The lakeFS REST API (``/api/v1``, as in treeverse/lakeFS ``api/swagger.yml``) over the catalog and blob store."""

from __future__ import annotations

import dataclasses
import datetime
import time

from . import samplerepo
from .auth import USER_ID
from .blockstore import BlobStore
from .catalog import Catalog, Commit, CommonPrefix, Difference, Entry
from .errors import ApiError, BadRequest, Conflict, Forbidden, NotFound, PreconditionFailed, RangeNotSatisfiable
from .transport import (
    DEFAULT_CONTENT_TYPE,
    Request,
    Response,
    Router,
    etag_matches,
    http_date,
    multipart_content,
    object_response,
)
from .validation import (
    BOOLEAN,
    INTEGER,
    METADATA,
    STORAGE_NAMESPACE,
    STRING,
    STRINGS,
    check_branch,
    check_object_path,
    check_ref,
    check_repository,
    check_tag,
    fields,
    parse_json,
)

LAKEFS_VERSION = "1.70.0"
METADATA_HEADER_PREFIX = "x-lakefs-meta-"
MAX_DELETE_PATHS = 1000
RESET_TYPES = ("object", "common_prefix", "reset")
PRESIGN_UNSUPPORTED = "local adapter presigned URL: operation not supported"
STORAGE_ID = ""  # the one (unnamed) blockstore: lakeFS answers "" and refuses any other storage id
NOT_IMPLEMENTED = 501
NOT_IMPLEMENTED_MESSAGE = "functionality not implemented"  # lakeFS' apiutil.ErrNotImplemented
# path parameters and how lakeFS validates them (400 before anything is looked up)
PARAM_CHECKS = {
    "repository": check_repository,
    "branch": check_branch,
    "destination_branch": check_branch,
    "tag": check_tag,
    "ref": check_ref,
    "left_ref": check_ref,
    "right_ref": check_ref,
    "source_ref": check_ref,
    "commit_id": check_ref,
}

STORAGE_CONFIG = {
    "blockstore_type": "local",
    "blockstore_namespace_example": "local://example-bucket/",
    "blockstore_namespace_ValidityRegex": "^local://",
    "default_namespace_prefix": "local://",
    "pre_sign_support": False,
    "pre_sign_support_ui": False,
    "import_support": False,
    "import_validity_regex": "^local://",
    "pre_sign_multipart_upload": False,
    "blockstore_id": "",
    "blockstore_description": "",
}


def pagination(has_more: bool, results: list, key) -> dict:
    """lakeFS' ``Pagination`` object; ``next_offset`` is the last result's key when more exist."""
    return {
        "has_more": has_more,
        "next_offset": key(results[-1]) if has_more and results else "",
        "results": len(results),
        "max_per_page": 1000,
    }


def parse_date_time(value: str | None, name: str) -> float | None:
    """An RFC 3339 ``date-time`` query parameter as a POSIX timestamp (naive: UTC); 400 when malformed."""
    if value is None or value == "":
        return None
    try:
        moment = datetime.datetime.fromisoformat(value.replace(" ", "+"))  # "+" decoded as a space
    except ValueError:
        raise BadRequest(f"validation error: {name}: {value!r} is not a valid date-time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment.timestamp()


def refuse_unimplemented(name: str, given: bool) -> None:
    """501 for a request field this server does not implement, given a non-default value (as lakeFS answers
    functionality it lacks)."""
    if given:
        raise ApiError(f"{NOT_IMPLEMENTED_MESSAGE}: {name}", NOT_IMPLEMENTED)


def commit_json(commit: Commit) -> dict:
    return {
        "id": commit.id,
        "parents": commit.parents,
        "committer": commit.committer,
        "message": commit.message,
        "creation_date": commit.creation_date,
        "meta_range_id": commit.meta_range_id,
        "metadata": commit.metadata,
        "generation": commit.generation,
        "version": 1,
    }


def repository_json(repo: dict) -> dict:
    """lakeFS' ``Repository``: the catalog's settings with the blockstore's ``storage_id``."""
    return {**repo, "storage_id": STORAGE_ID}


def diff_json(diff: Difference) -> dict:
    body = {"type": diff.type, "path": diff.path, "path_type": "common_prefix" if diff.common_prefix else "object"}
    if diff.size is not None:
        body["size_bytes"] = diff.size
    return body


class LakeFSApi:
    """Request handlers; ``router`` maps the swagger paths (below ``/api/v1``) to them."""

    PUBLIC_PATHS = frozenset({"/healthcheck", "/setup_lakefs"})

    def __init__(self, catalog: Catalog, blobs: BlobStore):
        self.catalog = catalog
        self.blobs = blobs
        self.router = Router()
        for method, template, handler in self._routes():
            self.router.add(method, template, handler)

    @staticmethod
    def check_params(params: dict[str, str]) -> None:
        """400 for a path parameter lakeFS would refuse (a malformed repository, branch, tag or ref)."""
        for name, value in params.items():
            check = PARAM_CHECKS.get(name)
            if check is not None:
                check(value)

    def _routes(self):
        repo = "/repositories/{repository}"
        return [
            ("GET", "/healthcheck", self.health_check),
            ("GET", "/setup_lakefs", self.setup_state),
            ("POST", "/setup_lakefs", self.setup),
            ("GET", "/config", self.get_config),
            ("GET", "/config/version", self.get_version),
            ("GET", "/config/storage", self.get_storage_config),
            ("GET", "/user", self.get_current_user),
            ("GET", "/repositories", self.list_repositories),
            ("POST", "/repositories", self.create_repository),
            ("GET", repo, self.get_repository),
            ("DELETE", repo, self.delete_repository),
            ("GET", repo + "/metadata", self.get_repository_metadata),
            ("GET", repo + "/settings/branch_protection", self.get_branch_protection_rules),
            ("PUT", repo + "/settings/branch_protection", self.set_branch_protection_rules),
            ("GET", repo + "/branches", self.list_branches),
            ("POST", repo + "/branches", self.create_branch),
            ("GET", repo + "/branches/{branch}", self.get_branch),
            ("DELETE", repo + "/branches/{branch}", self.delete_branch),
            ("PUT", repo + "/branches/{branch}", self.reset_branch),
            ("PUT", repo + "/branches/{branch}/hard_reset", self.hard_reset_branch),
            ("POST", repo + "/branches/{branch}/commits", self.commit),
            ("POST", repo + "/branches/{branch}/revert", self.revert_branch),
            ("POST", repo + "/branches/{branch}/cherry-pick", self.cherry_pick),
            ("PUT", repo + "/branches/{branch}/objects/stat/user_metadata", self.update_object_user_metadata),
            ("GET", repo + "/branches/{branch}/diff", self.diff_branch),
            ("POST", repo + "/branches/{branch}/objects", self.upload_object),
            ("DELETE", repo + "/branches/{branch}/objects", self.delete_object),
            ("POST", repo + "/branches/{branch}/objects/delete", self.delete_objects),
            ("POST", repo + "/branches/{branch}/objects/copy", self.copy_object),
            ("GET", repo + "/commits/{commit_id}", self.get_commit),
            ("GET", repo + "/refs/{ref}/commits", self.log_commits),
            ("GET", repo + "/refs/{left_ref}/diff/{right_ref}", self.diff_refs),
            ("GET", repo + "/refs/{source_ref}/merge/{destination_branch}", self.find_merge_base),
            ("POST", repo + "/refs/{source_ref}/merge/{destination_branch}", self.merge_into_branch),
            ("GET", repo + "/refs/{ref}/objects", self.get_object),
            ("HEAD", repo + "/refs/{ref}/objects", self.get_object),
            ("GET", repo + "/refs/{ref}/objects/stat", self.stat_object),
            ("GET", repo + "/refs/{ref}/objects/ls", self.list_objects),
            ("GET", repo + "/tags", self.list_tags),
            ("POST", repo + "/tags", self.create_tag),
            ("GET", repo + "/tags/{tag}", self.get_tag),
            ("DELETE", repo + "/tags/{tag}", self.delete_tag),
        ]

    # -- server ----------------------------------------------------------------------------------------------
    def health_check(self, request: Request) -> Response:
        return Response(204)

    def setup_state(self, request: Request) -> Response:
        return Response(200, {"state": "initialized", "comm_prefs_missing": False})

    def setup(self, request: Request) -> Response:
        raise Conflict("lakeFS already initialized")  # its one user and keys exist from the start

    def get_config(self, request: Request) -> Response:
        return Response(
            200,
            {
                "version_config": self._version(),
                "storage_config": STORAGE_CONFIG,
                "storage_config_list": [STORAGE_CONFIG],
            },
        )

    def get_version(self, request: Request) -> Response:
        return Response(200, self._version())

    def get_storage_config(self, request: Request) -> Response:
        return Response(200, STORAGE_CONFIG)

    def get_current_user(self, request: Request) -> Response:
        return Response(200, {"user": {"id": USER_ID, "creation_date": 0}})

    @staticmethod
    def _version() -> dict:
        return {"version": LAKEFS_VERSION, "version_context": "segmodels-embedded", "upgrade_recommended": False}

    # -- repositories ----------------------------------------------------------------------------------------
    def list_repositories(self, request: Request) -> Response:
        repos, has_more = self.catalog.list_repositories(
            request.arg("prefix", ""), request.arg("after", ""), request.amount(), search=request.arg("search", "")
        )
        results = [repository_json(r) for r in repos]
        return Response(200, {"pagination": pagination(has_more, results, lambda r: r["id"]), "results": results})

    def create_repository(self, request: Request) -> Response:
        refuse_unimplemented("bare", request.flag("bare"))  # a repository without commits, for refs-restore
        body = fields(
            request.json(),
            {
                "name": STRING,
                "storage_namespace": STRING,
                "default_branch": STRING,
                "sample_data": BOOLEAN,
                "read_only": BOOLEAN,
                "storage_id": STRING,
            },
            required=("name", "storage_namespace"),
        )
        check_repository(body["name"])
        if not STORAGE_NAMESPACE.fullmatch(body["storage_namespace"]):
            raise BadRequest(
                f"validation error: storage_namespace: {body['storage_namespace']!r} is not a valid storage namespace"
            )
        if body.get("storage_id", STORAGE_ID) != STORAGE_ID:
            raise BadRequest("storage id: invalid value: validation error")
        repo = self.catalog.create_repository(
            body["name"], body["storage_namespace"], body.get("default_branch") or "main", body.get("read_only", False)
        )
        if body.get("sample_data", False):
            samplerepo.populate(self.catalog, self.blobs, repo["id"], repo["default_branch"], request.user or USER_ID)
        return Response(201, repository_json(repo))

    def get_repository(self, request: Request) -> Response:
        return Response(200, repository_json(self.catalog.get_repository(request.params["repository"])))

    def delete_repository(self, request: Request) -> Response:
        self.catalog.delete_repository(request.params["repository"], force=request.flag("force"))
        return Response(204)

    def get_repository_metadata(self, request: Request) -> Response:
        self.catalog.get_repository(request.params["repository"])
        return Response(200, {})

    def get_branch_protection_rules(self, request: Request) -> Response:
        rules, etag = self.catalog.get_branch_protection(request.params["repository"])
        return Response(200, rules, headers={"ETag": f'"{etag}"'})

    def set_branch_protection_rules(self, request: Request) -> Response:
        raw = parse_json(b"".join(request.body_chunks(request.limits.max_json_body)), list)
        rules = []
        for rule in raw:
            if not isinstance(rule, dict):
                raise BadRequest("validation error: branch protection rule must be an object")
            pattern = fields(rule, {"pattern": STRING}, required=("pattern",))["pattern"]
            if not pattern:
                raise BadRequest("validation error: pattern: required")
            rules.append({"pattern": pattern})
        self.catalog.set_branch_protection(request.params["repository"], rules, request.headers.get("If-Match"))
        return Response(204)

    # -- branches --------------------------------------------------------------------------------------------
    def list_branches(self, request: Request) -> Response:
        refs, has_more = self.catalog.list_branches(
            request.params["repository"],
            request.arg("prefix", ""),
            request.arg("after", ""),
            request.amount(),
            show_hidden=request.flag("show_hidden"),
        )
        results = [{"id": name, "commit_id": commit_id} for name, commit_id in refs]
        return Response(200, {"pagination": pagination(has_more, results, lambda r: r["id"]), "results": results})

    def create_branch(self, request: Request) -> Response:
        body = fields(
            request.json(),
            {"name": STRING, "source": STRING, "force": BOOLEAN, "hidden": BOOLEAN},
            required=("name", "source"),
        )
        check_branch(body["name"])
        check_ref(body["source"], "source")
        commit_id = self.catalog.create_branch(
            request.params["repository"],
            body["name"],
            body["source"],
            body.get("force", False),
            hidden=body.get("hidden", False),
        )
        return Response(201, commit_id, content_type="text/html")

    def get_branch(self, request: Request) -> Response:
        commit_id = self.catalog.get_branch(request.params["repository"], request.params["branch"])
        return Response(200, {"id": request.params["branch"], "commit_id": commit_id})

    def delete_branch(self, request: Request) -> Response:
        self.catalog.delete_branch(request.params["repository"], request.params["branch"], force=request.flag("force"))
        return Response(204)

    def reset_branch(self, request: Request) -> Response:
        body = fields(request.json(), {"type": STRING, "path": STRING, "force": BOOLEAN}, required=("type",))
        if body["type"] not in RESET_TYPES:
            raise BadRequest(f"validation error: type: must be one of {', '.join(RESET_TYPES)}")
        self.catalog.reset_branch(
            request.params["repository"],
            request.params["branch"],
            body["type"],
            body.get("path"),
            force=body.get("force", False),
        )
        return Response(204)

    def hard_reset_branch(self, request: Request) -> Response:
        ref = request.arg("ref")
        if not ref:
            raise BadRequest("validation error: ref: required")
        check_ref(ref)
        self.catalog.hard_reset_branch(
            request.params["repository"], request.params["branch"], ref, force=request.flag("force")
        )
        return Response(204)

    # -- commits ---------------------------------------------------------------------------------------------
    def commit(self, request: Request) -> Response:
        refuse_unimplemented("source_metarange", bool(request.arg("source_metarange")))
        body = fields(
            request.json(),
            {"message": STRING, "metadata": METADATA, "date": INTEGER, "allow_empty": BOOLEAN, "force": BOOLEAN},
            required=("message",),
        )
        commit = self.catalog.commit(
            request.params["repository"],
            request.params["branch"],
            body["message"],
            request.user or USER_ID,
            body.get("metadata") or {},
            body.get("date"),
            body.get("allow_empty", False),
            force=body.get("force", False),
        )
        return Response(201, commit_json(commit))

    @staticmethod
    def _commit_overrides(body: dict) -> tuple[str | None, dict | None]:
        overrides = body.get("commit_overrides")
        if overrides is None:
            return None, None
        if not isinstance(overrides, dict):
            raise BadRequest("validation error: commit_overrides: must be an object")
        overrides = fields(overrides, {"message": STRING, "metadata": METADATA})
        return overrides.get("message") or None, overrides.get("metadata")

    def revert_branch(self, request: Request) -> Response:
        raw = request.json()
        body = fields(
            raw,
            {"ref": STRING, "parent_number": INTEGER, "force": BOOLEAN, "allow_empty": BOOLEAN},
            required=("ref", "parent_number"),
        )
        check_ref(body["ref"])
        message, metadata = self._commit_overrides(raw)
        self.catalog.revert(
            request.params["repository"],
            request.params["branch"],
            body["ref"],
            body["parent_number"],
            request.user or USER_ID,
            message,
            metadata,
            body.get("allow_empty", False),
            force=body.get("force", False),
        )
        return Response(204)

    def cherry_pick(self, request: Request) -> Response:
        raw = request.json()
        body = fields(raw, {"ref": STRING, "parent_number": INTEGER, "force": BOOLEAN}, required=("ref",))
        check_ref(body["ref"])
        message, metadata = self._commit_overrides(raw)
        commit = self.catalog.cherry_pick(
            request.params["repository"],
            request.params["branch"],
            body["ref"],
            body.get("parent_number"),
            request.user or USER_ID,
            message,
            metadata,
            force=body.get("force", False),
        )
        return Response(201, commit_json(commit))

    def get_commit(self, request: Request) -> Response:
        return Response(
            200, commit_json(self.catalog.get_commit(request.params["repository"], request.params["commit_id"]))
        )

    def log_commits(self, request: Request) -> Response:
        if request.arg("stop_at"):
            check_ref(request.arg("stop_at"), "stop_at")
        objects = request.query.get("objects", [])  # only compared with paths: any string is a valid filter
        prefixes = request.query.get("prefixes", [])
        commits, has_more = self.catalog.log(
            request.params["repository"],
            request.params["ref"],
            after=request.arg("after", ""),
            amount=request.amount(),
            first_parent=request.flag("first_parent"),
            stop_at=request.arg("stop_at") or None,
            limit=request.flag("limit"),
            objects=objects,
            prefixes=prefixes,
            since=parse_date_time(request.arg("since"), "since"),
        )
        results = [commit_json(c) for c in commits]
        return Response(200, {"pagination": pagination(has_more, results, lambda c: c["id"]), "results": results})

    # -- diff and merge --------------------------------------------------------------------------------------
    def diff_branch(self, request: Request) -> Response:
        diffs, has_more = self.catalog.diff_branch(
            request.params["repository"],
            request.params["branch"],
            request.arg("prefix", ""),
            request.arg("after", ""),
            request.amount(),
            request.arg("delimiter", ""),
        )
        # an uncommitted removal is a tombstone, whose size lakeFS reports: 0
        diffs = [dataclasses.replace(d, size=0) if d.type == "removed" else d for d in diffs]
        return self._diff_list(diffs, has_more)

    def diff_refs(self, request: Request) -> Response:
        refuse_unimplemented("include_right_stats", request.flag("include_right_stats"))
        diffs, has_more = self.catalog.diff_refs(
            request.params["repository"],
            request.params["left_ref"],
            request.params["right_ref"],
            request.arg("type", "three_dot"),
            request.arg("prefix", ""),
            request.arg("after", ""),
            request.amount(),
            request.arg("delimiter", ""),
        )
        return self._diff_list(diffs, has_more)

    @staticmethod
    def _diff_list(diffs: list[Difference], has_more: bool) -> Response:
        results = [diff_json(d) for d in diffs]
        return Response(200, {"pagination": pagination(has_more, results, lambda d: d["path"]), "results": results})

    def merge_into_branch(self, request: Request) -> Response:
        body = fields(
            request.json(),
            {
                "message": STRING,
                "metadata": METADATA,
                "strategy": STRING,
                "force": BOOLEAN,
                "allow_empty": BOOLEAN,
                "squash_merge": BOOLEAN,
            },
        )
        reference = self.catalog.merge(
            request.params["repository"],
            request.params["source_ref"],
            request.params["destination_branch"],
            request.user or USER_ID,
            message=body.get("message"),
            metadata=body.get("metadata"),
            strategy=body.get("strategy"),
            allow_empty=body.get("allow_empty", False),
            squash=body.get("squash_merge", False),
            force=body.get("force", False),
        )
        return Response(200, {"reference": reference})

    def find_merge_base(self, request: Request) -> Response:
        repo = request.params["repository"]
        source = self.catalog.resolve(repo, request.params["source_ref"]).commit_id
        destination = self.catalog.resolve(repo, request.params["destination_branch"]).commit_id
        base = self.catalog.merge_base(repo, source, destination)
        if base is None:
            raise NotFound("no merge base found")
        return Response(200, {"source_commit_id": source, "destination_commit_id": destination, "base_commit_id": base})

    # -- objects ---------------------------------------------------------------------------------------------
    def _stats(self, repo: str, entry: Entry, user_metadata: bool = True) -> dict:
        namespace = self.catalog.get_repository(repo)["storage_namespace"].rstrip("/")
        return {
            "path": entry.path,
            "path_type": "object",
            "physical_address": f"{namespace}/data/{entry.address}",
            "checksum": entry.checksum,
            "size_bytes": entry.size,
            "mtime": entry.mtime,
            "metadata": entry.metadata if user_metadata else {},
            "content_type": entry.content_type,
        }

    def upload_object(self, request: Request) -> Response:
        repo, branch = request.params["repository"], request.params["branch"]
        path = check_object_path(request.arg("path"))
        if_none_match = request.headers.get("If-None-Match")
        if if_none_match is not None and if_none_match != "*":
            raise BadRequest('Unsupported value for If-None-Match - Only "*" is supported')
        self.catalog.check_writable(repo, branch, request.flag("force"))  # before reading a refused body
        if if_none_match == "*" and self.catalog.exists(repo, branch, path):
            raise PreconditionFailed("path already exists")  # before reading a body that would be refused
        content_type = request.headers.get("Content-Type") or DEFAULT_CONTENT_TYPE
        chunks = body = request.body_chunks()
        if content_type.split(";")[0].strip().lower() == "multipart/form-data":
            boundary = next(
                (
                    p.split("=", 1)[1].strip('"')
                    for p in content_type.split(";")[1:]
                    if p.strip().lower().startswith("boundary=")
                ),
                None,
            )
            if not boundary:
                raise BadRequest("multipart upload without boundary")
            content_type, chunks = multipart_content(chunks, boundary)
            content_type = content_type or DEFAULT_CONTENT_TYPE
        metadata = {
            key[len(METADATA_HEADER_PREFIX) :].lower(): value
            for key, value in request.headers.items()
            if key.lower().startswith(METADATA_HEADER_PREFIX)
        }
        with self.blobs.referencing():
            blob = self.blobs.write(chunks)
            for _ in body:  # what follows the multipart part (its closing delimiter), so the connection can go on
                pass
            entry = Entry(path, blob.address, blob.checksum, blob.size, int(time.time()), content_type, metadata)
            self.catalog.put_entry(
                repo,
                branch,
                entry,
                if_absent=if_none_match == "*",
                if_match=request.headers.get("If-Match"),
                force=request.flag("force"),
            )
        return Response(201, self._stats(repo, entry))

    @staticmethod
    def _check_no_tombstone(request: Request) -> None:
        """``no_tombstone`` (lakeFS: "without tombstone when possible") is checked only: a deletion here leaves a
        tombstone only where a committed object must be hidden, which is what the flag asks for."""
        request.flag("no_tombstone")

    def delete_object(self, request: Request) -> Response:
        path = check_object_path(request.arg("path"))
        self._check_no_tombstone(request)
        self.catalog.delete_entries(
            request.params["repository"],
            request.params["branch"],
            [path],
            missing_ok=False,
            force=request.flag("force"),
        )
        return Response(204)

    def delete_objects(self, request: Request) -> Response:
        self._check_no_tombstone(request)
        paths = fields(request.json(), {"paths": STRINGS}, required=("paths",))["paths"]
        if len(paths) > MAX_DELETE_PATHS:
            raise BadRequest(f"validation error: paths: at most {MAX_DELETE_PATHS} paths per request")
        for path in paths:
            check_object_path(path)
        try:
            self.catalog.delete_entries(
                request.params["repository"],
                request.params["branch"],
                paths,
                missing_ok=True,
                force=request.flag("force"),  # a query parameter, as in lakeFS' swagger (a body "force" is ignored)
            )
        except Forbidden as refusal:  # lakeFS answers a protected branch or read-only repository per path, in a 200
            return Response(
                200, {"errors": [{"path": p, "status_code": 403, "message": refusal.message} for p in paths]}
            )
        return Response(200, {"errors": []})

    def copy_object(self, request: Request) -> Response:
        repo, branch = request.params["repository"], request.params["branch"]
        dest_path = check_object_path(request.arg("dest_path"), "dest_path")
        body = fields(
            request.json(),
            {"src_path": STRING, "src_ref": STRING, "force": BOOLEAN, "shallow": BOOLEAN},
            required=("src_path",),
        )
        if body.get("shallow", False):
            raise ApiError(NOT_IMPLEMENTED_MESSAGE, NOT_IMPLEMENTED)  # as lakeFS' BuildOptsFromParams
        if body.get("src_ref"):
            check_ref(body["src_ref"], "src_ref")
        with self.blobs.referencing():
            source = self.catalog.get_entry(
                repo, body.get("src_ref") or branch, check_object_path(body["src_path"], "src_path")
            )
            entry = Entry(
                dest_path,
                source.address,
                source.checksum,
                source.size,
                int(time.time()),
                source.content_type,
                source.metadata,
            )
            self.catalog.put_entry(repo, branch, entry, force=body.get("force", False))
        return Response(201, self._stats(repo, entry))

    @staticmethod
    def _refuse_presign(request: Request) -> None:
        """``presign=true`` as lakeFS answers it over a blockstore that cannot presign (the local one): the
        adapter's ErrOperationNotSupported, a 400 (after the object was found)."""
        if request.flag("presign"):
            raise BadRequest(PRESIGN_UNSUPPORTED)

    def stat_object(self, request: Request) -> Response:
        repo = request.params["repository"]
        entry = self.catalog.get_entry(repo, request.params["ref"], check_object_path(request.arg("path")))
        self._refuse_presign(request)
        return Response(200, self._stats(repo, entry, request.flag("user_metadata", True)))

    def get_object(self, request: Request) -> Response:
        entry = self.catalog.get_entry(
            request.params["repository"], request.params["ref"], check_object_path(request.arg("path"))
        )
        self._refuse_presign(request)
        headers = {"ETag": f'"{entry.checksum}"', "Last-Modified": http_date(entry.mtime)}
        if_none_match = request.headers.get("If-None-Match")
        if if_none_match is not None and etag_matches(if_none_match, entry.checksum):
            return Response(304, headers=headers)
        return object_response(
            self.blobs.path(entry.address),
            entry.size,
            entry.content_type,
            headers,
            request.headers.get("Range"),
            RangeNotSatisfiable("Requested Range Not Satisfiable"),
        )

    def update_object_user_metadata(self, request: Request) -> Response:
        path = check_object_path(request.arg("path"))
        raw = request.json()
        body = fields(raw, {"set": METADATA}, required=("set",))
        self.catalog.update_user_metadata(request.params["repository"], request.params["branch"], path, body["set"])
        return Response(201)

    def list_objects(self, request: Request) -> Response:
        repo = request.params["repository"]
        items, has_more = self.catalog.list_entries(
            repo,
            request.params["ref"],
            request.arg("prefix", ""),
            request.arg("after", ""),
            request.amount(),
            request.arg("delimiter", ""),
        )
        user_metadata = request.flag("user_metadata", True)
        if any(not isinstance(item, CommonPrefix) for item in items):
            self._refuse_presign(request)
        results = [
            {"path": item.path, "path_type": "common_prefix", "physical_address": "", "checksum": "", "mtime": 0}
            if isinstance(item, CommonPrefix)
            else self._stats(repo, item, user_metadata)
            for item in items
        ]
        return Response(200, {"pagination": pagination(has_more, results, lambda r: r["path"]), "results": results})

    # -- tags ------------------------------------------------------------------------------------------------
    def list_tags(self, request: Request) -> Response:
        refs, has_more = self.catalog.list_tags(
            request.params["repository"], request.arg("prefix", ""), request.arg("after", ""), request.amount()
        )
        results = [{"id": name, "commit_id": commit_id} for name, commit_id in refs]
        return Response(200, {"pagination": pagination(has_more, results, lambda r: r["id"]), "results": results})

    def create_tag(self, request: Request) -> Response:
        body = fields(request.json(), {"id": STRING, "ref": STRING, "force": BOOLEAN}, required=("id", "ref"))
        check_tag(body["id"])
        check_ref(body["ref"])
        commit_id = self.catalog.create_tag(
            request.params["repository"], body["id"], body["ref"], body.get("force", False)
        )
        return Response(201, {"id": body["id"], "commit_id": commit_id})

    def get_tag(self, request: Request) -> Response:
        commit_id = self.catalog.get_tag(request.params["repository"], request.params["tag"])
        return Response(200, {"id": request.params["tag"], "commit_id": commit_id})

    def delete_tag(self, request: Request) -> Response:
        self.catalog.delete_tag(request.params["repository"], request.params["tag"], request.flag("force"))
        return Response(204)
