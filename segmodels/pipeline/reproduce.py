"""The ``reproduce`` step: rerun a train run with the code, the config and the data it recorded, as a new run,
and say whether its per-epoch metrics match the original's.

What a train run recorded, and how each part is brought back:

- code: its ``segmodels.git_commit`` tag. The step refuses a run without one, or one that recorded
  ``segmodels.git_dirty=true`` (uncommitted code ran: it cannot be recovered). The commit is checked out from
  the project's git repository (the one holding the working directory, as under ``mlflow run .``) into
  ``<segmodels home>/reproduce/<commit>/``: a ``git clone --shared --no-checkout`` (objects borrowed from the
  project, nothing copied, no entry left in the project's ``.git``) then ``checkout --detach <commit>``, reused
  by later reproductions of that commit. The old code runs there, so it records its own commit, clean.
- config: the artifact ``config/train.yaml`` (the resolved config, every group choice already a value) becomes
  that checkout's ``conf/train.yaml`` behind the old file's schema defaults, so the old code composes exactly the
  recorded config (``git update-index --skip-worktree`` keeps that file out of its ``git status``: the code is
  the commit's; the config is recorded on the run, as always).
- data: ``data_ref`` is set to the run's ``lakefs.data_uri``, pinned to the data commit it trained on.
- seed, epochs, model, everything else: in the recorded config; ``nproc`` (a launcher parameter): from the
  run's params.

The reproduction is a child run of this step's run (``mlflow.parentRunId``) tagged ``segmodels.reproduces``; the
old commit's own train entry point (its ``MLproject``) runs in a subprocess in the checkout with that checkout
first on ``PYTHONPATH`` and ``MLFLOW_RUN_ID`` naming the child run, in this interpreter's environment. Its
output streams through; there is no time limit. Then every metric of the original (but those matching
``ignore_metrics``: system metrics and timings) is compared epoch by epoch: bit for bit when both runs trained
on CPU, within ``tolerance`` when either used CUDA (``compare`` forces one or the other). The outcome is tagged
on both runs and written as ``reproduction.md`` on this one; one line says it. Exit status: 0 when the metrics
match, 1 when they differ, 2 when the run cannot be reproduced (a one-line error).
"""

from __future__ import annotations

import fcntl
import fnmatch
import io
import logging
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import mlflow
import yaml
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from segmodels.config import ConfigError
from segmodels.home import segmodels_home
from segmodels.pipeline import StepError
from segmodels.targets import check_targets, conf_targets
from segmodels.tracking import lineage
from segmodels.tracking.run_ids import RunIdError, resolve_run

log = logging.getLogger(__name__)

EXACT, WITHIN_TOLERANCE, DIFFERS = "exact", "within_tolerance", "differs"
COMPARE_MODES = ("auto", "exact", "tolerance")
CONFIG_ARTIFACT = "config/train.yaml"
REPORT_ARTIFACT = "reproduction.md"
CHECKOUTS = "reproduce"  # <segmodels home>/reproduce/<commit>/
COMPLETE_MARKER = "segmodels-reproduce-complete"  # in the checkout's .git/: written once it is usable
TRAIN_CONFIG = "conf/train.yaml"
EXIT_DIFFERS = 1  # a reproduction that does not match fails (CI); 2 (StepError) when none could be made
COMMIT_ID = re.compile(r"^[0-9a-f]{7,64}$")
LAKEFS_COMMIT_ID = re.compile(r"[0-9a-f]{64}")  # a lakeFS commit id (sha256); a branch or tag moves, a commit not


@dataclass(frozen=True)
class RecordedRun:
    """What a finished train run recorded of its code, config and data."""

    run: Run
    commit: str
    config: dict
    data_uri: str

    @property
    def run_id(self) -> str:
        return self.run.info.run_id


@dataclass
class MetricMatch:
    """One metric of the original compared with the reproduction's, step (epoch) by step."""

    key: str
    epochs: int = 0  # steps compared
    max_abs_diff: float = 0.0  # over the compared values (NaN against NaN counts as equal)
    identical: bool = True
    mismatch: str | None = None  # the first value outside the criterion ("a vs b"), or why none could be compared
    mismatch_epoch: int | None = None  # the step (epoch from 0) of that value (none for a best_* summary)

    def describe(self) -> str:
        where = f" epoch {self.mismatch_epoch + 1}" if self.mismatch_epoch is not None else ""  # as the log counts
        return f"{self.key}{where}: {self.mismatch}"


