"""A multi-node train run's checkpoint in lakeFS, where every node finds it: global rank 0 commits
``checkpoints/<work key>/last.pt`` to the ``lakefs.checkpoint_branch`` branch after every epoch; before training,
every node makes its local checkpoint that one (or none), so a rerun of all nodes resumes alike on each; the
published checkpoint is deleted once the model is committed."""

from __future__ import annotations

import logging
from pathlib import Path

from segmodels.training import Callback, TrainState
from segmodels.training.checkpoint import CHECKPOINT_FILE
from segmodels.versioning import LakeFS

log = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "checkpoints"  # on the checkpoint branch: checkpoints/<work key>/last.pt


def published_path(key: str) -> str:
    """Where the checkpoint of the run with work key ``key`` is published."""
    return f"{CHECKPOINT_PREFIX}/{key}/{CHECKPOINT_FILE.name}"


class PublishCheckpoint(Callback):
    """Rank 0, after each epoch's checkpoint is on its disk: upload it and commit it to the checkpoint branch."""

    def __init__(self, lakefs: LakeFS, repo: str, branch: str, key: str):
        self.lakefs, self.repo, self.branch, self.key = lakefs, repo, branch, key

    def on_fit_start(self, state: TrainState) -> None:
        self.lakefs.ensure_branch(self.repo, self.branch)

    def on_epoch_end(self, state: TrainState, metrics: dict) -> None:
        self.lakefs.upload_file(self.repo, self.branch, published_path(self.key), state.work_dir / CHECKPOINT_FILE)
        self.lakefs.commit(
            self.repo,
            self.branch,
            f"train checkpoint {self.key} after epoch {state.epoch + 1}",
            {"epoch": str(state.epoch)},
        )


def use_published_checkpoint(lakefs: LakeFS, repo: str, branch: str, key: str, work: Path) -> bool:
    """Make ``work``'s checkpoint the published one, or remove it when none is published (one node's newer local
    checkpoint would put it an epoch ahead of the others); whether one was published."""
    local = work / CHECKPOINT_FILE
    published = lakefs.is_branch(repo, branch) and next(
        iter(lakefs.list_objects(repo, branch, published_path(key))), None
    )
    if not published:
        local.unlink(missing_ok=True)
        return False
    lakefs.download_object(repo, branch, published, local)
    log.info("resuming from the published checkpoint lakefs://%s/%s/%s", repo, branch, published.path)
    return True


def delete_published_checkpoint(lakefs: LakeFS, repo: str, branch: str, key: str) -> None:
    """Remove the run's published checkpoint once its model is committed (nothing when none was published)."""
    if not lakefs.is_branch(repo, branch):
        return
    paths = [obj.path for obj in lakefs.list_objects(repo, branch, f"{CHECKPOINT_PREFIX}/{key}/")]
    if paths:
        lakefs.delete_objects(repo, branch, paths)
        lakefs.commit(repo, branch, f"train checkpoint {key}: model committed, checkpoint removed")
