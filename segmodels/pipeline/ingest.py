"""The ``ingest`` step: a data source in, a validated data set committed to lakeFS out.

The source may carry credentials (``http://user:pw@host/d.zip``, a presigned URL): the run's params, config
artifact and logs, the data set input and the lakeFS commit record it with them masked
(:mod:`segmodels.redaction`)."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import mlflow
from omegaconf import DictConfig

from segmodels.data import DataValidationError
from segmodels.data.demo import generate_demo_dataset
from segmodels.dataset_store import IngestResult, ingest
from segmodels.redaction import redact_text, register_secret
from segmodels.tracking import lineage
from segmodels.tracking.dataset import ARTIFACT_DIR, CARD_FILE, log_ingest
from segmodels.versioning import connect

log = logging.getLogger(__name__)

DEMO_SOURCE = "demo"


def readable_source(cfg: DictConfig, scratch: Path) -> str:
    """Where to read ``cfg.source`` from: the source itself, or for ``demo`` the demo data set generated in scratch."""
    if cfg.source != DEMO_SOURCE:
        return str(cfg.source)
    folder = generate_demo_dataset(scratch / DEMO_SOURCE, **cfg.demo)
    log.info("generated the demo data set (seed %s) in %s", cfg.demo.seed, folder)
    return str(folder)


def ingest_logging_refusals(*args, **kwargs) -> IngestResult:
    """:func:`segmodels.dataset_store.ingest`; a refusal's full list of bad files is logged to the active run."""
    try:
        return ingest(*args, **kwargs)
    except DataValidationError as refused:
        if refused.report_file:
            mlflow.log_artifact(str(refused.report_file), ARTIFACT_DIR)
        raise


def run(cfg: DictConfig) -> str:
    """Ingest ``cfg.source`` into ``lakefs://<repo>/<branch>/<prefix>``; return the data commit id."""
    lakefs = connect()
    settings = getattr(lakefs, "settings", None)  # masked also when read from ~/.lakectl.yaml, not the environment
    register_secret(getattr(settings, "secret_access_key", None))
    repo, branch = cfg.lakefs.repo, cfg.lakefs.data_branch
    lakefs.ensure_repository(repo, default_branch=branch)
    lakefs.ensure_branch(repo, branch)
    with lineage.step_run("ingest", cfg) as active, tempfile.TemporaryDirectory(prefix="segmodels-ingest-") as scratch:
        log.info("ingesting %s into lakefs://%s/%s/%s", redact_text(cfg.source), repo, branch, cfg.lakefs.data_prefix)
        commit, _ = lineage.git_commit()
        result = ingest_logging_refusals(
            lakefs,
            readable_source(cfg, Path(scratch)),
            cfg.data,
            repo,
            branch,
            cfg.lakefs.data_prefix,
            on_error=cfg.on_error,
            split_seed=cfg.split_seed,
            recorded_source=str(cfg.source),
            metadata={
                "mlflow_run_id": active.info.run_id,
                "git_commit": commit or "unknown",
                lineage.TRACKING_STORE_KEY: lineage.tracking_store(),
            },
        )
        lineage.set_tags(
            {lineage.TAG_LAKEFS_REPO: repo, lineage.TAG_DATA_COMMIT: result.commit_id, lineage.TAG_DATA_URI: result.uri}
        )
        summary = log_ingest(result)
        log.info("%s\n  card: the run's %s/%s", "\n".join(summary), ARTIFACT_DIR, CARD_FILE)
        return result.commit_id