@dataclass
class Comparison:
    """Every compared metric, the criterion applied and the outcome."""

    metrics: list[MetricMatch]
    mode: str  # exact | tolerance
    rel: float
    abs: float
    outcome: str = field(init=False)

    def __post_init__(self) -> None:
        if all(match.identical for match in self.metrics):
            self.outcome = EXACT
        elif self.mode == "tolerance" and not any(match.mismatch for match in self.metrics):
            self.outcome = WITHIN_TOLERANCE
        else:
            self.outcome = DIFFERS

    @property
    def max_abs_diff(self) -> float:
        return max((match.max_abs_diff for match in self.metrics), default=0.0)

    @property
    def epochs(self) -> int:
        return max((match.epochs for match in self.metrics), default=0)

    @property
    def criterion(self) -> str:
        return "bit for bit" if self.mode == "exact" else f"within rel {self.rel:g} / abs {self.abs:g}"

    def first_mismatch(self) -> MetricMatch | None:
        """The earliest epoch outside the criterion (a missing metric first, best_* summaries last)."""
        return min(
            (match for match in self.metrics if match.mismatch),
            default=None,
            key=lambda m: (m.key.startswith("best_"), -1 if m.mismatch_epoch is None else m.mismatch_epoch),
        )


def run(cfg: DictConfig) -> str:
    """Reproduce train run ``cfg.run_id``; return the reproduction's run id (exit 1 when its metrics differ)."""
    if not cfg.run_id:
        raise StepError("run_id is required: the train run to reproduce (-P run_id=<train run id>)")
    if cfg.compare not in COMPARE_MODES:
        raise StepError(f"compare={cfg.compare!r}: expected one of {', '.join(COMPARE_MODES)}")
    client = MlflowClient()
    recorded = recorded_train_run(client, cfg.run_id)
    root = project_repository(Path.cwd())
    require_commit(root, recorded)
    require_commit_targets(root, recorded)

    with lineage.step_run("reproduce", cfg) as active:
        mlflow.set_tag(lineage.TAG_REPRODUCES, recorded.run_id)
        child = client.create_run(
            active.info.experiment_id,
            run_name=f"reproduce-{recorded.run.info.run_name or recorded.run_id[:8]}",
            tags={
                lineage.TAG_REPRODUCES: recorded.run_id,
                "mlflow.parentRunId": active.info.run_id,
                "mlflow.source.git.commit": recorded.commit,
            },
        )
        new_id = child.info.run_id
        mlflow.set_tag(lineage.TAG_REPRODUCTION_RUN, new_id)
        log.info(
            "reproducing train run %s as %s: commit %s, data %s",
            recorded.run_id,
            new_id,
            recorded.commit[:12],
            recorded.data_uri,
        )
        with checkout_of(root, recorded.commit) as folder:
            write_recorded_config(folder, recorded)
            run_old_train_step(client, folder, recorded, new_id, active.info.experiment_id)

        reproduction = client.get_run(new_id)
        if lineage.TAG_GIT_COMMIT not in reproduction.data.tags:  # an old train step that recorded no commit
            client.set_tag(new_id, lineage.TAG_GIT_COMMIT, recorded.commit)
        mode = comparison_mode(cfg.compare, recorded, reproduction)
        comparison = compare_runs(
            client,
            recorded.run,
            reproduction,
            cfg.ignore_metrics,
            mode,
            float(cfg.tolerance.rel),
            float(cfg.tolerance.abs),
        )
        config_note = config_difference(recorded, new_id)
        client.set_tag(new_id, lineage.TAG_REPRODUCED, comparison.outcome)
        mlflow.set_tag(lineage.TAG_REPRODUCED, comparison.outcome)
        mlflow.log_metric("max_abs_metric_diff", comparison.max_abs_diff)
        mlflow.log_text(report_markdown(recorded, new_id, comparison, config_note), REPORT_ARTIFACT)
        log.info("%s", config_note)
        print(summary_line(recorded.run_id, new_id, comparison), flush=True)
        if comparison.outcome == DIFFERS:
            raise SystemExit(EXIT_DIFFERS)  # the reproduce run ends FAILED
    return new_id


