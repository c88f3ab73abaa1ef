"""The pages of ``segmodels ui``: repositories and data commits with the runs and models that used them, a data
commit's card and image grid, a sample at full size, the diff of two data commits, a run or model version with
its predictions, thumbnails. Every repository, ref and path from a URL is validated as lakeFS validates it."""

from __future__ import annotations

import csv
import io
import re
import tempfile
from pathlib import Path, PurePosixPath
from urllib.parse import urlencode, urlsplit, urlunsplit

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from mlflow.exceptions import MlflowException

from segmodels.compare import (
    DEFAULT_DATA_PREFIX,
    CompareError,
    class_shares,
    compare,
    format_html,
    group_data_diff,
    read_dataset_info,
    resolve,
)
from segmodels.data.layout import SPLITS
from segmodels.redaction import redact_text, redact_value
from segmodels.tracking import lineage
from segmodels.ui.app import templates
from segmodels.ui.lakefs_reader import MAX_PAGE, BadInput, NotFound, valid_path, valid_ref, valid_repository
from segmodels.ui.thumbnails import THUMB_PX
from segmodels.versioning import LakeFSUri

router = APIRouter()
REPOSITORY_PAGE = 100
LOG_PAGE = 20
GRID_PAGE = 48
MAX_GRID_PAGE = 200
SCAN_PAGES = 10  # pages of images read at most to fill one page filtered by class
DIFF_PAGE = 500
PREDICTIONS_PAGE = 24
COMMIT_ID = re.compile(r"[0-9a-f]{64}")


def _state(request: Request):
    return request.app.state


def _page(request: Request, template: str, **context) -> HTMLResponse:
    return templates.TemplateResponse(request, template, context)


def dataset_info(request: Request, repo: str, commit: str, prefix: str):
    """The data set description at a commit id (cached: commits do not change)."""
    key = (repo, commit, prefix)
    datasets = _state(request).datasets
    if key not in datasets:
        if len(datasets) > 256:
            datasets.clear()
        datasets[key] = read_dataset_info(_state(request).reader, repo, commit, prefix)
    return datasets[key]


