"""Which MLflow tracking store holds a lakeFS repository's lineage.

MLflow's store follows the working directory (``./mlflow.db``) or ``MLFLOW_TRACKING_URI``, while the lakeFS
state is shared (``~/.segmodels``): a step started from another folder records into a new, empty store. Every
lakeFS commit a step makes names its store (:data:`~segmodels.tracking.lineage.TRACKING_STORE_KEY`);
:func:`warn_if_other_store` says, at a step's start, when this store is new but the repository's commits were
recorded in another one, and how to use that one.
"""

from __future__ import annotations

import logging
import shlex

import mlflow
from mlflow.entities import ViewType
from mlflow.environment_variables import MLFLOW_RUN_ID
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from segmodels.tracking import lineage
from segmodels.versioning import LakeFS, LakeFSError

log = logging.getLogger(__name__)


def recorded_store(lakefs: LakeFS, repo: str, branch: str) -> str | None:
    """The tracking store the head commit of ``repo``/``branch`` names; None when it names none or there is
    no such branch."""
    try:
        return lakefs.get_commit(repo, branch).metadata.get(lineage.TRACKING_STORE_KEY)
    except LakeFSError:
        return None


def is_new_store(client: MlflowClient) -> bool:
    """Whether the store holds no registered model and no segmodels run but this step's own run and its
    parent (the runs ``mlflow run`` made for this chain)."""
    if client.search_registered_models(max_results=1):
        return False
    experiments = client.search_experiments(view_type=ViewType.ALL, max_results=100)
    if experiments.token:  # more than a page of experiments: not a new store
        return False
    oldest = (
        client.search_runs(
            [e.experiment_id for e in experiments],
            f"tags.`{lineage.TAG_STEP}` LIKE '%'",
            run_view_type=ViewType.ALL,
            max_results=1,
            order_by=["attributes.start_time ASC"],
        )
        if experiments
        else []
    )
    if not oldest:
        return True
    active = mlflow.active_run()
    run_id = active.info.run_id if active else MLFLOW_RUN_ID.get()  # made by `mlflow run`
    if oldest[0].info.run_id == run_id:
        return True
    return bool(run_id) and client.get_run(run_id).data.tags.get(MLFLOW_PARENT_RUN_ID) == oldest[0].info.run_id


def warn_if_other_store(lakefs: LakeFS, repo: str, model_branch: str, data_branch: str) -> str | None:
    """Log (and return) one warning line when this MLflow store is new while ``lakefs://<repo>``'s model (else
    data) commits were recorded in another store."""
    if not is_new_store(MlflowClient()):
        return None
    here = lineage.tracking_store()
    for what, branch in (("models", model_branch), ("data", data_branch)):  # noqa: B007 (`what` is read after the loop)
        other = recorded_store(lakefs, repo, branch)
        if other and other != here:
            break
    else:
        return None
    line = (
        f"this MLflow store ({here}) is new, but lakefs://{repo} holds {what} recorded in {other}; "
        f"to use it: export MLFLOW_TRACKING_URI={shlex.quote(other)}"
    )
    log.warning("%s", line)
    return line
