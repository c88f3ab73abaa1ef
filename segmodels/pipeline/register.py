"""The ``register`` step: pick a train run's model, gate it on a metric, register it (its source: the one copy
in lakeFS, pinned to its commit) and move the aliases only forward.

Candidate: ``run_id``; else with ``interactive=true`` the one picked from a table of train runs; else the best
finished train run (by ``metric``) of ``parent_run_id``'s children, or of the experiment. Gate 1: the metric must
pass ``threshold``, or nothing is registered (StepError). Gate 2: the model takes ``@alias`` (champion) only when
there is none yet, or it beats the champion, or ``force=true``; the version that held ``@alias`` then gets
``@previous_alias``. The champion is beaten on ``metric`` when both were validated on the same lakeFS data commit;
when not, both models are evaluated on the candidate's validation split and their val mIoU compared. A model
that does not beat it is registered as ``@challenger_alias`` and the champion stays. A run registered before is
not registered twice: its version goes through gate 2 again.

Concurrent runs (other processes, other machines on one tracking server; MLflow has no transactions) move
``@alias`` by compare, claim and repair: a winner tags its version with a claim naming the version it beat, checks
that the alias still points there, then re-reads the claims of that race and points the aliases at the best by gate
2 (``settle``), again after a short random wait until nothing changes. The end state is the one the race's claims
decide, whichever write lands last: the best @alias, the version the winner beat @previous_alias, the last
registered loser @challenger_alias."""

from __future__ import annotations

import json
import logging
import random
import time
import uuid
from dataclasses import dataclass
from typing import Callable

import mlflow
from mlflow.entities import Run
from mlflow.entities.model_registry import ModelVersion
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from segmodels.dataset_store import fetch_dataset
from segmodels.inference.evaluate import evaluate_split
from segmodels.pipeline import StepError
from segmodels.pipeline.interactive import INSTEAD, choose, timestamp
from segmodels.tracking import lineage
from segmodels.tracking.lineage import short_commit
from segmodels.tracking.models import load_segmentation_model, register_version
from segmodels.tracking.run_ids import RunIdError, resolve_run
from segmodels.tracking.stores import is_new_store, warn_if_other_store
from segmodels.versioning import connect

log = logging.getLogger(__name__)

CHAMPION, CHALLENGER, UNCHANGED = "champion", "challenger", "unchanged"
TAG_MODEL_ALIAS = "segmodels.model_alias"  # on a register run: the alias the version got (or kept)
TAG_REGISTER_REASON = "segmodels.register_reason"  # on a register run: why (the comparison with the champion)
FORCE_HINT = "; -P force=true promotes it anyway"
REEVALUATION_SPLIT = "val"
CANDIDATES_SHOWN = 20  # rows of the interactive table
TAG_CLAIM = "segmodels.claim."  # + alias, on a version: its claim to the alias (see Claim)
SETTLE_WAIT_S = (0.2, 0.8)  # random wait before re-reading the claims of a race
SETTLE_ROUNDS = 8  # re-reads before giving up on a race that keeps changing


def train_runs(
    client: MlflowClient, experiment_id: str, parent_run_id: str, metric: str, greater_is_better: bool, max_results: int
) -> list[Run]:
    """Finished train runs of the experiment (children of ``parent_run_id`` when given), best ``metric`` first
    (runs without the metric last)."""
    where = f"tags.`{lineage.TAG_STEP}` = 'train' and attributes.status = 'FINISHED'"
    if parent_run_id:
        where += f" and tags.`mlflow.parentRunId` = '{parent_run_id}'"
    order = "DESC" if greater_is_better else "ASC"
    return client.search_runs(
        [experiment_id],
        filter_string=where,
        max_results=max_results,
        order_by=[f"metrics.`{metric}` {order}", "attributes.start_time DESC"],
    )


