"""``segmodels compare A B``: two train runs, model versions (``models:/name/1``, ``models:/name@alias``) or data
commits (``lakefs://repo/<commit>[/path]``) side by side: params and resolved config as a diff, metric deltas
(final, best, per-class IoU), the code change (``git diff --stat``), the data change per split (lakeFS diff)
and one line on which is better on the registry's metric and whether both were validated on the same data."""

from __future__ import annotations

import difflib
import html
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from segmodels.data.errors import DataValidationError
from segmodels.data.info import DatasetInfo, load_dataset_info
from segmodels.data.layout import SPLITS, Layout
from segmodels.progress import quiet_mlflow_transfers_on_pipes
from segmodels.redaction import redact_text, redact_value
from segmodels.tracking import lineage
from segmodels.tracking.run_ids import RunIdError, resolve_run
from segmodels.versioning import LakeFSError, LakeFSUri

MODEL_URI = re.compile(r"models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[\w-]+))")
DEFAULT_DATA_PREFIX = "data"
UNCOMPARED_METRICS = re.compile(r"^system/|_time_s$|_per_s$|^epoch$")
MAX_DIFF_ENTRIES = 100_000  # lakeFS diff entries read for one comparison
NAMES_SHOWN = 5  # sample names listed per split and change


class CompareError(ValueError):
    """A side that names nothing comparable (one line)."""


@dataclass
class Side:
    """What one of A and B names: a train run (also for a model version) and/or a data commit."""

    query: str
    run: Run | None = None
    version: str = ""  # "name/3 @champion" for a model version
    repo: str = ""
    data_commit: str = ""
    data_prefix: str = DEFAULT_DATA_PREFIX

    @property
    def title(self) -> str:
        if self.version:
            return f"model {self.version} (run {self.run.info.run_id[:8]})"
        if self.run is not None:
            return f"run {self.run.info.run_id[:8]}"
        return f"data {self.repo}/{self.data_commit[:12]}"


@dataclass
class SplitChange:
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)


@dataclass
class DataDiff:
    """A lakeFS diff of two data commits grouped by split into samples (an image and its mask)."""

    splits: dict[str, SplitChange] = field(default_factory=dict)
    other: list[str] = field(default_factory=list)  # dataset.yaml, manifest.csv, ...
    truncated: bool = False


@dataclass
class Comparison:
    a: Side
    b: Side
    params: list[tuple[str, str, str]] = field(default_factory=list)
    config_diff: list[str] = field(default_factory=list)
    metrics: dict[str, list[tuple[str, float | None, float | None]]] = field(default_factory=dict)
    code: list[str] = field(default_factory=list)
    data: list[str] = field(default_factory=list)
    data_diff: DataDiff | None = None
    class_shares: list[tuple[str, float | None, float | None]] = field(default_factory=list)
    verdict: str = ""


def resolve(query: str, client: MlflowClient) -> Side:
    """The side ``query`` names; CompareError when it names nothing."""
    text = query.strip()
    if text.startswith("lakefs://"):
        try:
            uri = LakeFSUri.parse(text)
        except LakeFSError as error:
            raise CompareError(str(error)) from None
        return Side(text, repo=uri.repo, data_commit=uri.ref, data_prefix=uri.path or DEFAULT_DATA_PREFIX)
    if text.startswith("models:/"):
        match = MODEL_URI.fullmatch(text)
        if not match:
            raise CompareError(f"{_short(text)}: expected models:/<name>/<version> or models:/<name>@<alias>")
        try:
            version = (
                client.get_model_version(match["name"], match["version"])
                if match["version"]
                else client.get_model_version_by_alias(match["name"], match["alias"])
            )
        except MlflowException as error:
            raise CompareError(f"{_short(text)}: {str(error.message).splitlines()[0][:120]}") from None
        run_id = version.tags.get(lineage.TAG_TRAIN_RUN) or version.run_id
        side = _run_side(text, client.get_run(run_id))
        aliases = " ".join(f"@{alias}" for alias in version.aliases)
        side.version = f"{version.name}/{version.version}" + (f" {aliases}" if aliases else "")
        return side
    try:
        return _run_side(text, resolve_run(client, text, name="run"))
    except RunIdError as error:
        raise CompareError(f"{error} (nor a models:/ or lakefs:// URI)") from None