# -- what the train run recorded ----------------------------------------------------------------------------------


def recorded_train_run(client: MlflowClient, run_id: str) -> RecordedRun:
    """The train run's commit, resolved config and pinned data URI; a StepError saying why it cannot be
    reproduced otherwise."""
    try:
        run = resolve_run(client, run_id, "run_id")  # a full id, or a unique prefix as report.md shows it
    except RunIdError as error:
        raise StepError(str(error)) from None
    run_id = run.info.run_id
    tags = run.data.tags
    step = tags.get(lineage.TAG_STEP)
    if step != "train":
        raise StepError(f"run {run_id} is not a train run ({lineage.TAG_STEP}={step or '(none)'})")
    if run.info.status != "FINISHED":
        raise StepError(
            f"run {run_id} is {run.info.status}, not FINISHED: there are no complete metrics to compare with"
        )
    commit = tags.get(lineage.TAG_GIT_COMMIT)
    if not commit:
        raise StepError(
            f"run {run_id} recorded no git commit ({lineage.TAG_GIT_COMMIT}): the code that ran is "
            f"not recoverable, so it cannot be reproduced"
        )
    if not COMMIT_ID.match(commit):
        raise StepError(f"run {run_id} recorded {lineage.TAG_GIT_COMMIT}={commit!r}, which is not a commit id")
    if tags.get(lineage.TAG_GIT_DIRTY) == "true":
        raise StepError(
            f"run {run_id} ran uncommitted changes on top of commit {commit[:12]} "
            f"({lineage.TAG_GIT_DIRTY}=true): the code that ran is not recoverable, so it cannot be "
            f"reproduced"
        )
    data_uri = tags.get(lineage.TAG_DATA_URI)
    if not data_uri or not data_uri.startswith("lakefs://"):
        raise StepError(f"run {run_id} recorded no pinned data URI ({lineage.TAG_DATA_URI})")
    try:
        text = load_artifact_text(run_id, CONFIG_ARTIFACT)
    except (MlflowException, OSError):
        raise StepError(
            f"run {run_id} has no {CONFIG_ARTIFACT} artifact: its resolved config is not recoverable"
        ) from None
    config = config_mapping(text)
    if config is None:
        raise StepError(f"run {run_id}: {CONFIG_ARTIFACT} is not a config mapping")
    require_pinned_data(run_id, data_uri, tags, config)
    return RecordedRun(run, commit, config, data_uri)


def require_pinned_data(run_id: str, data_uri: str, tags: Mapping[str, str], config: Mapping) -> None:
    """Refuse (one line) a recorded data URI that is not the data commit the run recorded, in the repository it
    recorded: a branch or tag may have moved since, so only a commit id reproduces the data."""
    from segmodels.versioning import LakeFSError, LakeFSUri

    shown = f"{lineage.TAG_DATA_URI}={data_uri[:80]!r}"
    try:
        uri = LakeFSUri.parse(data_uri)
    except LakeFSError:
        raise StepError(f"run {run_id} recorded {shown}, which is not a lakefs://<repo>/<commit>/<path> URI") from None
    commit = tags.get(lineage.TAG_DATA_COMMIT, "")
    if not LAKEFS_COMMIT_ID.fullmatch(uri.ref) or uri.ref != commit:
        raise StepError(
            f"run {run_id} recorded {shown}, whose ref {uri.ref[:80]!r} is not the data commit id it "
            f"recorded ({lineage.TAG_DATA_COMMIT}={commit[:80]!r}): only a commit id reproduces the data"
        )
    lakefs = config.get("lakefs") if isinstance(config.get("lakefs"), dict) else {}
    if any(repo != uri.repo for repo in (tags.get(lineage.TAG_LAKEFS_REPO), lakefs.get("repo", uri.repo))):
        recorded_repo = str(tags.get(lineage.TAG_LAKEFS_REPO))[:80]
        raise StepError(
            f"run {run_id} recorded {shown}, in repository {uri.repo[:80]!r}, not the one it trained "
            f"from ({lineage.TAG_LAKEFS_REPO}={recorded_repo!r} and its config's lakefs.repo)"
        )


