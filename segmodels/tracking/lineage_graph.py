"""The lineage chain of a model version, a lakeFS commit or a run, read from MLflow alone (never lakeFS).

Backward, from a model: version -> train run -> model commit -> data commit -> ingest run -> source and code.
Forward, from a data commit: its ingest run(s), every train run on it, every model version made from it and
the infer runs over it. :func:`trace` queries MLflow and returns a plain dict (the ``--json`` document, every
key always present); :func:`format_text` renders that dict and queries nothing.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from typing import Any, Iterable

from mlflow.entities import Run, ViewType
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.store.artifact.utils.models import _parse_model_uri
from mlflow.tracking import MlflowClient

from segmodels.data.sources import redact
from segmodels.tracking import lineage
from segmodels.tracking.models import first_line
from segmodels.tracking.run_ids import RunIdError, find_run

TAG_PARENT_RUN = "mlflow.parentRunId"
PAGE = 1000  # results per search page; every search pages through all of them
MIN_PREFIX = 8
HEX = re.compile(r"[0-9a-f]+")
NOT_FOUND = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")
KEYS = (
    "query",
    "kind",
    "run",
    "model_version",
    "train_run",
    "model",
    "data",
    "ingest_runs",
    "train_runs",
    "versions",
    "register_runs",
    "infer_runs",
    "children",
    "notes",
)


class LineageError(ValueError):
    """Nothing to trace: the message is one line naming the input."""


class _UnknownCommit(LineageError):
    """No run or version records the commit."""


def trace(query: str, client: MlflowClient | None = None) -> dict[str, Any]:
    """The lineage document of ``models:/<name>/<version>``, ``models:/<name>@<alias>``,
    ``lakefs://<repo>/<commit>[/path]`` (a commit id or a unique prefix of >= 8 hex digits) or an MLflow run id."""
    query = query.strip()
    if not query:
        raise LineageError("empty input: pass models:/<name>/<version>, lakefs://<repo>/<commit> or a run id")
    try:
        return _Tracer(client or MlflowClient(), query).trace()
    except MlflowException as error:
        raise LineageError(f"{query}: {first_line(error.message)}") from None


def format_json(doc: dict[str, Any]) -> str:
    """The document as one JSON text (keys in a fixed order)."""
    return json.dumps(doc, indent=2)


WIDTH = 16  # label column


