"""The run report of a ``main`` run: one row a step (ran or reused, duration, commits in and out, key metrics,
model version and alias, its child run, linked to the tracking server's page of it when tracking is an http(s)
server), then the train run's learning curves and sample predictions; logged on the parent run as ``report.md``
(the images beside it) and ``report.html`` (self-contained: the images inline). No credential is shown."""

from __future__ import annotations

import base64
import html
import tempfile
from pathlib import Path
from typing import Sequence
from urllib.parse import urlsplit, urlunsplit

import mlflow
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from segmodels.pipeline.register import TAG_MODEL_ALIAS
from segmodels.redaction import redact_text, redact_url
from segmodels.tracking import lineage
from segmodels.tracking.lineage import short_commit
from segmodels.tracking.training import LEARNING_CURVES_FILE, latest_sample_grid

COLUMNS = ("step", "run", "ran / reused", "seconds", "in", "out", "metrics", "model")
KEY_METRICS = {
    "ingest": (),
    "train": ("best_val_miou", "best_val_loss", "best_epoch"),
    "register": (),
    "infer": ("miou", "pixel_accuracy", "num_images"),
}
SAMPLES_FILE = "sample_predictions.png"  # on the parent, beside report.md: the train run's last sample grid
FIGURES = ((LEARNING_CURVES_FILE, "learning curves"), (SAMPLES_FILE, "sample predictions (image | truth | prediction)"))


def tracking_server_url() -> str | None:
    """The tracking server's base URL when tracking is an http(s) server, without user info (and with any secret
    query parameter masked); None for a local store (sqlite, files), which has no page to link to."""
    parts = urlsplit(redact_url(mlflow.get_tracking_uri()))  # user info read as requests reads it, then masked
    if parts.scheme not in ("http", "https"):
        return None
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path.rstrip("/"), parts.query, ""))


def run_link(run: Run) -> str | None:
    """The run's page on the tracking server, or None when there is no server."""
    server = tracking_server_url()
    return f"{server}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}" if server else None


def report_rows(outcomes: Sequence) -> list[dict[str, str]]:
    """The report's rows (plain strings, redacted; ``link`` None without a tracking server), one per step outcome."""
    rows = []
    for outcome in outcomes:
        tags, params, metrics = outcome.run.data.tags, outcome.run.data.params, outcome.run.data.metrics
        data_in = params.get("data_commit") or params.get("data_ref", "")
        inputs = {
            "ingest": params.get("source", ""),
            "train": f"data {short_commit(data_in)}",
            "register": f"run {params.get('run_id', '')[:8]}",
            "infer": f"{params.get('model_uri', '')}, data {short_commit(params.get('data_commit'))}",
        }
        outputs = {
            "ingest": f"data {short_commit(tags.get(lineage.TAG_DATA_COMMIT))}",
            "train": f"model {short_commit(tags.get(lineage.TAG_MODEL_COMMIT))}",
            "register": "",
            "infer": tags.get("segmodels.output_dir", ""),
        }
        model = ""
        if lineage.TAG_MODEL_VERSION in tags:
            decided = tags.get(TAG_MODEL_ALIAS) and f"@{tags[TAG_MODEL_ALIAS]}"
            model = (
                f"{tags.get(lineage.TAG_MODEL_NAME)} v{tags[lineage.TAG_MODEL_VERSION]} "
                f"({decided or tags.get(lineage.TAG_REGISTER_OUTCOME, '')})"
            ).replace(" ()", "")
        shown = [f"{name} {metrics[name]:.4g}" for name in KEY_METRICS.get(outcome.step, ()) if name in metrics]
        rows.append(
            {
                key: value if value is None else redact_text(value)
                for key, value in {
                    "step": outcome.step,
                    "run": outcome.run.info.run_id,
                    "ran / reused": f"reused {outcome.reused_from[:8]}" if outcome.reused_from else "ran",
                    "seconds": f"{outcome.seconds:.1f}",
                    "in": inputs.get(outcome.step, ""),
                    "out": outputs.get(outcome.step, ""),
                    "metrics": ", ".join(shown),
                    "model": model if outcome.step in ("register", "infer") else "",
                    "link": run_link(outcome.run),
                }.items()
            }
        )
    return rows


def train_figures(outcomes: Sequence, folder: Path) -> dict[str, Path]:
    """The train run's learning curves and last sample grid (of the run that did the work, when reused),
    downloaded into ``folder`` under the names of :data:`FIGURES`; what the run does not have is left out."""
    train = next((outcome for outcome in outcomes if outcome.step == "train"), None)
    if train is None:
        return {}
    client = MlflowClient()
    run_id = train.reused_from or train.run.info.run_id
    logged = {artifact.path for artifact in client.list_artifacts(run_id)}
    sources = {
        LEARNING_CURVES_FILE: LEARNING_CURVES_FILE if LEARNING_CURVES_FILE in logged else None,
        SAMPLES_FILE: latest_sample_grid(client, run_id),
    }
    found = {}
    for name, source in sources.items():
        if source:
            downloaded = Path(client.download_artifacts(run_id, source, str(folder / "download")))
            found[name] = downloaded.replace(folder / name)
    return found


def markdown(rows: list[dict[str, str]], title: str, figures: Sequence[str]) -> str:
    """The rows as a Markdown table under ``title`` (step names linked to their runs when there is a server),
    then the ``figures`` (files beside the report)."""
    lines = [f"# {title}", "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        step = f"[{row['step']}]({row['link']})" if row["link"] else row["step"]
        lines.append("| " + " | ".join([step, *(row[column].replace("|", "\\|") for column in COLUMNS[1:])]) + " |")
    lines += [f"\n![{caption}]({name})" for name, caption in FIGURES if name in figures]
    return "\n".join(lines) + "\n"


def html_page(rows: list[dict[str, str]], title: str, figures: dict[str, Path]) -> str:
    """The rows and the ``figures`` as one self-contained HTML page (images as data URIs)."""
    head = "".join(f"<th>{html.escape(column)}</th>" for column in COLUMNS)
    cells = []
    for row in rows:
        step = html.escape(row["step"])
        if row["link"]:
            step = f'<a href="{html.escape(row["link"])}">{step}</a>'
        cells.append(
            f"<tr><td>{step}</td>" + "".join(f"<td>{html.escape(row[column])}</td>" for column in COLUMNS[1:]) + "</tr>"
        )
    images = "".join(
        f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,'
        f'{base64.b64encode(figures[name].read_bytes()).decode()}"><figcaption>{html.escape(caption)}</figcaption>'
        "</figure>"
        for name, caption in FIGURES
        if name in figures
    )
    return (
        f'<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        "<style>body{font-family:sans-serif}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
        "padding:4px 8px}img{max-width:100%}</style></head>"
        f"<body><h1>{html.escape(title)}</h1><table><tr>{head}</tr>{''.join(cells)}</table>{images}"
        "</body></html>\n"
    )


def log_report(outcomes: Sequence, parent: Run) -> None:
    """Log ``report.md`` (with the train run's figures beside it) and ``report.html`` of the steps done so far on
    the parent (active) run."""
    rows = report_rows(outcomes)
    title = f"main run {parent.info.run_id}"
    with tempfile.TemporaryDirectory(prefix="segmodels-report-") as folder:
        figures = train_figures(outcomes, Path(folder))
        for path in figures.values():
            mlflow.log_artifact(str(path))
        mlflow.log_text(markdown(rows, title, list(figures)), "report.md")
        mlflow.log_text(html_page(rows, title, figures), "report.html")
