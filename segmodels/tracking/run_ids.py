"""Run ids as users paste them: a full MLflow run id, or a unique prefix of at least 8 hex digits (``report.md``
and log lines show the first 8)."""

from __future__ import annotations

import re

from mlflow.entities import Run, ViewType
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from segmodels.redaction import shown

MIN_RUN_ID_PREFIX = 8
SHOWN_MATCHES = 5
HEX = re.compile(r"[0-9a-f]+")
NOT_FOUND = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")


class RunIdError(ValueError):
    """No run, or more than one, has this id or prefix; the message is one line naming it."""


def find_run(client: MlflowClient, text: str) -> Run | None:
    """The run whose id is ``text`` or starts with it (>= 8 hex digits, active runs of active experiments);
    None when there is none. An ambiguous prefix raises RunIdError listing the matches."""
    run_id = text.strip().lower()
    try:
        return client.get_run(run_id)
    except MlflowException as error:
        if error.error_code not in NOT_FOUND:
            raise
    if not HEX.fullmatch(run_id) or len(run_id) < MIN_RUN_ID_PREFIX:
        return None
    matches = [
        run
        for experiments in _experiment_batches(client)
        for run in client.search_runs(experiments, f"attributes.run_id LIKE '{run_id}%'", max_results=SHOWN_MATCHES + 1)
    ]
    if len(matches) > 1:
        listed = ", ".join(run.info.run_id for run in matches[:SHOWN_MATCHES])
        more = " and more" if len(matches) > SHOWN_MATCHES else ""
        raise RunIdError(f"run id prefix {run_id} is ambiguous: it matches {listed}{more}; pass more digits")
    return matches[0] if matches else None


def resolve_run(client: MlflowClient, text: str, name: str = "run_id") -> Run:
    """:func:`find_run`, raising RunIdError (``<name>=<text>: ...``) when no run matches."""
    try:
        run = find_run(client, text)
    except RunIdError as error:
        raise RunIdError(f"{name}={shown(text)}: {error}") from None
    if run is None:
        hint = "" if len(text.strip()) >= MIN_RUN_ID_PREFIX else f" (a prefix needs {MIN_RUN_ID_PREFIX} hex digits)"
        raise RunIdError(f"{name}={shown(text)}: no MLflow run has this id{hint}")
    return run


def _experiment_batches(client: MlflowClient, size: int = 100):
    """The active experiments' ids in batches (search_runs takes a bounded list)."""
    ids, token = [], None
    while True:
        page = client.search_experiments(view_type=ViewType.ACTIVE_ONLY, max_results=1000, page_token=token)
        ids += [experiment.experiment_id for experiment in page]
        token = page.token
        if not token:
            break
    for start in range(0, len(ids), size):
        yield ids[start : start + size]