def candidate_run(client: MlflowClient, cfg: DictConfig, experiment_id: str) -> Run:
    """The train run whose model to register (see the module)."""
    try:
        if cfg.run_id:
            return resolve_run(client, cfg.run_id, "run_id")
        parent = resolve_run(client, cfg.parent_run_id, "parent_run_id") if cfg.parent_run_id else None
    except RunIdError as error:
        raise StepError(str(error)) from None
    parent_run_id = parent.info.run_id if parent else ""
    if parent:
        experiment_id = parent.info.experiment_id
    where = f"children of run {parent_run_id}" if parent else f"experiment {experiment_id}"
    if cfg.interactive:
        runs = train_runs(client, experiment_id, parent_run_id, cfg.metric, cfg.greater_is_better, CANDIDATES_SHOWN)
        rows = [
            (
                run.info.run_id,
                metric_text(run.data.metrics.get(cfg.metric)),
                short_commit(run.data.tags.get(lineage.TAG_DATA_COMMIT)),
                timestamp(run.info.start_time),
                run.info.run_name,
            )
            for run in runs
        ]
        picked = choose(
            f"finished train runs of {where}, best {cfg.metric} first",
            ("run id", cfg.metric, "data commit", "started", "name"),
            rows,
            INSTEAD["register"],
        )
        return runs[picked]
    runs = train_runs(client, experiment_id, parent_run_id, cfg.metric, cfg.greater_is_better, 1)
    if not runs:
        raise StepError(f"no finished train run in {where}; pass run_id=<id>")
    return runs[0]


