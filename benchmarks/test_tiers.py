"""Test tiers benchmark: the fast tier's wall time (goal: under 3 minutes on an idle 2-core machine) and its
slowest tests, each by wall and CPU seconds (setup, call and teardown together).

    python benchmarks/test_tiers.py [--top 10] [--tier "not slow"] [--records FILE] [pytest arguments: -n auto ...]

With ``-n auto`` (as the README runs the tier) the tests run on pytest-xdist workers, which load this plugin too.

Runs `python -m pytest -q -m "<tier>" -p no:cacheprovider` in a child process with this file as a plugin. CPU
seconds (this process's threads and the subprocesses it waited for) change less with other load on the machine
than wall seconds do: on a shared machine read them, and the wall total measured when it is idle.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]
RECORD_ENV = "SEGMODELS_TEST_TIERS_RECORD"


def cpu_seconds() -> float:
    """User and system seconds of this process and of the children it has waited for."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """Plugin hook: append one JSON line per test (its id, wall and CPU seconds) to the file RECORD_ENV names."""
    wall, cpu = time.perf_counter(), cpu_seconds()
    yield
    record = {"test": item.nodeid, "wall": time.perf_counter() - wall, "cpu": cpu_seconds() - cpu}
    with open(os.environ[RECORD_ENV], "a") as out:
        out.write(json.dumps(record) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--top", type=int, default=10, help="how many of the slowest tests to print")
    parser.add_argument("--tier", default="not slow", help="the -m marker expression of the tier")
    parser.add_argument("--records", type=Path, help="also keep every test's JSON line in this file")
    args, pytest_args = parser.parse_known_args()
    with tempfile.TemporaryDirectory() as scratch:
        record = Path(scratch) / "tests.jsonl"
        env = {
            **os.environ,
            RECORD_ENV: str(record),
            "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]),
        }
        command = [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-m",
            args.tier,
            "-p",
            "no:cacheprovider",
            "-p",
            Path(__file__).stem,
        ]
        start, cpu = time.perf_counter(), cpu_seconds()
        completed = subprocess.run(command + pytest_args, cwd=PROJECT, env=env, stdout=subprocess.PIPE, text=True)
        wall, cpu = time.perf_counter() - start, cpu_seconds() - cpu
        lines = record.read_text().splitlines() if record.exists() else []
    if args.records:
        args.records.write_text("".join(line + "\n" for line in lines))
    tests = [json.loads(line) for line in lines]
    out = completed.stdout.strip().splitlines()
    print(
        "\n".join([line for line in out if line.startswith(("FAILED ", "ERROR "))] + out[-1:])
        or "pytest printed nothing"
    )
    load = os.getloadavg()[0]
    print(f"tier -m {args.tier!r}: {len(tests)} tests, wall {wall:.0f} s, CPU {cpu:.0f} s, load average {load:.1f}")
    print(f"{args.top} slowest by wall seconds (CPU seconds beside):")
    for test in sorted(tests, key=lambda t: t["wall"], reverse=True)[: args.top]:
        print(f"  {test['wall']:6.1f} {test['cpu']:6.1f}  {test['test']}")
    sys.exit(completed.returncode)


if __name__ == "__main__":
    main()