def _run_side(query: str, run: Run) -> Side:
    tags = run.data.tags
    side = Side(
        query, run=run, repo=tags.get(lineage.TAG_LAKEFS_REPO, ""), data_commit=tags.get(lineage.TAG_DATA_COMMIT, "")
    )
    if tags.get(lineage.TAG_DATA_URI):
        side.data_prefix = LakeFSUri.parse(tags[lineage.TAG_DATA_URI]).path or DEFAULT_DATA_PREFIX
    return side


def compare(
    a: Side,
    b: Side,
    client: MlflowClient,
    reader=None,
    git_dir: Path | None = None,
    metric: str = "best_val_miou",
    greater_is_better: bool = True,
) -> Comparison:
    """Everything ``A`` and ``B`` differ in; ``reader`` (a :class:`~segmodels.ui.lakefs_reader.LakeFSReader`)
    for the data change, ``git_dir`` for the code change (both optional)."""
    result = Comparison(a, b)
    if a.run is not None and b.run is not None:
        result.params = [
            (key, a.run.data.params.get(key, ""), b.run.data.params.get(key, ""))
            for key in sorted(set(a.run.data.params) | set(b.run.data.params))
            if a.run.data.params.get(key) != b.run.data.params.get(key)
        ]
        result.config_diff = _config_diff(client, a.run, b.run)
        result.metrics = _metric_deltas(a.run.data.metrics, b.run.data.metrics)
        result.code = _code_change(
            a.run.data.tags.get(lineage.TAG_GIT_COMMIT, ""), b.run.data.tags.get(lineage.TAG_GIT_COMMIT, ""), git_dir
        )
    _data_change(result, reader)
    result.verdict = _verdict(a, b, metric, greater_is_better)
    return result


def _metric_deltas(a: dict[str, float], b: dict[str, float]) -> dict[str, list[tuple[str, float | None, float | None]]]:
    groups: dict[str, list] = {"final": [], "best": [], "per-class IoU (best)": []}
    for key in sorted(set(a) | set(b)):
        if UNCOMPARED_METRICS.search(key):
            continue
        group = (
            "per-class IoU (best)"
            if key.startswith("best_") and "_iou_" in key
            else "best"
            if key.startswith("best_")
            else None
            if "_iou_" in key
            else "final"
        )
        if group:
            groups[group].append((key, a.get(key), b.get(key)))
    return {name: rows for name, rows in groups.items() if rows}


def _config_diff(client: MlflowClient, a: Run, b: Run) -> list[str]:
    """The unified diff of the resolved configs the runs logged (``config/<step>.yaml``)."""
    texts = []
    for run in (a, b):
        step = run.data.tags.get(lineage.TAG_STEP, "train")
        with tempfile.TemporaryDirectory() as folder:
            try:
                path = client.download_artifacts(run.info.run_id, f"config/{step}.yaml", folder)
                texts.append(Path(path).read_text().splitlines())
            except (MlflowException, OSError):
                return []
    return list(difflib.unified_diff(texts[0], texts[1], "A", "B", lineterm="", n=1))[2:]


def _code_change(commit_a: str, commit_b: str, git_dir: Path | None) -> list[str]:
    if not commit_a or not commit_b:
        return ["no code commit recorded"]
    if commit_a == commit_b:
        return [f"same code commit {commit_a[:12]}"]
    header = f"code {commit_a[:12]} -> {commit_b[:12]}"
    if git_dir is None:
        return [header + " (no git repository to diff them in)"]
    done = subprocess.run(
        ["git", "-C", str(git_dir), "diff", "--stat", commit_a, commit_b], capture_output=True, text=True, timeout=60
    )
    if done.returncode != 0:
        return [header + f" (not both in {git_dir})"]
    return [header, *done.stdout.rstrip().splitlines()]