def format_text(doc: dict[str, Any]) -> str:
    """The document as indented plain text, one item a line: the backward chain, then what came from it."""
    lines = [f"lineage of {doc['query']} ({(doc['kind'] or '').replace('_', ' ')})", ""]

    def add(depth: int, label: str, value: Any = "") -> None:
        pad = "  " * depth
        lines.append(f"{pad}{label:<{WIDTH - len(pad)}} {value}".rstrip() if value != "" else f"{pad}{label}")

    def run_head(run: dict) -> str:
        return "  ".join(part for part in (run["run_id"], _text_time(run["start_time"]), run["status"]) if part)

    def reuse(depth: int, run: dict) -> None:
        if run["reused_run_id"]:
            add(depth, "reuse of", run["reused_run_id"])
        if run["reused_by"]:
            add(depth, "reused by", ", ".join(run["reused_by"]))

    def code(depth: int, run: dict) -> None:
        if run["git_commit"]:
            add(depth, "git commit", run["git_commit"] + (" (dirty)" if run["git_dirty"] else ""))
        elif run["git_dirty"] is not None:
            add(depth, "git commit", "(not recorded: not run from a git checkout)")

    run = doc["run"]
    if run and doc["kind"] not in ("train_run", "ingest_run"):
        add(0, f"{run['step'] or 'run'} run", run_head(run))
        code(1, run)
        if run["input_model_uri"]:
            add(1, "model uri", run["input_model_uri"])
        if run["data_commit"] and run["step"] == "infer":
            add(1, "data commit", run["data_commit"])
        if run["registered_model"]:
            add(1, "registered", f"{run['registered_model']}/{run['model_version']} ({run['register_outcome']})")
        _metrics(add, 1, run["metrics"], headline=True)
        if doc["children"]:
            add(1, f"child runs ({len(doc['children'])})")
            for child in doc["children"]:
                add(2, child["step"] or "run", run_head(child))
    version = doc["model_version"]
    if version:
        add(0, "model version", _version_head(version))
        add(1, "source", version["source"])
        _metrics(add, 1, version["metrics"])
    train = doc["train_run"]
    if train:
        add(0, "train run", run_head(train))
        code(1, train)
        if train["config_sha256"]:
            add(1, "config sha256", train["config_sha256"])
        reuse(1, train)
        _metrics(add, 1, train["metrics"], headline=True)
        if train["parent_run_id"]:
            add(1, "parent run", train["parent_run_id"])
    model = doc["model"]
    if model and (model["commit"] or model["uri"]):
        add(0, "model commit", model["commit"] or "(not recorded)")
        if model["uri"]:
            add(1, "uri", model["uri"])
        if model["logged_model_id"]:
            add(1, "logged model", model["logged_model_id"])
    data = doc["data"]
    if data:
        add(0, "data commit", data["commit"])
        if data["repo"]:
            add(1, "repo", data["repo"])
        if data["uri"]:
            add(1, "uri", data["uri"])
    for ingest in doc["ingest_runs"]:
        add(0, "ingest run", run_head(ingest))
        add(1, "source", ingest["source"] or "(not recorded)")
        code(1, ingest)
        reuse(1, ingest)
    if data and not doc["ingest_runs"]:
        add(0, "ingest run", "(none in MLflow)")
    if doc["train_runs"] and doc["kind"] in ("data_commit", "ingest_run", "model_commit"):
        add(0, f"train runs ({len(doc['train_runs'])})")
        for item in doc["train_runs"]:
            add(1, run_head(item) + _metric_tail(item["metrics"], headline=True))
            add(2, "model commit", item["model_commit"] or "(none: no model published)")
            code(2, item)
            reuse(2, item)
    if doc["kind"] != "main_run" or doc["train_run"]:
        add(0, f"model versions ({len(doc['versions'])})")
        for item in doc["versions"]:
            add(
                1,
                _version_head(item)
                + (f"  train run {item['run_id']}" if item["run_id"] else "")
                + _metric_tail(item["metrics"]),
            )
        add(0, f"register runs ({len(doc['register_runs'])})")
        for item in doc["register_runs"]:
            registered = (
                f"  {item['registered_model']}/{item['model_version']} ({item['register_outcome']})"
                if item["registered_model"]
                else "  (nothing registered)"
            )
            add(1, run_head(item) + registered)
            reuse(2, item)
        add(0, f"infer runs ({len(doc['infer_runs'])})")
        for item in doc["infer_runs"]:
            add(1, run_head(item) + f"  {item['input_model_uri']}" + _metric_tail(item["metrics"], headline=True))
            if doc["kind"] != "data_commit" and item["data_commit"]:
                add(2, "data commit", item["data_commit"])
            reuse(2, item)
    for note in doc["notes"]:
        lines.append(f"note: {note}")
    return "\n".join(lines)


def _version_head(version: dict) -> str:
    aliases = " ".join(f"@{alias}" for alias in version["aliases"])
    return f"{version['name']}/{version['version']}" + (f" {aliases}" if aliases else "")


def _headline(metrics: dict[str, float], headline: bool) -> dict[str, float]:
    """The metrics worth a line: a train run's ``best_*`` ones that describe the model (all metrics when it has
    none)."""
    best = {key: value for key, value in metrics.items() if lineage.is_best_metric(key)}
    return best if headline and best else metrics


def _metrics(add, depth: int, metrics: dict[str, float], headline: bool = False) -> None:
    for key, value in _headline(metrics, headline).items():
        add(depth, key, f"{value:.4g}")


def _metric_tail(metrics: dict[str, float], headline: bool = False) -> str:
    shown = _headline(metrics, headline)
    return "".join(f"  {key}={value:.4g}" for key, value in shown.items())


def _text_time(iso: str | None) -> str:
    return iso.replace("T", " ").replace("+00:00", " UTC") if iso else ""


