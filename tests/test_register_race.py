"""Concurrent register runs: two real processes on one sqlite store end with the better model @champion, the
other @challenger and the old champion @previous, whichever writes first; and settle(), the repair rule."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from test_register import PROJECT, make_train_run, register_run, step_env, tracking  # noqa: F401 (fixture)

from segmodels.pipeline.register import Claim, Settlement, settle
from segmodels.tracking import lineage

# Loaded into both register processes (PYTHONPATH): after gate 2 decided, wait until both processes decided, so
# both read the same old champion before either writes; then sleep RACE_DELAY_S, which picks who writes first.
BARRIER = """
import os, time
from segmodels.pipeline import register

def decide(*args, _decide=register.decide, **kwargs):
    outcome = _decide(*args, **kwargs)
    barrier = os.environ["RACE_BARRIER"]
    open(os.path.join(barrier, str(os.getpid())), "w").close()
    deadline = time.monotonic() + 120
    while len(os.listdir(barrier)) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(float(os.environ["RACE_DELAY_S"]))
    return outcome

register.decide = decide
"""


def race(tmp_path, model_name: str, run_delays: dict[str, float]) -> list[subprocess.CompletedProcess]:
    """Register each run in its own process at once, both past gate 2 before either moves an alias."""
    hook, barrier = tmp_path / f"hook-{model_name}", tmp_path / f"barrier-{model_name}"
    hook.mkdir()
    barrier.mkdir()
    (hook / "sitecustomize.py").write_text(textwrap.dedent(BARRIER))
    processes = []
    for run_id, delay in run_delays.items():
        env = step_env(tmp_path)
        env.update({"PYTHONPATH": f"{hook}:{PROJECT}", "RACE_BARRIER": str(barrier), "RACE_DELAY_S": str(delay)})
        processes.append(
            subprocess.Popen(
                [sys.executable, "steps/register.py", "--run_id", run_id, "--model_name", model_name],
                cwd=PROJECT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    results = []
    for process in processes:
        output, _ = process.communicate(timeout=180)
        results.append(subprocess.CompletedProcess(process.args, process.returncode, output))
    return results


def aliased_runs(client, model_name: str) -> dict[str, str]:
    """alias -> the train run of the version it names."""
    return {
        alias: client.get_model_version(model_name, str(version)).tags[lineage.TAG_TRAIN_RUN]
        for alias, version in client.get_registered_model(model_name).aliases.items()
    }


@pytest.mark.slow
def test_two_concurrent_register_runs_crown_the_better_model(tracking, tmp_path):  # noqa: F811
    # the better run writes first, then last, then both at once (the case: the worse one wrote last)
    for round_, (delay_a, delay_b) in enumerate([(0.0, 1.5), (1.5, 0.0), (0.0, 0.0)]):
        model_name = f"seg{round_}"
        old = make_train_run(0.358)
        register_run(old, f"model_name={model_name}")
        better, worse = make_train_run(0.536), make_train_run(0.482)
        results = race(tmp_path, model_name, {better: delay_a, worse: delay_b})
        assert [result.returncode for result in results] == [0, 0], [result.stdout[-2000:] for result in results]
        assert aliased_runs(tracking, model_name) == {"champion": better, "challenger": worse, "previous": old}, (
            f"round {round_}"
        )


def claims(*rows: tuple[str, str, str, bool]) -> dict[str, Claim]:
    """Claims from (version, base, base_id, force); each claim's id is 'id<version>'."""
    return {version: Claim(version, f"id{version}", base, base_id, force) for version, base, base_id, force in rows}


SCORES = {"1": 0.358, "2": 0.536, "3": 0.482, "4": 0.6, "5": 0.1}


def by_score(candidate: str, holder: str) -> bool:
    return SCORES[candidate] > SCORES[holder]


@pytest.mark.parametrize("order", [("2", "3"), ("3", "2")])
def test_settle_crowns_the_best_claim_of_a_race_and_the_beaten_holder_is_previous(order):
    # v2 and v3 both beat the unclaimed champion v1; their version order does not change the outcome
    race = claims(*((version, "1", "", False) for version in order))
    assert settle(race, "1", by_score) == Settlement(champion="2", previous="1", challenger="3")


def test_settle_compares_a_claim_that_beat_the_winner_with_it_and_ignores_other_races():
    race = claims(
        ("2", "1", "", False), ("3", "1", "", False), ("4", "2", "id2", False), ("5", "1", "old", False)
    )  # v5 beat v1 under an earlier claim of v1: another race
    assert settle(race, "1", by_score) == Settlement(champion="4", previous="2", challenger="3")
    # a claim that beat v2 under an older claim of v2 is no rival now
    assert settle(claims(("2", "1", "", False), ("4", "2", "stale", False)), "1", by_score) == Settlement(
        champion="2", previous="1", challenger=None
    )


def test_settle_keeps_the_holder_when_no_claim_beats_it_and_a_forced_claim_wins():
    assert settle(claims(("5", "4", "", False)), "4", by_score) == Settlement("4", None, "5")
    assert settle(claims(("2", "1", "", False), ("5", "1", "", True)), "1", by_score) == Settlement(
        champion="5", previous="1", challenger="2"
    )
    assert settle(claims(("3", "", "", False), ("2", "", "", False)), "", by_score) == Settlement(
        champion="2", previous=None, challenger="3"
    )