def config_mapping(text: str) -> dict | None:
    """A config YAML as a plain dict, read as Hydra reads YAML (OmegaConf's loader); None when not a mapping."""
    try:
        config = OmegaConf.create(text)
    except Exception:  # noqa: BLE001 - OmegaConf raises a YAML error or its own for a non-mapping
        return None
    return OmegaConf.to_container(config) if isinstance(config, DictConfig) else None


def load_artifact_text(run_id: str, path: str) -> str:
    """A run's text artifact, read without MLflow's progress bar (the step's output stays its own lines)."""
    name = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    saved = os.environ.get(name)
    os.environ[name] = "false"
    try:
        return mlflow.artifacts.load_text(f"runs:/{run_id}/{path}")
    finally:
        if saved is None:
            del os.environ[name]
        else:
            os.environ[name] = saved


# -- the recorded code --------------------------------------------------------------------------------------------


def git(cwd: Path | None, *args: str) -> subprocess.CompletedProcess:
    """``git <args>`` in ``cwd`` (output captured), in an environment naming no other repository."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY")
    }
    return subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=False)


def git_reason(result: subprocess.CompletedProcess) -> str:
    lines = [line.strip() for line in (result.stderr or result.stdout).splitlines() if line.strip()]
    return lines[0] if lines else f"exit status {result.returncode}"


def project_repository(start: Path) -> Path:
    """The top of the git repository holding ``start`` (the project folder under ``mlflow run .``), else of the
    one holding this package's source."""
    for candidate in (start, Path(__file__).resolve().parents[2]):
        result = git(candidate, "rev-parse", "--show-toplevel")
        if result.returncode == 0:
            return Path(result.stdout.strip())
    raise StepError(
        f"{start} is not in a git repository: the recorded commit is checked out from the project's "
        f"repository, so run reproduce from the project folder"
    )


def require_commit(root: Path, recorded: RecordedRun) -> None:
    """Refuse (one line) when the recorded commit is not in the project's repository."""
    if git(root, "cat-file", "-e", f"{recorded.commit}^{{commit}}").returncode != 0:
        raise StepError(
            f"commit {recorded.commit} (recorded by run {recorded.run_id}) is not in the git repository "
            f"at {root}; fetch it (git fetch) and run reproduce again"
        )


def commit_conf_files(root: Path, commit: str) -> dict[str, str]:
    """``{path under conf/: text}`` of every YAML file in ``commit``'s ``conf/`` (one ``git archive``)."""
    result = subprocess.run(
        ["git", "archive", "--format=tar", commit, "conf"], cwd=root, capture_output=True, check=False
    )
    if result.returncode != 0:
        raise StepError(f"commit {commit[:12]}: cannot read its conf/ ({result.stderr.decode(errors='replace')[:200]})")
    with tarfile.open(fileobj=io.BytesIO(result.stdout)) as archive:
        return {
            member.name[len("conf/") :]: archive.extractfile(member).read().decode()
            for member in archive.getmembers()
            if member.isfile() and member.name.endswith(".yaml")
        }


def require_commit_targets(root: Path, recorded: RecordedRun) -> None:
    """Refuse (one line naming the key and the target) a recorded config holding a ``_target_`` that its commit's
    ``conf/`` does not name at that key: the old code would build whatever it names (:mod:`segmodels.targets`)."""
    allowed = conf_targets(commit_conf_files(root, recorded.commit))
    try:
        check_targets(recorded.config, "", allowed)
    except ConfigError as refused:
        raise StepError(
            f"run {recorded.run_id}: {CONFIG_ARTIFACT}: {refused} (checked against commit "
            f"{recorded.commit[:12]}'s conf/)"
        ) from None