class _Tracer:
    def __init__(self, client: MlflowClient, query: str):
        self.client = client
        self.query = query
        self.doc: dict[str, Any] = {key: None for key in KEYS}
        self.doc.update(
            query=query,
            ingest_runs=[],
            train_runs=[],
            versions=[],
            register_runs=[],
            infer_runs=[],
            children=[],
            notes=[],
        )
        self._experiments: list[str] | None = None
        self._aliases: dict[str, dict[str, str]] = {}

    def trace(self) -> dict[str, Any]:
        if self.query.startswith("models:/"):
            self.from_model_uri(self.query)
        elif self.query.startswith("lakefs://"):
            repo, _, rest = self.query[len("lakefs://") :].partition("/")
            ref, _, path = rest.partition("/")
            if not repo or not ref:
                raise LineageError(f"{self.query}: expected lakefs://<repo>/<commit>[/path]")
            self.from_commit(repo, ref, path)
        else:
            self.from_bare(self.query)
        return self.doc

    # --- entry points -------------------------------------------------------------------------------------

    def from_model_uri(self, uri: str, kind: str = "model_version") -> None:
        try:
            parsed = _parse_model_uri(uri)
        except MlflowException:
            raise LineageError(
                f"{uri}: not a model URI (expected models:/<name>/<version> or models:/<name>@<alias>)"
            ) from None
        if parsed.model_id:
            self.doc["kind"] = self.doc["kind"] or "logged_model"
            try:
                logged = self.client.get_logged_model(parsed.model_id)
            except MlflowException:
                raise LineageError(f"{uri}: no MLflow logged model {parsed.model_id}") from None
            return self.model_chain(self.get_run(logged.source_run_id), None)
        if parsed.stage:
            raise LineageError(
                f"{uri}: stages are not traced; pass a version (models:/{parsed.name}/<n>) "
                f"or an alias (models:/{parsed.name}@<alias>)"
            )
        self.doc["kind"] = self.doc["kind"] or kind
        version = self.get_version(uri, parsed.name, parsed.version, parsed.alias)
        self.version_chain(version)

    def from_commit(self, repo: str | None, ref: str, path: str = "") -> None:
        where = f"lakefs://{repo}/{ref}" if repo else ref
        ref = ref.lower()
        if not HEX.fullmatch(ref) or len(ref) > 64:
            raise LineageError(
                f"{where}: {ref!r} is not a commit id; a branch or tag cannot be resolved without "
                f"lakeFS (segmodels lineage reads MLflow only): pass the commit id"
            )
        if len(ref) < MIN_PREFIX:
            raise LineageError(f"{where}: a commit id prefix needs at least {MIN_PREFIX} hex digits")
        data_commits = self.commits(lineage.TAG_DATA_COMMIT, ref, repo)
        model_commits = self.commits(lineage.TAG_MODEL_COMMIT, ref, repo)
        found = data_commits | model_commits
        if not found:
            raise _UnknownCommit(
                f"{where}: no MLflow run or model version records this data or model commit in "
                f"{_store()} (a branch or tag name cannot be resolved without lakeFS: pass the "
                f"commit id)"
            )
        if len(found) > 1:
            raise LineageError(f"{where}: ambiguous commit prefix, it matches {', '.join(sorted(found))}")
        commit = found.pop()
        runs = (
            [
                run
                for run in self.search_runs(_step("train") + f" and tags.`{lineage.TAG_MODEL_COMMIT}` = {_q(commit)}")
                if _in_repo(run.data.tags, repo)
            ]
            if commit in model_commits
            else []
        )
        runs = [run for run in runs if lineage.TAG_REUSED_RUN not in run.data.tags] or runs  # not stand-ins
        named = [run for run in runs if run.info.run_id == path.strip("/").rsplit("/", 1)[-1]]
        if commit in model_commits and (commit not in data_commits or named):
            self.doc["kind"] = self.doc["kind"] or "model_commit"
            chosen = named or runs[-1:]
            if chosen and len(runs) > 1:
                self.doc["train_runs"] = [self.run_dict(run) for run in runs]
                self.note(f"{len(runs)} train runs record model commit {commit}; tracing {chosen[0].info.run_id}")
            if chosen:
                return self.model_chain(chosen[0], None)
            versions = self.search_versions(f"tags.`{lineage.TAG_MODEL_COMMIT}` = {_q(commit)}") or []
            if versions:
                return self.version_chain(versions[-1])
            raise LineageError(f"{where}: model commit {commit} has no train run in MLflow")
        self.doc["kind"] = self.doc["kind"] or "data_commit"
        self.data_forward(commit, repo)

    def from_bare(self, text: str) -> None:
        try:
            run = find_run(self.client, text)  # a run id or a unique prefix of one, as report.md shows them
        except RunIdError as error:
            raise LineageError(str(error)) from None
        if run is None:
            if HEX.fullmatch(text.lower()) and MIN_PREFIX <= len(text) <= 64:
                try:
                    return self.from_commit(None, text)
                except _UnknownCommit:
                    pass
            raise LineageError(
                f"{text}: no MLflow run with this id in {_store()}, and not a models:/ or "
                f"lakefs:// URI or a recorded commit id"
            )
        step = run.data.tags.get(lineage.TAG_STEP)
        self.doc["kind"] = f"{step}_run" if step else "run"
        self.doc["run"] = self.run_dict(run)
        if step == "train":
            self.model_chain(self.original(run), None)
        elif step == "ingest":
            self.doc["ingest_runs"] = [self.doc["run"]]
            commit = run.data.tags.get(lineage.TAG_DATA_COMMIT)
            if not commit:
                raise LineageError(
                    f"{text}: ingest run recorded no data commit ({lineage.TAG_DATA_COMMIT}); did it fail?"
                )
            self.data_forward(commit, run.data.tags.get(lineage.TAG_LAKEFS_REPO))
        elif step == "register":
            tags = run.data.tags
            name, number = tags.get(lineage.TAG_MODEL_NAME), tags.get(lineage.TAG_MODEL_VERSION)
            version = self.find_version(name, number) if name and number else None
            if version is not None:
                self.version_chain(version)
            elif tags.get(lineage.TAG_TRAIN_RUN):
                self.note("the register run registered no version (refused, or the version was deleted)")
                self.model_chain(self.get_run(tags[lineage.TAG_TRAIN_RUN]), None)
            else:
                raise LineageError(f"{text}: register run names no model version and no train run")
        elif step == "infer":
            self.infer_chain(run)
        elif step == "main":
            children = self.search_runs(f"tags.`{TAG_PARENT_RUN}` = {_q(run.info.run_id)}")
            self.doc["children"] = [self.run_dict(child) for child in children]
            trains = [child for child in children if child.data.tags.get(lineage.TAG_STEP) == "train"]
            if trains:
                self.model_chain(self.original(trains[-1]), None)
            else:
                self.note("the main run has no train child run")
        else:
            raise LineageError(
                f"{text}: run is no segmodels step (tag {lineage.TAG_STEP} is "
                f"{step!r}); expected ingest, train, register, infer or main"
            )

    # --- chains -------------------------------------------------------------------------------------------

    def version_chain(self, version: ModelVersion) -> None:
        """Backward from a model version: its train run (or, without one, its own lineage tags)."""
        self.doc["model_version"] = self.version_dict(version)
        train_id = version.run_id or version.tags.get(lineage.TAG_TRAIN_RUN)
        run = self.find_run(train_id) if train_id else None
        if run is None:
            self.note(
                f"train run {train_id} of version {version.name}/{version.version} is not in MLflow"
                if train_id
                else f"version {version.name}/{version.version} names no train run"
            )
        self.model_chain(run, version)

    def model_chain(self, run: Run | None, version: ModelVersion | None) -> None:
        """Backward from a train run: model commit, data commit, ingest run; and the versions, register and
        infer runs that came from it."""
        tags = dict(version.tags) if version is not None else {}
        if run is not None:
            tags.update(run.data.tags)
            self.doc["train_run"] = self.run_dict(run)
        self.doc["model"] = {
            "repo": tags.get(lineage.TAG_LAKEFS_REPO),
            "commit": tags.get(lineage.TAG_MODEL_COMMIT),
            "uri": tags.get(lineage.TAG_MODEL_URI) or (version.source if version else None),
            "logged_model_id": tags.get(lineage.TAG_LOGGED_MODEL_ID) or getattr(version, "model_id", None),
        }
        if tags.get(lineage.TAG_DATA_COMMIT):
            self.data_backward(
                tags[lineage.TAG_DATA_COMMIT], tags.get(lineage.TAG_LAKEFS_REPO), tags.get(lineage.TAG_DATA_URI)
            )
        else:
            self.note("no data commit recorded for this model")
        train_id = run.info.run_id if run is not None else (version.run_id if version else None)
        if not train_id:
            if version is not None:
                self.doc["versions"] = [self.version_dict(version)]
            return
        reuses = self.reuses_of([train_id])
        if self.doc["train_run"] is not None:
            self.doc["train_run"]["reused_by"] = [reuse.info.run_id for reuse in reuses]
        family = [train_id, *(reuse.info.run_id for reuse in reuses)]  # a version may name a stand-in
        versions = self.versions_made_by(family)
        if version is not None:
            versions[(version.name, str(version.version))] = version
        self.doc["versions"] = [self.version_dict(v) for v in _sorted_versions(versions.values())]
        self.doc["register_runs"] = self.runs_with_reuses(self.register_runs_of(family))
        used = {f"models:/{v.name}/{v.version}" for v in versions.values()} | {v.source for v in versions.values()}
        used |= {uri for uri in (self.doc["model"]["uri"], *(f"runs:/{run_id}" for run_id in family)) if uri}
        if self.doc["model"]["logged_model_id"]:
            used.add(f"models:/{self.doc['model']['logged_model_id']}")
        infer = {}
        for uri in sorted(used):
            clause = f"LIKE {_q(uri + '%')}" if uri.startswith("runs:/") else f"= {_q(uri)}"
            for found in self.search_runs(_step("infer") + f" and params.model_uri {clause}"):
                infer[found.info.run_id] = found
        for version in versions.values():  # the version an infer run resolved its model URI to
            for found in self.search_runs(
                _step("infer") + f" and tags.`{lineage.TAG_MODEL_NAME}` = "
                f"{_q(version.name)} and tags.`{lineage.TAG_MODEL_VERSION}` = "
                f"{_q(str(version.version))}"
            ):
                infer[found.info.run_id] = found
        self.doc["infer_runs"] = self.runs_with_reuses(sorted(infer.values(), key=_started))
        for name in sorted({v.name for v in versions.values()}):
            by_alias = [
                found
                for found in self.search_runs(_step("infer") + f" and params.model_uri LIKE {_q(f'models:/{name}@%')}")
                if lineage.TAG_MODEL_VERSION not in found.data.tags
            ]
            if by_alias:
                self.note(
                    f"{len(by_alias)} infer run(s) given models:/{name}@<alias> are not listed: "
                    f"which version the alias named then is not recorded"
                )

    def infer_chain(self, run: Run) -> None:
        """Backward from an infer run: the model it was given, traced as far as its URI allows."""
        uri = run.data.params.get("model_uri", "")
        tags = run.data.tags
        if lineage.TAG_MODEL_VERSION in tags:  # resolved when the run started
            uri = f"models:/{tags[lineage.TAG_MODEL_NAME]}/{tags[lineage.TAG_MODEL_VERSION]}"
        if uri.startswith("models:/"):
            if "@" in uri:
                self.note(
                    f"the infer run was given {uri}: the alias is resolved now, it may have named another version then"
                )
            try:
                self.from_model_uri(uri, kind="infer_run")
                return
            except LineageError as error:
                self.note(f"model not traced: {error}")
        elif uri.startswith("runs:/"):
            found = self.find_run(uri[len("runs:/") :].split("/")[0])
            if found is not None:
                return self.model_chain(found, None)
            self.note(f"model not traced: no MLflow run for {uri}")
        elif uri.startswith("lakefs://"):
            parts = uri[len("lakefs://") :].split("/")
            if len(parts) >= 2 and HEX.fullmatch(parts[1]):
                try:
                    return self.from_commit(parts[0], parts[1], "/".join(parts[2:]))
                except LineageError as error:
                    self.note(f"model not traced: {error}")
        else:
            self.note(f"model not traced: model_uri {uri!r}")
        commit = run.data.tags.get(lineage.TAG_DATA_COMMIT)
        if commit:
            self.data_backward(
                commit, run.data.tags.get(lineage.TAG_LAKEFS_REPO), run.data.tags.get(lineage.TAG_DATA_URI)
            )

    def data_backward(self, commit: str, repo: str | None, uri: str | None) -> None:
        ingests = [
            run
            for run in self.search_runs(_step("ingest") + f" and tags.`{lineage.TAG_DATA_COMMIT}` = {_q(commit)}")
            if _in_repo(run.data.tags, repo)
        ]
        self.doc["ingest_runs"] = self.runs_with_reuses(ingests)
        uri = uri or next((run.data.tags.get(lineage.TAG_DATA_URI) for run in ingests), None)
        uri = uri or (f"lakefs://{repo}/{commit}" if repo else None)
        self.doc["data"] = {"repo": repo, "commit": commit, "uri": uri}
        if not ingests:
            self.note(f"no ingest run records data commit {commit} (ingested elsewhere, or the run was deleted)")

    def data_forward(self, commit: str, repo: str | None) -> None:
        """Forward from a data commit: ingest, train and infer runs on it, and the versions made from it."""
        by_commit = f" and tags.`{lineage.TAG_DATA_COMMIT}` = {_q(commit)}"
        trains = [run for run in self.search_runs(_step("train") + by_commit) if _in_repo(run.data.tags, repo)]
        repo = repo or next((run.data.tags.get(lineage.TAG_LAKEFS_REPO) for run in trains), None)
        self.data_backward(commit, repo, next((run.data.tags.get(lineage.TAG_DATA_URI) for run in trains), None))
        self.doc["train_runs"] = self.runs_with_reuses(trains)
        family = [run.info.run_id for run in trains]
        versions = self.versions_made_by(family)
        tagged = self.search_versions(f"tags.`{lineage.TAG_DATA_COMMIT}` = {_q(commit)}")
        if tagged is None:
            self.note("this MLflow store does not filter model versions by tag: versions matched by train run")
        versions.update({(v.name, str(v.version)): v for v in tagged or [] if _in_repo(v.tags, repo)})
        self.doc["versions"] = [self.version_dict(v) for v in _sorted_versions(versions.values())]
        registers = {run.info.run_id: run for run in self.register_runs_of(family)}
        registers.update(
            {
                run.info.run_id: run
                for run in self.search_runs(_step("register") + by_commit)
                if _in_repo(run.data.tags, repo)
            }
        )
        self.doc["register_runs"] = self.runs_with_reuses(sorted(registers.values(), key=_started))
        self.doc["infer_runs"] = self.runs_with_reuses(
            [run for run in self.search_runs(_step("infer") + by_commit) if _in_repo(run.data.tags, repo)]
        )

    def original(self, run: Run) -> Run:
        """The run that did the work: ``run`` itself, or the run a reused step (a stand-in) names."""
        origin = run.data.tags.get(lineage.TAG_REUSED_RUN)
        found = self.find_run(origin) if origin else None
        if origin and found is None:
            self.note(f"run {run.info.run_id} reused run {origin}, which is not in MLflow")
        if found is None:
            return run
        self.note(
            f"run {run.info.run_id} is a reuse of train run {origin} (main reused it: same inputs, code "
            f"and config); tracing {origin}"
        )
        return found

    def runs_with_reuses(self, runs: list[Run]) -> list[dict[str, Any]]:
        """The runs that did the work, each with the stand-ins of reused steps that name it (``reused_by``); a
        stand-in whose original is not among them stays listed, naming it (``reused_run_id``)."""
        items = {run.info.run_id: self.run_dict(run) for run in runs if lineage.TAG_REUSED_RUN not in run.data.tags}
        for run in runs:
            origin = run.data.tags.get(lineage.TAG_REUSED_RUN)
            if origin in items:
                items[origin]["reused_by"].append(run.info.run_id)
            elif origin:
                items[run.info.run_id] = self.run_dict(run)
        return sorted(items.values(), key=lambda item: item["start_time"] or "")

    # --- MLflow queries -----------------------------------------------------------------------------------

    def reuses_of(self, run_ids: list[str]) -> list[Run]:
        """The stand-in runs of reused steps that name one of ``run_ids`` as the run that did the work."""
        return [
            reuse for run_id in run_ids for reuse in self.search_runs(f"tags.`{lineage.TAG_REUSED_RUN}` = {_q(run_id)}")
        ]

    def versions_made_by(self, run_ids: list[str]) -> dict[tuple[str, str], ModelVersion]:
        """The model versions registered from ``run_ids`` (by run, or by their train run tag)."""
        versions = {(v.name, str(v.version)): v for v in self.versions_of_runs(run_ids)}
        for run_id in run_ids:
            versions.update(
                {
                    (v.name, str(v.version)): v
                    for v in self.search_versions(f"tags.`{lineage.TAG_TRAIN_RUN}` = {_q(run_id)}") or []
                }
            )
        return versions

    def register_runs_of(self, run_ids: list[str]) -> list[Run]:
        """The register runs given one of ``run_ids`` as the candidate, oldest first."""
        found = {
            run.info.run_id: run
            for run_id in run_ids
            for run in self.search_runs(_step("register") + f" and tags.`{lineage.TAG_TRAIN_RUN}` = {_q(run_id)}")
        }
        return sorted(found.values(), key=_started)

    def experiment_ids(self) -> list[str]:
        if self._experiments is None:
            ids, token = [], None
            while True:
                page = self.client.search_experiments(
                    view_type=ViewType.ACTIVE_ONLY, max_results=PAGE, page_token=token
                )
                ids += [experiment.experiment_id for experiment in page]
                token = page.token
                if not token:
                    break
            self._experiments = ids
        return self._experiments

    def search_runs(self, filter_string: str) -> list[Run]:
        """Every active run (all experiments, every page) matching the filter, oldest first."""
        experiments = self.experiment_ids()
        runs: list[Run] = []
        token = None
        while experiments:
            page = self.client.search_runs(
                experiments, filter_string, max_results=PAGE, page_token=token, order_by=["attributes.start_time ASC"]
            )
            runs += page
            token = page.token
            if not token:
                break
        return runs

    def search_versions(self, filter_string: str) -> list[ModelVersion] | None:
        """Every model version matching the filter (every page); None when the store refuses the filter."""
        versions: list[ModelVersion] = []
        token = None
        try:
            while True:
                page = self.client.search_model_versions(filter_string, max_results=PAGE, page_token=token)
                versions += page
                token = page.token
                if not token:
                    return versions
        except MlflowException as error:
            if error.error_code == "INVALID_PARAMETER_VALUE":
                return None
            raise

    def versions_of_runs(self, run_ids: list[str]) -> list[ModelVersion]:
        found: list[ModelVersion] = []
        for start in range(0, len(run_ids), 100):
            chunk = ", ".join(_q(run_id) for run_id in run_ids[start : start + 100])
            found += self.search_versions(f"run_id IN ({chunk})") or []
        return found

    def commits(self, tag: str, ref: str, repo: str | None) -> set[str]:
        """The full commit ids recorded under ``tag`` (runs and versions) equal to, or starting with, ``ref``."""
        clause = f"tags.`{tag}` = {_q(ref)}" if len(ref) == 64 else f"tags.`{tag}` LIKE {_q(ref + '%')}"
        found = {run.data.tags[tag] for run in self.search_runs(clause) if _in_repo(run.data.tags, repo)}
        found |= {v.tags[tag] for v in self.search_versions(clause) or [] if _in_repo(v.tags, repo)}
        return found

    def find_run(self, run_id: str) -> Run | None:
        try:
            return self.client.get_run(run_id)
        except MlflowException as error:
            if error.error_code in NOT_FOUND:
                return None
            raise

    def get_run(self, run_id: str | None) -> Run:
        run = self.find_run(run_id) if run_id else None
        if run is None:
            raise LineageError(f"{self.query}: no MLflow run {run_id!r}")
        return run

    def find_version(self, name: str, number: str) -> ModelVersion | None:
        try:
            return self.client.get_model_version(name, number)
        except MlflowException as error:
            if error.error_code in NOT_FOUND:
                return None
            raise

    def get_version(self, uri: str, name: str, number: str | None, alias: str | None) -> ModelVersion:
        try:
            self.client.get_registered_model(name)
        except MlflowException as error:
            if error.error_code in NOT_FOUND:
                raise LineageError(f"{uri}: no registered model {name!r}") from None
            raise
        if alias:
            if alias not in self.aliases(name):
                raise LineageError(f"{uri}: registered model {name!r} has no alias @{alias}")
            return self.client.get_model_version_by_alias(name, alias)
        if number is None:  # models:/<name>/latest or models:/<name>
            newest = sorted(self.search_versions(f"name = {_q(name)}") or [], key=lambda v: int(v.version))
            if not newest:
                raise LineageError(f"{uri}: registered model {name!r} has no versions")
            return newest[-1]
        version = self.find_version(name, number)
        if version is None:
            raise LineageError(f"{uri}: registered model {name!r} has no version {number}")
        return version

    def aliases(self, name: str) -> dict[str, str]:
        """``{alias: version}`` of a registered model (searched versions carry no aliases)."""
        if name not in self._aliases:
            self._aliases[name] = {
                alias: str(number) for alias, number in self.client.get_registered_model(name).aliases.items()
            }
        return self._aliases[name]

    # --- documents ----------------------------------------------------------------------------------------

    def run_dict(self, run: Run) -> dict[str, Any]:
        tags, params = run.data.tags, run.data.params
        source = params.get("source")
        return {
            "run_id": run.info.run_id,
            "run_name": run.info.run_name,
            "experiment_id": run.info.experiment_id,
            "step": tags.get(lineage.TAG_STEP),
            "status": run.info.status,
            "start_time": _time(run.info.start_time),
            "parent_run_id": tags.get(TAG_PARENT_RUN),
            "git_commit": tags.get(lineage.TAG_GIT_COMMIT),
            "git_dirty": _bool(tags.get(lineage.TAG_GIT_DIRTY)),
            "config_sha256": tags.get(lineage.TAG_CONFIG_HASH),
            "source": redact(source) if source is not None else None,
            "repo": tags.get(lineage.TAG_LAKEFS_REPO),
            "data_commit": tags.get(lineage.TAG_DATA_COMMIT),
            "data_uri": tags.get(lineage.TAG_DATA_URI),
            "model_commit": tags.get(lineage.TAG_MODEL_COMMIT),
            "model_uri": tags.get(lineage.TAG_MODEL_URI),
            "logged_model_id": tags.get(lineage.TAG_LOGGED_MODEL_ID),
            "input_model_uri": tags.get(lineage.TAG_INPUT_MODEL_URI) or params.get("model_uri"),
            "train_run_id": tags.get(lineage.TAG_TRAIN_RUN),
            "registered_model": tags.get(lineage.TAG_MODEL_NAME),
            "model_version": tags.get(lineage.TAG_MODEL_VERSION),
            "register_outcome": tags.get(lineage.TAG_REGISTER_OUTCOME),
            "reused_run_id": tags.get(lineage.TAG_REUSED_RUN),
            "reused_by": [],
            "metrics": dict(sorted(run.data.metrics.items())),
        }

    def version_dict(self, version: ModelVersion) -> dict[str, Any]:
        tags = version.tags
        return {
            "name": version.name,
            "version": str(version.version),
            "uri": f"models:/{version.name}/{version.version}",
            "aliases": sorted(
                alias for alias, number in self.aliases(version.name).items() if number == str(version.version)
            ),
            "status": version.status,
            "created": _time(version.creation_timestamp),
            "source": version.source,
            "run_id": version.run_id,
            "logged_model_id": getattr(version, "model_id", None),
            "repo": tags.get(lineage.TAG_LAKEFS_REPO),
            "data_commit": tags.get(lineage.TAG_DATA_COMMIT),
            "model_commit": tags.get(lineage.TAG_MODEL_COMMIT),
            "git_commit": tags.get(lineage.TAG_GIT_COMMIT),
            "metrics": {key: float(value) for key, value in sorted(tags.items()) if _is_metric_tag(key, value)},
        }

    def note(self, text: str) -> None:
        if text and text not in self.doc["notes"]:
            self.doc["notes"].append(text)


