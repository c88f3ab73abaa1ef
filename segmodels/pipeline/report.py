"""The run report of a ``main`` run: one row a step (ran or reused, duration, commits in and out, key metrics,
model version and alias, a link to its child run), logged on the parent run as ``report.md`` and ``report.html``."""

from __future__ import annotations

import html
from typing import Sequence

import mlflow
from mlflow.entities import Run

from segmodels.redaction import redact_text
from segmodels.tracking import lineage
from segmodels.tracking.lineage import short_commit

COLUMNS = ("step", "ran / reused", "seconds", "in", "out", "metrics", "model")
KEY_METRICS = {"ingest": (), "train": ("best_val_miou", "best_val_loss", "best_epoch"),
               "register": (), "infer": ("miou", "pixel_accuracy", "num_images")}


def run_link(run: Run) -> str:
    """The child run's page in the MLflow UI (relative to the UI's root unless tracking is an http server)."""
    path = f"#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
    uri = mlflow.get_tracking_uri()
    return f"{uri.rstrip('/')}/{path}" if uri.startswith(("http://", "https://")) else path


def report_rows(outcomes: Sequence) -> list[dict[str, str]]:
    """The report's rows (plain strings), one per step outcome."""
    rows = []
    for outcome in outcomes:
        tags, params, metrics = outcome.run.data.tags, outcome.run.data.params, outcome.run.data.metrics
        data_in = params.get("data_commit") or params.get("data_ref", "")
        inputs = {"ingest": redact_text(params.get("source", "")), "train": f"data {short_commit(data_in)}",
                  "register": f"run {params.get('run_id', '')[:8]}",
                  "infer": f"{params.get('model_uri', '')}, data {short_commit(params.get('data_commit'))}"}
        outputs = {"ingest": f"data {short_commit(tags.get(lineage.TAG_DATA_COMMIT))}",
                   "train": f"model {short_commit(tags.get(lineage.TAG_MODEL_COMMIT))}",
                   "register": "", "infer": tags.get("segmodels.output_dir", "")}
        model = ""
        if lineage.TAG_MODEL_VERSION in tags:
            model = (f"{tags.get(lineage.TAG_MODEL_NAME)} v{tags[lineage.TAG_MODEL_VERSION]} "
                     f"({tags.get(lineage.TAG_REGISTER_OUTCOME, '')})").replace(" ()", "")
        shown = [f"{name} {metrics[name]:.4g}" for name in KEY_METRICS.get(outcome.step, ()) if name in metrics]
        rows.append({
            "step": outcome.step,
            "ran / reused": f"reused {outcome.reused_from[:8]}" if outcome.reused_from else "ran",
            "seconds": f"{outcome.seconds:.1f}",
            "in": inputs.get(outcome.step, ""),
            "out": outputs.get(outcome.step, ""),
            "metrics": ", ".join(shown),
            "model": model if outcome.step in ("register", "infer") else "",
            "link": run_link(outcome.run),
        })
    return rows


def markdown(rows: list[dict[str, str]], title: str) -> str:
    """The rows as a Markdown table under ``title``; the step names link to their runs."""
    lines = [f"# {title}", "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        cells = [f"[{row['step']}]({row['link']})", *(row[column].replace("|", "\\|") for column in COLUMNS[1:])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def html_page(rows: list[dict[str, str]], title: str) -> str:
    """The rows as a small self-contained HTML page."""
    head = "".join(f"<th>{html.escape(column)}</th>" for column in COLUMNS)
    body = "".join(
        "<tr>" + f"<td><a href=\"{html.escape(row['link'])}\">{html.escape(row['step'])}</a></td>"
        + "".join(f"<td>{html.escape(row[column])}</td>" for column in COLUMNS[1:]) + "</tr>"
        for row in rows)
    return (f"<!doctype html><html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            "<style>body{font-family:sans-serif}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
            f"padding:4px 8px}}</style></head><body><h1>{html.escape(title)}</h1><table><tr>{head}</tr>{body}"
            "</table></body></html>\n")


def log_report(outcomes: Sequence, parent: Run) -> None:
    """Log ``report.md`` and ``report.html`` of the steps done so far on the parent (active) run."""
    rows = report_rows(outcomes)
    title = f"main run {parent.info.run_id}"
    mlflow.log_text(markdown(rows, title), "report.md")
    mlflow.log_text(html_page(rows, title), "report.html")