@contextmanager
def checkout_of(root: Path, commit: str) -> Iterator[Path]:
    """``<segmodels home>/reproduce/<commit>/``, a checkout of ``commit`` made once, held (a file lock) while the
    caller writes its config and trains in it: two reproductions of one commit take turns."""
    base = segmodels_home() / CHECKOUTS
    base.mkdir(parents=True, exist_ok=True)
    folder = base / commit
    with open(base / f"{commit}.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not checkout_complete(folder, commit):
            make_checkout(root, commit, folder)
        yield folder


def checkout_complete(folder: Path, commit: str) -> bool:
    """Whether ``folder`` is a finished checkout of ``commit`` whose tracked files nobody has changed since."""
    if not (folder / ".git" / COMPLETE_MARKER).is_file():
        return False
    head = git(folder, "rev-parse", "HEAD")
    changed = git(folder, "status", "--porcelain", "--untracked-files=no")
    return head.stdout.strip() == commit and changed.returncode == 0 and not changed.stdout.strip()


def make_checkout(root: Path, commit: str, folder: Path) -> None:
    """Clone the project's repository sharing its objects, detach at ``commit`` and mark ``conf/train.yaml``
    skip-worktree; built beside ``folder`` and moved into place once complete."""
    staging = folder.with_name(f".{folder.name}.partial")
    for stale in (staging, folder):
        if stale.exists():
            shutil.rmtree(stale)
    log.info("checking out commit %s into %s", commit[:12], folder)
    steps = (
        (None, ("clone", "--quiet", "--shared", "--no-checkout", str(root), str(staging))),
        (staging, ("-c", "advice.detachedHead=false", "checkout", "--quiet", "--detach", commit)),
    )
    for cwd, args in steps:
        result = git(cwd, *args)
        if result.returncode != 0:
            shutil.rmtree(staging, ignore_errors=True)
            raise StepError(f"cannot check out commit {commit} from {root}: {git_reason(result)}")
    if not (staging / TRAIN_CONFIG).is_file() or not (staging / "steps" / "train.py").is_file():
        shutil.rmtree(staging, ignore_errors=True)
        raise StepError(f"commit {commit} has no {TRAIN_CONFIG} and steps/train.py: not a segmodels train step")
    result = git(staging, "update-index", "--skip-worktree", TRAIN_CONFIG)
    if result.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise StepError(f"commit {commit}: {TRAIN_CONFIG} is not tracked ({git_reason(result)})")
    (staging / ".git" / COMPLETE_MARKER).write_text(commit + "\n")
    staging.rename(folder)


def schema_defaults(train_yaml: str) -> list[str]:
    """The plain entries (schemas, ``_self_``) of a ``conf/train.yaml``'s defaults list, group choices left out:
    the recorded config already holds each group's values."""
    document = yaml.safe_load(train_yaml) or {}
    defaults = [entry for entry in document.get("defaults", []) if isinstance(entry, str) and entry != "_self_"]
    return [*defaults, "_self_"]


def write_recorded_config(folder: Path, recorded: RecordedRun) -> None:
    """Make the checkout's ``conf/train.yaml`` the recorded resolved config, data pinned."""
    path = folder / TRAIN_CONFIG
    committed = git(folder, "show", f"HEAD:{TRAIN_CONFIG}")  # the commit's own file: its schema defaults
    if committed.returncode != 0:
        raise StepError(f"{folder}: cannot read the commit's {TRAIN_CONFIG} ({git_reason(committed)})")
    defaults = schema_defaults(committed.stdout)
    config = {**recorded.config, "data_ref": recorded.data_uri}
    path.write_text(
        f"# Written by `segmodels reproduce`: the resolved config of train run {recorded.run_id}\n"
        f"# (its {CONFIG_ARTIFACT} artifact) with data_ref pinned to the data commit it trained on.\n"
        + yaml.safe_dump({"defaults": defaults}, sort_keys=False)
        + OmegaConf.to_yaml(OmegaConf.create(config))
    )


def train_command(folder: Path, nproc: str | None) -> list[str]:
    """The checkout's own ``train`` entry point (its ``MLproject``), in this interpreter, with ``--nproc``."""
    command = ["python", "steps/train.py"]
    mlproject = folder / "MLproject"
    if mlproject.is_file():
        entry = ((yaml.safe_load(mlproject.read_text()) or {}).get("entry_points") or {}).get("train") or {}
        if entry.get("command"):
            command = shlex.split(entry["command"])
    if command[0] in ("python", "python3"):
        command[0] = sys.executable
    if nproc and nproc != "1":
        command += ["--nproc", nproc]
    return command


def absolute_tracking_uri(uri: str) -> str:
    """``uri`` with a relative sqlite or folder path made absolute (the old code runs in another folder)."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + str(Path(uri[len("sqlite:///") :]).absolute())
    if "://" not in uri and Path(uri).exists():
        return str(Path(uri).absolute())
    return uri


def train_environment(folder: Path, run_id: str, experiment_id: str) -> dict[str, str]:
    """This process's environment, with the checkout's code first on the path and MLflow, the segmodels home
    (the embedded lakeFS and the data cache) and lakeFS settings as this step has them."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("MLFLOW_EXPERIMENT_NAME", "GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE")
    }
    env.update(
        {
            "PYTHONPATH": os.pathsep.join([str(folder), *filter(None, [os.environ.get("PYTHONPATH")])]),
            "MLFLOW_RUN_ID": run_id,
            "MLFLOW_EXPERIMENT_ID": experiment_id,
            "MLFLOW_TRACKING_URI": absolute_tracking_uri(mlflow.get_tracking_uri()),
            "SEGMODELS_HOME": str(segmodels_home()),
        }
    )
    return env