def _store() -> str:
    """The tracking store searched, as messages name it (runs recorded elsewhere are not in it)."""
    return f"the MLflow store {lineage.tracking_store()}"


def _q(value: str) -> str:
    """A quoted value for an MLflow filter string."""
    if "'" in value:
        raise LineageError(f"{value}: a quote cannot be searched for in MLflow")
    return f"'{value}'"


def _step(step: str) -> str:
    return f"tags.`{lineage.TAG_STEP}` = '{step}'"


def _in_repo(tags: dict[str, str], repo: str | None) -> bool:
    return repo is None or tags.get(lineage.TAG_LAKEFS_REPO) in (None, repo)


def _started(run: Run) -> int:
    return run.info.start_time or 0


def _sorted_versions(versions: Iterable[ModelVersion]) -> list[ModelVersion]:
    return sorted(versions, key=lambda v: (v.name, int(v.version)))


def _is_metric_tag(key: str, value: str) -> bool:
    if key.split(".")[0] in ("lakefs", "segmodels", "mlflow"):
        return False
    try:
        float(value)
    except ValueError:
        return False
    return True


def _time(millis: int | None) -> str | None:
    return datetime.fromtimestamp(millis / 1000, timezone.utc).isoformat(timespec="seconds") if millis else None


def _bool(text: str | None) -> bool | None:
    return None if text is None else text.lower() == "true"
