"""Pipeline benchmark: the wall time of a first ``mlflow run . -e main`` and of a second, unchanged one (every
step reused), their ratio (goal < 0.15), and for each step of the first the overhead of ``mlflow run`` (run
created to the step's own code starting: process start, imports, config) against the step's own work.

    python benchmarks/pipeline.py [--images N] [--epochs N] [--image-size PX]

Runs in a sandbox (its own sqlite store, segmodels home and embedded lakeFS) against this checkout's code, with
``-P reuse_dirty=true`` so an edited work tree still measures reuse. Both runs use the same settings: the
README's ``mlflow run . -e main`` defaults, but for what the options change.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
STEPS = ("ingest", "train", "register", "infer")


def run_main(env: dict[str, str], params: dict[str, str]) -> float:
    """Wall seconds of one ``mlflow run . -e main --env-manager local``."""
    command = [sys.executable, "-m", "mlflow", "run", str(PROJECT), "-e", "main", "--env-manager", "local"]
    for key, value in params.items():
        command += ["-P", f"{key}={value}"]
    start = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=3600)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"main failed:\n{result.stderr[-3000:]}")
    return seconds


def step_timings(tracking_uri: str) -> list[tuple[str, float, float, str]]:
    """(step, overhead s, work s, reused?) of the children of the oldest main run."""
    from mlflow.tracking import MlflowClient

    from segmodels.tracking import lineage

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("Default").experiment_id
    first = client.search_runs(
        [experiment], f"tags.`{lineage.TAG_STEP}` = 'main'", order_by=["attributes.start_time ASC"], max_results=1
    )[0]
    children = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{first.info.run_id}'")
    rows = []
    for child in sorted(children, key=lambda run: run.info.start_time):
        started = int(child.data.tags.get(lineage.TAG_WORK_STARTED, child.info.start_time))
        rows.append(
            (
                child.data.tags[lineage.TAG_STEP],
                (started - child.info.start_time) / 1000,
                (child.info.end_time - started) / 1000,
                "reused" if lineage.TAG_REUSED_RUN in child.data.tags else "ran",
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, help="demo images (default: conf/ingest.yaml's)")
    parser.add_argument("--epochs", type=int, help="train epochs (default: conf/trainer/default.yaml's)")
    parser.add_argument("--image-size", type=int, help="demo and train image size (default: the configs')")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="segmodels-bench-pipeline-") as sandbox:
        root = Path(sandbox)
        tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
        env = {key: value for key, value in os.environ.items() if not key.startswith(("LAKECTL_", "MLFLOW_"))}
        env.update(
            MLFLOW_TRACKING_URI=tracking_uri,
            SEGMODELS_HOME=str(root / "home"),
            HOME=str(root),
            PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        )
        given = {
            "ingest.demo.num_images": args.images,
            "ingest.demo.image_size": args.image_size,
            "epochs": args.epochs,
            "image_size": args.image_size,
        }
        params = {
            **{key: str(value) for key, value in given.items() if value is not None},
            "reuse_dirty": "true",
            "output_dir": str(root / "predictions"),
        }
        first = run_main(env, params)
        second = run_main(env, params)
        print(f"first main:  {first:8.1f} s")
        print(f"second main: {second:8.1f} s (unchanged: every step reused)")
        print(f"ratio second/first: {second / first:.3f} (goal < 0.15)")
        print("per step of the first main: mlflow run overhead (run created -> step code starts) vs own work")
        for step, overhead, work, how in step_timings(tracking_uri):
            print(
                f"  {step:<9} {how:<7} overhead {overhead:6.1f} s   work {work:7.1f} s   "
                f"overhead/work {overhead / max(work, 1e-9):.2f}"
            )
        subprocess.run(
            [
                sys.executable,
                "-c",
                "import json,os,signal,sys;"
                "p=os.path.join(sys.argv[1],'lakefs','server.json');"
                "os.path.exists(p) and os.kill(json.load(open(p))['pid'], signal.SIGTERM)",
                str(root / "home"),
            ],
            check=False,
            timeout=60,
        )


if __name__ == "__main__":
    main()