def run_old_train_step(
    client: MlflowClient, folder: Path, recorded: RecordedRun, run_id: str, experiment_id: str
) -> None:
    """Run the commit's train step in ``folder`` into run ``run_id``; its output streams through."""
    command = train_command(folder, recorded.run.data.params.get("nproc"))
    log.info("running %s in %s", shlex.join(command), folder)
    try:
        returncode = subprocess.run(
            command, cwd=folder, env=train_environment(folder, run_id, experiment_id), check=False
        ).returncode
    except BaseException:
        client.set_terminated(run_id, "KILLED")
        raise
    if returncode != 0:
        if client.get_run(run_id).info.status == "RUNNING":
            client.set_terminated(run_id, "FAILED")
        raise StepError(
            f"the train step of commit {recorded.commit[:12]} exited with status {returncode} "
            f"(reproduction run {run_id}, marked failed); its output is above"
        )


# -- comparing ----------------------------------------------------------------------------------------------------


def used_cuda(run: Run, device: str) -> bool:
    """Whether ``run`` trained on CUDA: its ``trainer.device``, or for ``auto`` its GPU system metrics."""
    if device == "auto":
        return any(key.startswith("system/gpu_") for key in run.data.metrics)
    return device.startswith("cuda")


def comparison_mode(compare: str, recorded: RecordedRun, reproduction: Run) -> str:
    """``exact`` or ``tolerance``: ``compare`` when forced; for ``auto``, tolerance when either run used CUDA
    (the reproduction's ``auto`` device is this machine's)."""
    if compare != "auto":
        return compare
    device = str((recorded.config.get("trainer") or {}).get("device", "auto"))
    if used_cuda(recorded.run, device) or used_cuda(reproduction, device):
        return "tolerance"
    if device == "auto":
        import torch

        if torch.cuda.is_available():
            return "tolerance"
    return "exact"


def compared_keys(run: Run, ignore: Sequence[str]) -> list[str]:
    return sorted(key for key in run.data.metrics if not any(fnmatch.fnmatchcase(key, pattern) for pattern in ignore))


def metric_history(client: MlflowClient, run_id: str, key: str) -> dict[int, float]:
    """``{step: value}`` of a metric (the last value logged at a step wins)."""
    history = sorted(client.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))
    return {metric.step: float(metric.value) for metric in history}


def same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def _epoch_numbers(history: Mapping[int, float]) -> list[int]:
    """The epochs of a metric history (MLflow steps, from 0) as the log counts them, from 1."""
    return [step + 1 for step in sorted(history)]