def group_data_diff(entries, prefix: str, diff: DataDiff | None = None) -> DataDiff:
    """lakeFS diff entries below ``prefix`` grouped by split into samples: an image added or removed makes its
    sample added or removed; any other change to the image or mask makes it changed."""
    diff = diff or DataDiff()
    samples: dict[tuple[str, str], dict[str, str]] = {}
    root = prefix.strip("/") + "/" if prefix.strip("/") else ""
    for entry in entries:
        parts = entry.path[len(root) :].split("/") if entry.path.startswith(root) else []
        if len(parts) == 3 and parts[0] in ("images", "masks"):
            samples.setdefault((parts[1], Path(parts[2]).stem), {})[parts[0]] = entry.type
        else:
            diff.other.append(entry.path)
    for (split, name), kinds in sorted(samples.items()):
        change = diff.splits.setdefault(split, SplitChange())
        status = kinds.get("images") if kinds.get("images") in ("added", "removed") else "changed"
        getattr(change, status).append(name)
    return diff


def _data_change(result: Comparison, reader) -> None:
    a, b = result.a, result.b
    if not a.data_commit or not b.data_commit:
        result.data = ["no data commit recorded"]
        return
    if reader is not None and a.repo == b.repo:
        for side in (a, b):  # a branch or tag is pinned to its commit
            side.data_commit = reader.commit(side.repo, side.data_commit).id
    if a.repo == b.repo and a.data_commit == b.data_commit:
        result.data = [f"same data commit {a.repo}/{a.data_commit[:12]}"]
        return
    result.data = [f"data {a.repo}/{a.data_commit[:12]} -> {b.repo}/{b.data_commit[:12]}"]
    if reader is None or a.repo != b.repo:
        result.data.append("(not diffed: " + ("no lakeFS connection)" if reader is None else "different repositories)"))
        return
    diff, after, read = DataDiff(), "", 0
    while True:
        page = reader.diff(a.repo, a.data_commit, b.data_commit, prefix=a.data_prefix.strip("/") + "/", after=after)
        group_data_diff(page.items, a.data_prefix, diff)
        read += len(page.items)
        if not page.next_after:
            break
        if read >= MAX_DIFF_ENTRIES:
            diff.truncated = True
            break
        after = page.next_after
    result.data_diff = diff
    shares = [_class_shares(reader, side) for side in (a, b)]
    names = list(dict.fromkeys([*shares[0], *shares[1]]))
    result.class_shares = [(name, shares[0].get(name), shares[1].get(name)) for name in names]


def _class_shares(reader, side: Side) -> dict[str, float]:
    info = read_dataset_info(reader, side.repo, side.data_commit, side.data_prefix)
    return class_shares(info) if info is not None else {}


def read_dataset_info(reader, repo: str, commit: str, prefix: str) -> DatasetInfo | None:
    """The ``dataset.yaml`` of the data set at ``lakefs://repo/commit/prefix``, parsed and checked as the steps
    parse it; None when it is absent or malformed."""
    try:
        text = reader.read(repo, commit, f"{prefix.strip('/')}/dataset.yaml")
    except LookupError:
        return None
    with tempfile.TemporaryDirectory() as folder:
        Layout(folder).dataset_file.write_bytes(text)
        try:
            return load_dataset_info(Path(folder))
        except DataValidationError:
            return None


def class_shares(info: DatasetInfo) -> dict[str, float]:
    """Pixel share of each class, all splits together (empty without class statistics)."""
    try:
        stats = info.class_stats or {}
    except DataValidationError:
        return {}
    pixels = [sum(split.pixels[i] for split in stats.values()) for i in range(info.num_classes)]
    total = sum(pixels)
    return {name: count / total for name, count in zip(info.class_names, pixels)} if total else {}


def _verdict(a: Side, b: Side, metric: str, greater_is_better: bool) -> str:
    if a.run is None or b.run is None:
        return "data commits only: no metric to compare"
    value_a, value_b = a.run.data.metrics.get(metric), b.run.data.metrics.get(metric)
    same = a.repo == b.repo and a.data_commit == b.data_commit and bool(a.data_commit)
    data = (
        "validated on the same data commit"
        if same
        else "validated on different data commits, so the metric is not like for like"
    )
    if value_a is None or value_b is None:
        return f"{metric} missing on {'A' if value_a is None else 'B'}; {data}"
    if value_a == value_b:
        return f"A and B are equal on {metric} ({value_a:.4f}); {data}"
    better = "A" if (value_a > value_b) == greater_is_better else "B"
    return f"{better} is better on {metric} ({value_a:.4f} vs {value_b:.4f}, B-A {value_b - value_a:+.4f}); {data}"