def metric_text(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def passes_gate(value: float, threshold: float, greater_is_better: bool) -> bool:
    """Whether a metric value clears the threshold in the metric's direction."""
    return value >= threshold if greater_is_better else value <= threshold


def beats(value: float, other: float, greater_is_better: bool) -> bool:
    """Whether a metric value is strictly better than another in the metric's direction."""
    return value > other if greater_is_better else value < other


def alias_holder(client: MlflowClient, model_name: str, alias: str) -> ModelVersion | None:
    """The version of a registered model under an alias; None when the model or the alias does not exist."""
    try:
        model = client.get_registered_model(model_name)
    except mlflow.exceptions.MlflowException as error:
        if error.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    if alias not in model.aliases:
        return None
    return client.get_model_version(model_name, str(model.aliases[alias]))


@dataclass(frozen=True)
class Comparison:
    """The candidate's and the champion's score, measured the same way (``how``)."""

    candidate: float
    champion: float
    how: str
    greater_is_better: bool


def decide(
    alias: str, champion: ModelVersion | None, comparison: Comparison | None, not_compared: str, force: bool
) -> tuple[str, str]:
    """Gate 2: the outcome (CHAMPION or CHALLENGER) and why, for a candidate that passed the threshold;
    ``not_compared`` says why there is no ``comparison``."""
    if champion is None:
        return CHAMPION, f"no @{alias} before"
    against = f"@{alias} version {champion.version}"
    if comparison is None:
        won, why = False, f"not compared with {against}: {not_compared}"
    else:
        won = beats(comparison.candidate, comparison.champion, comparison.greater_is_better)
        why = (
            f"{comparison.how}: {comparison.candidate:.4f} {'beats' if won else 'does not beat'} {against} "
            f"({comparison.champion:.4f})"
        )
    if won:
        return CHAMPION, why
    if force:
        return CHAMPION, f"force=true; {why}"
    return CHALLENGER, why


def compare(
    cfg: DictConfig, value: float, tags: dict[str, str], champion: ModelVersion
) -> tuple[Comparison | None, str]:
    """Score the candidate against the champion: on ``cfg.metric`` when both were validated on the same data
    commit, else by evaluating both models on the candidate's validation split. ``(None, why)`` when neither
    can be done."""
    data_commit = tags.get(lineage.TAG_DATA_COMMIT)
    try:
        champion_value = float(champion.tags[cfg.metric])
    except (KeyError, ValueError):
        champion_value = None
    if data_commit and champion.tags.get(lineage.TAG_DATA_COMMIT) == data_commit and champion_value is not None:
        return Comparison(
            value, champion_value, f"{cfg.metric} on data commit {short_commit(data_commit)}", cfg.greater_is_better
        ), ""
    if not tags.get(lineage.TAG_DATA_URI):
        return None, f"the candidate run has no {lineage.TAG_DATA_URI} tag to evaluate both on"
    log.info(
        "@%s version %s was validated on data commit %s, the candidate on %s: evaluating both on the "
        "candidate's %r split",
        cfg.alias,
        champion.version,
        short_commit(champion.tags.get(lineage.TAG_DATA_COMMIT)),
        short_commit(data_commit),
        REEVALUATION_SPLIT,
    )
    return reevaluate(tags, f"models:/{cfg.model_name}/{champion.version}")


def reevaluate(tags: dict[str, str], champion_uri: str) -> tuple[Comparison | None, str]:
    """Val mIoU of the candidate (a train run's ``tags``) and the champion, both on the candidate's data, at full
    resolution; ``(None, why)`` when their classes differ or the split has no labelled image."""
    data_root = fetch_dataset(connect(), tags[lineage.TAG_DATA_URI])
    model, spec = load_segmentation_model(tags[lineage.TAG_MODEL_URI])
    champion_model, champion_spec = load_segmentation_model(champion_uri)
    if champion_spec.class_names != spec.class_names:
        return None, (f"it predicts classes {champion_spec.class_names}, the candidate {spec.class_names}")
    try:
        scores = [
            evaluate_split(m, sp, data_root, REEVALUATION_SPLIT)["miou"]
            for m, sp in ((model, spec), (champion_model, champion_spec))
        ]
    except ValueError as error:
        return None, str(error)
    mlflow.log_metrics({"reevaluated_candidate_val_miou": scores[0], "reevaluated_champion_val_miou": scores[1]})
    how = f"val mIoU of both on the candidate's data commit {short_commit(tags.get(lineage.TAG_DATA_COMMIT))}"
    return Comparison(scores[0], scores[1], how, True), ""


@dataclass(frozen=True)
class Claim:
    """A version's claim to an alias: it beat ``base`` (``""``: there was no holder) while ``base`` held the alias
    under the claim ``base_id`` (``""``: an unclaimed holder); ``force``: it takes the alias without beating it."""

    version: str
    id: str
    base: str
    base_id: str
    force: bool

    def tag_value(self) -> str:
        return json.dumps({"id": self.id, "base": self.base, "base_id": self.base_id, "force": self.force})


def claim_of(version: ModelVersion, alias: str) -> Claim | None:
    """The claim a version's tag records for ``alias``; None when it has none (or one this code did not write)."""
    try:
        fields = json.loads(version.tags[TAG_CLAIM + alias])
        return Claim(
            str(version.version), str(fields["id"]), str(fields["base"]), str(fields["base_id"]), bool(fields["force"])
        )
    except (KeyError, TypeError, ValueError):
        return None


@dataclass(frozen=True)
class Settlement:
    """Where a race's claims put the aliases: ``champion`` wins, ``previous`` is the version it beat (None: keep
    the alias as it is), ``challenger`` the last registered loser (None: keep it)."""

    champion: str
    previous: str | None
    challenger: str | None


def settle(claims: dict[str, Claim], root: str, wins: Callable[[str, str], bool]) -> Settlement:
    """The outcome of the race from ``root`` (the holder the racers started from; ``""``: none), as if its claims
    had moved the alias one at a time: root, then the claims that beat it, then those that beat one of them, each
    level in version order; a claim takes the alias when it is forced or ``wins(claim, holder)`` (gate 2)."""
    order, level, seen = [], [root], {root}
    while level:
        order += [version for version in level if version]
        parents = {(version, claims[version].id if version in claims else "") for version in level}
        level = sorted(
            (
                claim.version
                for claim in claims.values()
                if (claim.base, claim.base_id) in parents and claim.version not in seen
            ),
            key=int,
        )
        seen.update(level)
    champion = order[0]
    for version in order[1:]:
        if claims[version].force or wins(version, champion):
            champion = version
    beaten, version = set(), champion
    while version in claims and claims[version].base and claims[version].base not in beaten:
        version = claims[version].base
        beaten.add(version)
    losers = [version for version in order if version not in beaten and version not in (champion, root)]
    previous = (claims[champion].base or None) if champion != root else None
    return Settlement(champion, previous, max(losers, key=int) if losers else None)


def move_aliases(client: MlflowClient, cfg: DictConfig, settlement: Settlement) -> bool:
    """Point the aliases where ``settlement`` says; whether any moved."""
    aliases = {alias: str(version) for alias, version in client.get_registered_model(cfg.model_name).aliases.items()}
    wanted = {
        cfg.alias: settlement.champion,
        cfg.previous_alias: settlement.previous,
        cfg.challenger_alias: settlement.challenger,
    }
    challenger = aliases.get(cfg.challenger_alias)
    if (
        challenger
        and challenger != settlement.champion
        and (settlement.challenger is None or int(challenger) > int(settlement.challenger))
    ):
        wanted[cfg.challenger_alias] = challenger  # a loser registered later than the race's losers keeps it
    moved = False
    for alias, version in wanted.items():
        if version is not None and aliases.get(alias) != version:
            client.set_registered_model_alias(cfg.model_name, alias, version)
            moved = True
    if aliases.get(cfg.challenger_alias) == settlement.champion and settlement.challenger is None:
        client.delete_registered_model_alias(cfg.model_name, cfg.challenger_alias)
        moved = True
    return moved


def claim_alias(
    client: MlflowClient,
    cfg: DictConfig,
    version: ModelVersion,
    holder: ModelVersion | None,
    value: float,
    tags: dict[str, str],
    why: str,
) -> tuple[str, ModelVersion | None, str]:
    """Claim ``cfg.alias`` for ``version``, which beat ``holder`` (or is forced), and check that the alias still
    points at ``holder`` or at a rival that beat the same holder (the race ``settle`` decides); when a run that read
    a later holder moved it, compare with the new holder (gate 2) and claim again. Returns the outcome, the holder
    the claim beat and why; a CHALLENGER's claim is withdrawn."""
    tag = TAG_CLAIM + cfg.alias
    while True:
        base_claim = claim_of(holder, cfg.alias) if holder is not None else None
        claim = Claim(
            str(version.version),
            uuid.uuid4().hex,
            str(holder.version) if holder else "",
            base_claim.id if base_claim else "",
            bool(cfg.force),
        )
        client.set_model_version_tag(cfg.model_name, version.version, tag, claim.tag_value())
        now = alias_holder(client, cfg.model_name, cfg.alias)
        rival = claim_of(now, cfg.alias) if now is not None else None
        if (
            now is None
            or str(now.version) in (claim.version, claim.base)
            or (rival is not None and (rival.base, rival.base_id) == (claim.base, claim.base_id))
        ):
            return CHAMPION, holder, why  # unmoved, or moved by a run that read the same holder: settle decides
        log.info("@%s moved to version %s while this run compared: comparing with it", cfg.alias, now.version)
        comparison, not_compared = compare(cfg, value, tags, now)
        outcome, why = decide(cfg.alias, now, comparison, not_compared, cfg.force)
        if outcome != CHAMPION:
            client.delete_model_version_tag(cfg.model_name, version.version, tag)
            return outcome, now, why
        holder = now


def settle_race(
    client: MlflowClient, cfg: DictConfig, holder: ModelVersion | None, decided: dict[tuple[str, str], bool]
) -> Settlement:
    """Move the aliases where the claims of the race from ``holder`` put them (``settle``; its root is the version
    the holder beat, so the holder's rivals count too) and re-read after a random wait until a read moves nothing.
    ``decided``: gate 2 outcomes known already, (candidate, holder) -> won; the others are compared here."""

    def wins(candidate: str, champion: str) -> bool:
        if (candidate, champion) not in decided:
            candidate_tags = versions[candidate].tags
            try:
                value = float(candidate_tags[cfg.metric])
            except (KeyError, ValueError):
                decided[candidate, champion] = False
                return False
            comparison, _ = compare(cfg, value, candidate_tags, versions[champion])
            decided[candidate, champion] = comparison is not None and beats(
                comparison.candidate, comparison.champion, comparison.greater_is_better
            )
        return decided[candidate, champion]

    root = str(holder.version) if holder else ""
    for _ in range(SETTLE_ROUNDS):
        versions = {str(v.version): v for v in client.search_model_versions(f"name = '{cfg.model_name}'")}
        claims = {claim.version: claim for claim in (claim_of(v, cfg.alias) for v in versions.values()) if claim}
        settlement = settle(claims, claims[root].base if root in claims else root, wins)
        if not move_aliases(client, cfg, settlement):
            return settlement
        time.sleep(random.uniform(*SETTLE_WAIT_S))
    log.warning(
        "@%s: the claims of concurrent register runs kept changing; left at version %s", cfg.alias, settlement.champion
    )
    return settlement


def promote(
    client: MlflowClient,
    cfg: DictConfig,
    version: ModelVersion,
    champion: ModelVersion | None,
    value: float,
    tags: dict[str, str],
    why: str,
) -> tuple[str, str, str]:
    """Move ``@alias`` to ``version``, which beat ``champion`` (or is forced), safely against concurrent register
    runs: claim, check, settle (see the module). Returns the outcome, the alias the version holds and why."""
    outcome, champion, why = claim_alias(client, cfg, version, champion, value, tags, why)
    if outcome != CHAMPION:
        client.set_registered_model_alias(cfg.model_name, cfg.challenger_alias, version.version)
        return outcome, cfg.challenger_alias, why
    own = str(version.version)
    decided = {(own, str(champion.version)): True} if champion is not None else {}
    settlement = settle_race(client, cfg, champion, decided)
    if settlement.champion == own:
        if settlement.previous:
            why += f"; version {settlement.previous} is now @{cfg.previous_alias}"
        return CHAMPION, cfg.alias, why
    aliases = client.get_registered_model(cfg.model_name).aliases
    held = next((alias for alias in (cfg.previous_alias, cfg.challenger_alias) if str(aliases.get(alias)) == own), "")
    return (
        CHALLENGER,
        held,
        (f"{why}; but version {settlement.champion}, registered at the same time, beat it and is @{cfg.alias}"),
    )


def version_of_run(client: MlflowClient, model_name: str, run_id: str) -> ModelVersion | None:
    """The version of ``model_name`` already registered from ``run_id``, if any."""
    versions = client.search_model_versions(f"name = '{model_name}' and run_id = '{run_id}'")
    return max(versions, key=lambda v: int(v.version)) if versions else None


def run(cfg: DictConfig) -> str:
    """Register the candidate's model and return its version. Refuses (StepError) when the metric is missing or
    does not pass the threshold; moves ``@alias`` only past gate 2 (see the module)."""
    client = MlflowClient()
    with lineage.step_run("register", cfg) as active:
        try:
            train_run = candidate_run(client, cfg, active.info.experiment_id)
        except StepError:  # on a new store: perhaps the runs are in the store the repository names
            if is_new_store(client):
                warn_if_other_store(connect(), cfg.lakefs.repo, cfg.lakefs.model_branch, cfg.lakefs.data_branch)
            raise
        run_id, tags = train_run.info.run_id, train_run.data.tags
        if lineage.TAG_MODEL_URI not in tags:
            raise StepError(f"run {run_id} has no model (tag {lineage.TAG_MODEL_URI}); is it a finished train run?")
        metrics = train_run.data.metrics
        if cfg.metric not in metrics:
            raise StepError(
                f"metric={cfg.metric!r} not on run {run_id}; it has: {', '.join(sorted(metrics)) or 'no metrics'}"
            )
        value = metrics[cfg.metric]
        threshold = float(cfg.threshold)
        mlflow.set_tag(lineage.TAG_TRAIN_RUN, run_id)
        mlflow.log_metric(f"candidate_{cfg.metric}", value)
        if not passes_gate(value, threshold, cfg.greater_is_better):
            relation = "<" if cfg.greater_is_better else ">"
            raise StepError(
                f"model of run {run_id} not registered: {cfg.metric}={value:.4f} {relation} threshold {threshold}"
            )

        version_tags = {key: tags[key] for key in lineage.LINEAGE_TAGS if key in tags}
        version_tags[lineage.TAG_TRAIN_RUN] = run_id
        version_tags[cfg.metric] = str(value)
        champion = alias_holder(client, cfg.model_name, cfg.alias)
        version = version_of_run(client, cfg.model_name, run_id)
        if version is not None and champion is not None and version.version == champion.version:
            outcome, alias, why = UNCHANGED, cfg.alias, f"run {run_id} is already this version; nothing changed"
        else:
            comparison, not_compared = (None, "") if champion is None else compare(cfg, value, tags, champion)
            outcome, why = decide(cfg.alias, champion, comparison, not_compared, cfg.force)
            if version is None:
                version = register_version(client, cfg.model_name, run_id, tags, version_tags)
            else:
                why = f"run {run_id} is already version {version.version}; {why}"
            if outcome == CHAMPION:
                outcome, alias, why = promote(client, cfg, version, champion, value, tags, why)
            else:
                client.set_registered_model_alias(cfg.model_name, cfg.challenger_alias, version.version)
                alias = cfg.challenger_alias
        mlflow.set_tags(
            {
                lineage.TAG_MODEL_NAME: cfg.model_name,
                lineage.TAG_MODEL_VERSION: version.version,
                lineage.TAG_REGISTER_OUTCOME: outcome,
                TAG_MODEL_ALIAS: alias,
                TAG_REGISTER_REASON: why,
                **{key: value for key, value in version_tags.items() if key.startswith("lakefs.")},
            }
        )
        log.info(
            "%s version %s registered as @%s: %s%s",
            cfg.model_name,
            version.version,
            alias,
            why,
            FORCE_HINT if outcome == CHALLENGER else "",
        )
        return version.version