def compare_histories(
    key: str,
    original: Mapping[int, float],
    reproduction: Mapping[int, float] | None,
    mode: str,
    rel: float,
    abs_: float,
) -> MetricMatch:
    """Compare one metric step by step: ``exact`` needs identical values, ``tolerance``
    ``|a - b| <= abs + rel * |a|``."""
    match = MetricMatch(key)
    if not reproduction:
        match.identical, match.mismatch = False, "missing in the reproduction"
        return match
    if sorted(original) != sorted(reproduction):
        match.identical = False
        match.mismatch = f"epochs {_epoch_numbers(original)} vs {_epoch_numbers(reproduction)}"
    for step in sorted(set(original) & set(reproduction)):
        a, b = original[step], reproduction[step]
        match.epochs += 1
        if same(a, b):
            continue
        match.identical = False
        diff = abs(a - b)
        if not math.isnan(diff):
            match.max_abs_diff = max(match.max_abs_diff, diff)
        within = mode == "tolerance" and diff <= abs_ + rel * abs(a)  # NaN against a number: never within
        if not within and match.mismatch is None:
            match.mismatch = f"{a!r} vs {b!r}"
            match.mismatch_epoch = None if key.startswith("best_") else step
    return match


def compare_runs(
    client: MlflowClient, original: Run, reproduction: Run, ignore: Sequence[str], mode: str, rel: float, abs_: float
) -> Comparison:
    """Every metric of ``original`` not ignored, compared with ``reproduction``'s."""
    present = set(reproduction.data.metrics)
    matches = [
        compare_histories(
            key,
            metric_history(client, original.info.run_id, key),
            metric_history(client, reproduction.info.run_id, key) if key in present else None,
            mode,
            rel,
            abs_,
        )
        for key in compared_keys(original, ignore)
    ]
    per_epoch = [m for m in matches if not m.key.startswith("best_")]  # the first differing epoch, then summaries
    matches = per_epoch + [m for m in matches if m.key.startswith("best_")]
    return Comparison(matches, mode, rel, abs_)


def config_difference(recorded: RecordedRun, new_id: str) -> str:
    """Whether the reproduction recorded the original's config (``data_ref`` aside): one line."""
    try:
        config = config_mapping(load_artifact_text(new_id, CONFIG_ARTIFACT)) or {}
    except (MlflowException, OSError):
        return f"the reproduction recorded no {CONFIG_ARTIFACT}"
    differing = sorted(
        key
        for key in set(config) | set(recorded.config)
        if key != "data_ref" and config.get(key) != recorded.config.get(key)
    )
    if differing:
        return f"config: the reproduction's differs from the recorded one in {', '.join(differing)}"
    return "config: the reproduction composed the recorded config (data_ref pinned)"


def summary_line(run_id: str, new_id: str, comparison: Comparison) -> str:
    head = f"reproduced run {run_id} as {new_id}"
    count = f"({len(comparison.metrics)} metrics x {comparison.epochs} epochs)"
    if comparison.outcome == EXACT:
        return f"{head}: per-epoch metrics identical {count}"
    if comparison.outcome == WITHIN_TOLERANCE:
        return (
            f"{head}: per-epoch metrics within tolerance {count}, rel {comparison.rel:g} / abs "
            f"{comparison.abs:g}, max abs diff {comparison.max_abs_diff:.3g}"
        )
    return f"{head}: per-epoch metrics differ ({comparison.criterion}): {comparison.first_mismatch().describe()}"


def report_markdown(recorded: RecordedRun, new_id: str, comparison: Comparison, config_note: str) -> str:
    def result(match: MetricMatch) -> str:
        if match.identical:
            return "identical"
        return f"differs: {match.describe()}" if match.mismatch else "within tolerance"

    rows = "\n".join(f"| `{m.key}` | {m.epochs} | {m.max_abs_diff:.6g} | {result(m)} |" for m in comparison.metrics)
    return (
        f"# Reproduction of train run {recorded.run_id}\n\n"
        f"- reproduction run: {new_id}\n- code: git commit {recorded.commit}\n- data: {recorded.data_uri}\n"
        f"- comparison: {comparison.criterion}\n- outcome: **{comparison.outcome}** "
        f"(max abs diff {comparison.max_abs_diff:.6g})\n- {config_note}\n\n"
        f"| metric | epochs compared | max abs diff | result |\n|---|---|---|---|\n{rows}\n"
    )