def format_text(result: Comparison) -> str:
    """The comparison as the terminal shows it."""
    lines = [f"A: {result.a.title}", f"B: {result.b.title}"]
    if result.params:
        lines += ["", "params (A -> B):"] + [f"  {key}: {_short(a)} -> {_short(b)}" for key, a, b in result.params]
    if result.config_diff:
        lines += ["", "config (A -> B):"] + [f"  {line}" for line in result.config_diff]
    for group, rows in result.metrics.items():
        lines += ["", f"metrics, {group}:"] + [
            f"  {key:32} {_num(a):>9} {_num(b):>9} {_delta(a, b):>9}" for key, a, b in rows
        ]
    if result.code:
        lines += ["", *result.code]
    lines += ["", *result.data]
    if result.data_diff is not None:
        for split, change in sorted(result.data_diff.splits.items(), key=lambda item: _split_order(item[0])):
            for status in ("added", "removed", "changed"):
                names = getattr(change, status)
                if names:
                    shown = ", ".join(names[:NAMES_SHOWN]) + (" ..." if len(names) > NAMES_SHOWN else "")
                    lines.append(f"  {split}: {len(names)} {status}: {shown}")
        if result.data_diff.truncated:
            lines.append(f"  (diff cut at {MAX_DIFF_ENTRIES} entries)")
        lines += [
            f"  class share {name}: {_pct(a)} -> {_pct(b)}"
            for name, a, b in result.class_shares
            if a is None or b is None or abs(a - b) >= 0.0005
        ]
    lines += ["", result.verdict]
    return redact_text("\n".join(lines))


def format_html(result: Comparison) -> str:
    """A self-contained HTML page of the comparison (no scripts, no external resources)."""
    body = html.escape(format_text(result))
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>segmodels compare</title><style>"
        "body{font-family:sans-serif;margin:1.5em} pre{background:#f6f6f6;padding:1em;overflow:auto}</style>"
        f"</head><body><h1>segmodels compare</h1><pre>{body}</pre></body></html>"
    )


def _split_order(split: str) -> tuple[int, str]:
    return (SPLITS.index(split) if split in SPLITS else len(SPLITS), split)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _delta(a: float | None, b: float | None) -> str:
    return "" if a is None or b is None else f"{b - a:+.4f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _short(value, limit: int = 80) -> str:
    text = str(redact_value(value))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def run_cli(a: str, b: str, html_file: Path | None = None) -> None:
    """``segmodels compare A B [--html FILE]``: print the comparison (and write it as HTML); one-line errors."""
    import mlflow

    from segmodels.config import load_config
    from segmodels.ui.lakefs_reader import BadInput, NotFound, open_reader

    quiet_mlflow_transfers_on_pipes()
    client = MlflowClient()
    try:
        sides = [resolve(query, client) for query in (a, b)]
        reader = open_reader() if all(side.data_commit for side in sides) else None
        register = load_config("register")
        result = compare(
            *sides,
            client,
            reader,
            git_dir=_git_dir(),
            metric=register.metric,
            greater_is_better=register.greater_is_better,
        )
    except (CompareError, NotFound, BadInput, LakeFSError) as error:
        print(f"segmodels compare: error: {redact_text(str(error)).splitlines()[0]}", file=sys.stderr)
        raise SystemExit(2) from None
    except MlflowException as error:
        print(
            f"segmodels compare: error: {mlflow.get_tracking_uri()}: {str(error.message).splitlines()[0][:160]}",
            file=sys.stderr,
        )
        raise SystemExit(2) from None
    print(format_text(result))
    if html_file is not None:
        Path(html_file).write_text(format_html(result))
        print(f"wrote {html_file}")


def _git_dir() -> Path | None:
    """The git repository of the working directory, else of this checkout of segmodels, else None."""
    for folder in (Path.cwd(), Path(__file__).resolve().parents[1]):
        done = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "--show-toplevel"], capture_output=True, text=True, timeout=30
        )
        if done.returncode == 0:
            return Path(done.stdout.strip())
    return None
