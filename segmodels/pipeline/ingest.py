"""The ``ingest`` step: a data source in, a validated data set committed to lakeFS out."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import mlflow
from omegaconf import DictConfig, OmegaConf

from segmodels.data.demo import generate_demo_dataset
from segmodels.data.ingest import ingest
from segmodels.tracking import lineage
from segmodels.tracking.dataset import log_ingest
from segmodels.versioning import connect

log = logging.getLogger(__name__)

DEMO_SOURCE = "demo"


def run(cfg: DictConfig) -> str:
    """Ingest ``cfg.source`` into ``lakefs://<repo>/<branch>/<prefix>``; return the data commit id."""
    lakefs = connect()
    repo, branch = cfg.lakefs.repo, cfg.lakefs.data_branch
    lakefs.ensure_repository(repo, default_branch=branch)
    lakefs.ensure_branch(repo, branch)
    with lineage.step_run("ingest", cfg) as active, tempfile.TemporaryDirectory(prefix="segmodels-ingest-") as work:
        source = str(cfg.source)
        if source == DEMO_SOURCE:
            source = str(generate_demo_dataset(Path(work) / "demo", **cfg.demo))
            log.info("generated the demo data set (seed %s) in %s", cfg.demo.seed, source)
        commit, _ = lineage.git_commit()
        result = ingest(
            source, lakefs, repo, branch, cfg.lakefs.data_prefix,
            on_error=cfg.on_error, split_seed=cfg.split_seed,
            commit_metadata={"mlflow_run_id": active.info.run_id, "source": str(cfg.source),
                             "git_commit": commit or "unknown"},
            **OmegaConf.to_container(cfg.data, resolve=True),
        )
        mlflow.set_tags({lineage.TAG_LAKEFS_REPO: repo, lineage.TAG_DATA_COMMIT: result.commit_id,
                         lineage.TAG_DATA_URI: result.uri})
        log_ingest(result)
        return result.commit_id