def mlflow_ui_url(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    """A link into the MLflow UI when the tracking store is a server (its URL without user info), else empty."""
    parts = urlsplit(tracking_uri)
    if parts.scheme not in ("http", "https"):
        return ""
    base = urlunsplit((parts.scheme, parts.hostname + (f":{parts.port}" if parts.port else ""), parts.path, "", ""))
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def _quote(value: str) -> str:
    if "'" in value:
        raise BadInput(f"{value[:80]}: a quote cannot be searched for in MLflow")
    return f"'{value}'"


def search_runs(client, where: str, max_results: int) -> list:
    """Runs of every active experiment (the first 1000) matching ``where``, newest first."""
    experiments = [e.experiment_id for e in client.search_experiments(max_results=1000)]
    return (
        list(client.search_runs(experiments, where, max_results=max_results, order_by=["attributes.start_time DESC"]))
        if experiments
        else []
    )


def used_by(request: Request, commit: str) -> tuple[list, list]:
    """The runs that recorded ``commit`` as their data commit, and the model versions trained on it."""
    client = _state(request).client
    where = f"tags.`{lineage.TAG_DATA_COMMIT}` = {_quote(commit)}"
    try:
        runs = search_runs(client, where, max_results=50)
        versions = list(client.search_model_versions(where, max_results=50))
    except MlflowException:
        return [], []
    return (
        [
            {
                "id": run.info.run_id,
                "step": run.data.tags.get(lineage.TAG_STEP, ""),
                "name": run.info.run_name,
                "status": run.info.status,
                "link": mlflow_ui_url(client.tracking_uri, run.info.experiment_id, run.info.run_id),
            }
            for run in runs
        ],
        [
            {
                "name": version.name,
                "version": version.version,  # a search leaves aliases out
                "aliases": list(client.get_model_version(version.name, version.version).aliases),
            }
            for version in versions
        ],
    )


# -- repositories and the commit log -----------------------------------------------------------------------------


@router.get("/", response_class=HTMLResponse)
def repositories(
    request: Request, after: str = "", prefix: str = "", amount: int = Query(REPOSITORY_PAGE, ge=1, le=MAX_PAGE)
):
    """The repositories, ``amount`` at a time; ``prefix`` keeps those whose name starts with it (as lakeFS' UI finds
    one among many)."""
    page = _state(request).reader.repositories(after=after, prefix=prefix, amount=amount)
    more = {"prefix": prefix, "after": page.next_after} | ({"amount": amount} if amount != REPOSITORY_PAGE else {})
    more_query = urlencode(more) if page.next_after else ""
    return _page(request, "repositories.html", repositories=page.items, prefix=prefix, more_query=more_query)


@router.get("/repos/{repo}", response_class=HTMLResponse)
def repository(request: Request, repo: str, ref: str = "", after: str = ""):
    reader = _state(request).reader
    info = reader.repository(repo)
    ref = valid_ref(ref) if ref else info.default_branch
    log = reader.log(repo, ref, after=after, amount=LOG_PAGE)
    commits = []
    for commit in log.items:
        runs, versions = used_by(request, commit.id)
        commits.append(
            {
                "id": commit.id,
                "message": redact_text(commit.message),
                "metadata": redact_value(
                    {k: v for k, v in (commit.metadata or {}).items() if not k.startswith("segmodels.request")}
                ),
                "committer": commit.committer,
                "date": commit.creation_date,
                "runs": runs,
                "parent": commit.parents[0] if commit.parents else "",
                "versions": versions,
            }
        )
    return _page(
        request,
        "repository.html",
        repo=repo,
        ref=ref,
        branches=reader.branches(repo).items,
        tags=reader.tags(repo).items,
        commits=commits,
        next_after=log.next_after,
    )


# -- a data commit: card and grid ---------------------------------------------------------------------------------


def _prefix(prefix: str) -> str:
    return valid_path(prefix.strip("/") or DEFAULT_DATA_PREFIX).strip("/")


@router.get("/repos/{repo}/commits/{ref}", response_class=HTMLResponse)
def data_commit(
    request: Request,
    repo: str,
    ref: str,
    prefix: str = DEFAULT_DATA_PREFIX,
    split: str = "",
    cls: int | None = None,
    after: str = "",
    amount: int = Query(GRID_PAGE, ge=1, le=MAX_GRID_PAGE),
):
    reader, cache = _state(request).reader, _state(request).cache
    commit = reader.commit(repo, ref)
    prefix = _prefix(prefix)
    info = dataset_info(request, repo, commit.id, prefix)
    if info is None:
        raise NotFound(f"{repo}/{commit.id[:12]}/{prefix}: no dataset.yaml (not a data set)")
    splits = [name for name in SPLITS if info.splits.get(name)] or list(SPLITS)
    split = split if split in splits else splits[0]
    samples, scanned, next_after = _grid_samples(reader, cache, repo, commit.id, prefix, split, cls, after, amount)
    masks = _mask_checksums(reader, repo, commit.id, prefix, split, samples)
    for item in samples:
        item["mask_checksum"] = masks.get(item["mask"], "")
    stats = info.class_stats or {}
    shares = class_shares(info)
    classes = [
        {
            "id": spec.id,
            "name": spec.name,
            "color": "#{:02x}{:02x}{:02x}".format(*spec.color),
            "share": shares.get(spec.name),
            "split_shares": {name: (s.pixels[spec.id] / max(1, sum(s.pixels))) for name, s in stats.items()},
        }
        for spec in info.classes
    ]
    return _page(
        request,
        "commit.html",
        repo=repo,
        ref=ref,
        commit=commit,
        prefix=prefix,
        info=info,
        classes=classes,
        splits=splits,
        split=split,
        cls=cls,
        samples=samples,
        next_after=next_after,
        amount=amount,
        scanned=scanned,
        message=redact_text(commit.message),
        metadata=redact_value(dict(commit.metadata or {})),
        thumb_px=THUMB_PX,
    )


def _grid_samples(
    reader, cache, repo: str, commit: str, prefix: str, split: str, cls: int | None, after: str, amount: int
) -> tuple[list[dict], int, str]:
    """Up to ``amount`` samples of ``split`` after ``after`` (those holding class ``cls`` when given, looked for in
    at most SCAN_PAGES listing pages), the images read, and the ``after`` of the next page ('' at the end)."""
    samples, scanned, cursor = [], 0, after
    for _ in range(1 if cls is None else SCAN_PAGES):
        page = reader.objects(
            repo,
            commit,
            f"{prefix}/images/{split}/",
            after=cursor,
            amount=amount if cls is not None else amount - len(samples),
        )
        for index, obj in enumerate(page.items):
            scanned += 1
            cursor = obj.path
            name = PurePosixPath(obj.path).stem
            mask_path = f"{prefix}/masks/{split}/{name}.png"
            if cls is not None:
                checksum = reader.stat(repo, commit, mask_path).checksum
                if cls not in cache.classes_present(checksum, lambda path=mask_path: reader.read(repo, commit, path)):
                    continue
            samples.append({"name": name, "path": obj.path, "checksum": obj.checksum, "mask": mask_path})
            if len(samples) == amount:
                more = index + 1 < len(page.items) or bool(page.next_after)
                return samples, scanned, cursor if more else ""
        if not page.next_after:
            return samples, scanned, ""
    return samples, scanned, cursor  # the scan stopped short: the next page goes on from here


def _mask_checksums(reader, repo: str, commit: str, prefix: str, split: str, samples: list[dict]) -> dict[str, str]:
    """Checksums of the samples' masks from one listing page (masks sort as their images do), so their thumbnails
    are served from the cache without asking lakeFS; a mask the page misses is looked up when its thumbnail is."""
    if not samples:
        return {}
    first = PurePosixPath(samples[0]["path"]).stem
    page = reader.objects(
        repo, commit, f"{prefix}/masks/{split}/", amount=len(samples) + 1, after=f"{prefix}/masks/{split}/{first}"
    )  # the stem sorts just before its mask
    wanted = {item["mask"] for item in samples}
    return {obj.path: obj.checksum for obj in page.items if obj.path in wanted}


@router.get("/repos/{repo}/commits/{ref}/sample", response_class=HTMLResponse)
def sample(request: Request, repo: str, ref: str, path: str, prefix: str = DEFAULT_DATA_PREFIX):
    reader = _state(request).reader
    commit = reader.commit(repo, ref)
    path, prefix = valid_path(path), _prefix(prefix)
    parts = PurePosixPath(path).relative_to(prefix).parts if path.startswith(prefix + "/") else ()
    if len(parts) != 3 or parts[0] != "images":
        raise BadInput(f"path {path[:80]}: not an image of the data set at {prefix}/images/<split>/")
    image = reader.stat(repo, commit.id, path)
    mask = f"{prefix}/masks/{parts[1]}/{PurePosixPath(path).stem}.png"
    info = dataset_info(request, repo, commit.id, prefix)
    return _page(
        request,
        "sample.html",
        repo=repo,
        commit=commit,
        prefix=prefix,
        path=path,
        image=image,
        mask=mask,
        info=info,
        classes=[{"name": c.name, "color": "#{:02x}{:02x}{:02x}".format(*c.color)} for c in info.classes]
        if info
        else [],
    )


# -- two data commits ---------------------------------------------------------------------------------------------


@router.get("/repos/{repo}/diff", response_class=HTMLResponse)
def diff(request: Request, repo: str, left: str, right: str, prefix: str = DEFAULT_DATA_PREFIX, after: str = ""):
    reader = _state(request).reader
    left_commit, right_commit = reader.commit(repo, left), reader.commit(repo, right)
    prefix = _prefix(prefix)
    page = reader.diff(repo, left_commit.id, right_commit.id, prefix=prefix + "/", after=after, amount=DIFF_PAGE)
    grouped = group_data_diff(page.items, prefix)
    infos = [dataset_info(request, repo, commit.id, prefix) for commit in (left_commit, right_commit)]
    shares = [class_shares(info) if info else {} for info in infos]
    names = list(dict.fromkeys([*shares[0], *shares[1]]))
    images = {}  # (split, name) -> image path on either side
    for entry in page.items:
        parts = PurePosixPath(entry.path).parts[len(PurePosixPath(prefix).parts) :]
        if len(parts) == 3 and parts[0] == "images":
            images[(parts[1], PurePosixPath(entry.path).stem)] = entry.path

    def image_of(split: str, name: str, commit) -> str:
        """The image of a sample whose image the diff does not name (only its mask changed): one listing."""
        if (split, name) not in images:
            found = reader.objects(repo, commit.id, f"{prefix}/images/{split}/{name}.", amount=1).items
            images[(split, name)] = found[0].path if found else ""
        return images[(split, name)]

    splits = {
        split: {
            status: [
                {
                    "name": name,
                    "image": image_of(split, name, left_commit if status == "removed" else right_commit),
                    "mask": f"{prefix}/masks/{split}/{name}.png",
                }
                for name in getattr(change, status)
            ]
            for status in ("added", "removed", "changed")
        }
        for split, change in sorted(grouped.splits.items())
    }
    return _page(
        request,
        "diff.html",
        repo=repo,
        left=left_commit,
        right=right_commit,
        prefix=prefix,
        splits=splits,
        other=grouped.other,
        next_after=page.next_after,
        left_ref=left,
        right_ref=right,
        shares=[(name, shares[0].get(name), shares[1].get(name)) for name in names],
    )


# -- thumbnails ---------------------------------------------------------------------------------------------------


@router.get("/thumb/{repo}/{commit}/image")
def image_thumbnail(
    request: Request, repo: str, commit: str, path: str, checksum: str = "", size: int = Query(THUMB_PX, ge=0, le=4096)
):
    reader, cache = _state(request).reader, _state(request).cache
    valid_repository(repo), valid_ref(commit), valid_path(path)
    checksum = checksum or reader.stat(repo, commit, path).checksum
    return _immutable(cache.image(checksum, size, lambda: reader.read(repo, commit, path)), "image/jpeg")


@router.get("/thumb/{repo}/{commit}/mask")
def mask_thumbnail(
    request: Request,
    repo: str,
    commit: str,
    path: str,
    classes_at: str = "",
    checksum: str = "",
    prefix: str = DEFAULT_DATA_PREFIX,
    size: int = Query(THUMB_PX, ge=0, le=4096),
):
    """A mask in the class colours of the data set at ``classes_at`` (default: the mask's own commit)."""
    reader, cache = _state(request).reader, _state(request).cache
    valid_repository(repo), valid_ref(commit), valid_path(path)
    palette_commit = classes_at or commit
    if not COMMIT_ID.fullmatch(palette_commit):  # a branch or tag: its commit now
        palette_commit = reader.commit(repo, palette_commit).id
    info = dataset_info(request, repo, palette_commit, _prefix(prefix))
    if info is None:
        raise NotFound(f"{repo}/{palette_commit[:12]}: no dataset.yaml for the class colours")
    checksum = checksum or reader.stat(repo, commit, path).checksum
    return _immutable(cache.mask(checksum, size, info.colors, lambda: reader.read(repo, commit, path)), "image/png")


def _immutable(path: Path, media_type: str) -> FileResponse:
    return FileResponse(path, media_type=media_type, headers={"Cache-Control": "max-age=3600"})


# -- runs and model versions --------------------------------------------------------------------------------------


@router.get("/models/{name}/{version}")
def model_version(request: Request, name: str, version: str):
    try:
        found = _state(request).client.get_model_version(name, version)
    except MlflowException:
        raise NotFound(f"model {name[:80]}/{version[:20]}: no such version") from None
    run_id = found.tags.get(lineage.TAG_TRAIN_RUN) or found.run_id
    return RedirectResponse(f"/runs/{run_id}?model={name}/{version}", status_code=303)


@router.get("/runs/{run_id}", response_class=HTMLResponse)
def run_page(request: Request, run_id: str, model: str = "", sort: str = "iou", after: int = Query(0, ge=0)):
    client = _state(request).client
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise NotFound(f"run {run_id[:40]}: no such run in {lineage.tracking_store()}") from None
    tags = run.data.tags
    artifacts = {item.path for item in client.list_artifacts(run_id)}
    config = _artifact_text(client, run_id, f"config/{tags.get(lineage.TAG_STEP, 'train')}.yaml")
    data = LakeFSUri.parse(tags[lineage.TAG_DATA_URI]) if tags.get(lineage.TAG_DATA_URI) else None
    versions = [v for v in _versions_of(client, run_id)]
    infer_runs = _infer_runs(client, run, versions)
    predictions = _predictions(request, infer_runs[0], sort, after) if infer_runs else None
    return _page(
        request,
        "run.html",
        run=run,
        model=model,
        tags=tags,
        config=redact_text(config or ""),
        metrics=sorted(run.data.metrics.items()),
        params=sorted(redact_value(run.data.params).items()),
        curves="learning_curves.png" in artifacts,
        data=data,
        versions=versions,
        infer_runs=infer_runs,
        predictions=predictions,
        sort=sort,
        link=mlflow_ui_url(client.tracking_uri, run.info.experiment_id, run_id),
    )


@router.get("/runs/{run_id}/artifact")
def run_artifact(request: Request, run_id: str, path: str):
    """A picture the run logged (learning curves, confusion matrix): only a listed top-level .png."""
    client = _state(request).client
    try:
        listed = {item.path for item in client.list_artifacts(run_id)}
    except MlflowException:
        raise NotFound(f"run {run_id[:40]}: no such run") from None
    if path not in listed or not path.endswith(".png"):
        raise NotFound(f"{path[:80]}: not a picture of run {run_id[:40]}")
    with tempfile.TemporaryDirectory() as folder:
        data = Path(client.download_artifacts(run_id, path, folder)).read_bytes()
    return Response(data, media_type="image/png")


def _artifact_text(client, run_id: str, path: str) -> str | None:
    with tempfile.TemporaryDirectory() as folder:
        try:
            return Path(client.download_artifacts(run_id, path, folder)).read_text()
        except (MlflowException, OSError):
            return None


def _versions_of(client, run_id: str) -> list:
    try:
        return list(client.search_model_versions(f"tags.`{lineage.TAG_TRAIN_RUN}` = {_quote(run_id)}"))
    except MlflowException:
        return []


def _infer_runs(client, run, versions) -> list:
    """Infer runs that committed predictions of this train run's model, newest first."""
    clauses = [
        f"tags.`{lineage.TAG_MODEL_NAME}` = {_quote(v.name)} and tags.`{lineage.TAG_MODEL_VERSION}` = "
        f"{_quote(str(v.version))}"
        for v in versions
    ]
    if run.data.tags.get(lineage.TAG_MODEL_URI):
        clauses.append(f"tags.`{lineage.TAG_MODEL_URI}` = {_quote(run.data.tags[lineage.TAG_MODEL_URI])}")
    found = {}
    for clause in clauses:
        for infer in search_runs(client, f"tags.`{lineage.TAG_STEP}` = 'infer' and {clause}", max_results=20):
            if infer.data.tags.get(lineage.TAG_PREDICTIONS_URI):
                found[infer.info.run_id] = infer
    return sorted(found.values(), key=lambda r: r.info.start_time or 0, reverse=True)


def _predictions(request: Request, infer, sort: str, after: int) -> dict:
    """One page of an infer run's committed predictions beside the ground truth, by per-image IoU."""
    reader = _state(request).reader
    uri = LakeFSUri.parse(infer.data.tags[lineage.TAG_PREDICTIONS_URI])
    data = LakeFSUri.parse(infer.data.tags[lineage.TAG_DATA_URI]) if infer.data.tags.get(lineage.TAG_DATA_URI) else None
    try:
        rows = list(csv.DictReader(io.StringIO(reader.read(uri.repo, uri.ref, f"{uri.path}/metrics.csv").decode())))
    except NotFound:
        rows = []
    scored = [row for row in rows if row.get("miou") not in (None, "")]
    key = {
        "iou": lambda r: float(r["miou"]),
        "iou_desc": lambda r: -float(r["miou"]),
        "name": lambda r: r["image"],
    }.get(sort, lambda r: float(r["miou"]))
    shown = sorted(scored, key=key)[after : after + PREDICTIONS_PAGE]
    items = []
    for row in shown:
        image = PurePosixPath(row["image"])  # images/<split>/<name>.<ext> in the data set
        split = image.parts[1] if len(image.parts) == 3 else ""
        items.append(
            {
                "image": f"{data.path}/{row['image']}" if data else "",
                "iou": float(row["miou"]),
                "truth": f"{data.path}/masks/{split}/{image.stem}.png" if data else "",
                "predicted": f"{uri.path}/masks/{image.stem}.png",
            }
        )  # as infer names a data set's masks
    return {
        "run": infer,
        "uri": uri,
        "data": data,
        "items": items,
        "total": len(scored),
        "after": after,
        "next": after + PREDICTIONS_PAGE if after + PREDICTIONS_PAGE < len(scored) else None,
    }


# -- compare ------------------------------------------------------------------------------------------------------


@router.get("/compare", response_class=HTMLResponse)
def compare_page(request: Request, a: str, b: str):
    client = _state(request).client
    try:
        sides = [resolve(query, client) for query in (a, b)]
    except CompareError as error:
        raise BadInput(str(error)) from None
    return HTMLResponse(format_html(compare(*sides, client, _state(request).reader)))
