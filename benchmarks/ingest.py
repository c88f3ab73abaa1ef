"""Ingest benchmark: images/s for a first ingest of N images, re-ingest time as a ratio of the first (goal < 10%),
and peak RSS of ingesting N against N/10 images (goal < 1.5x), against the embedded lakeFS server.

    python benchmarks/ingest.py [--images 2000] [--size 256] [--binary]

--binary: {0, 255} masks and no class list, the source ingest reads as background/foreground by their values.

Each ingest runs in its own process so that its peak RSS is its own; the server runs in this process.
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

import numpy as np
from PIL import Image


def write_source(root: Path, count: int, size: int, binary: bool = False) -> Path:
    """`count` demo-like scenes (JPEG images, PNG masks) of size x size; `binary`: {0, 255} masks, no class list."""
    from segmodels.data.demo import DEMO_CLASSES, render_demo_sample
    from segmodels.data.masks import encode_png

    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    if not binary:
        (root / "classes.yaml").write_text(json.dumps({"classes": list(DEMO_CLASSES)}))
    for index in range(count):
        image, mask = render_demo_sample(np.random.default_rng([7, index]), size)
        if binary:
            mask = np.where(mask > 0, 255, 0).astype(np.uint8)
        Image.fromarray(image).save(root / "images" / f"scene_{index:05d}.jpg", quality=90)
        (root / "masks" / f"scene_{index:05d}.png").write_bytes(encode_png(mask))
    return root


def worker(args) -> None:
    """One ingest in this process; prints a JSON line with its duration, transfer and peak RSS."""
    from segmodels.config import load_config
    from segmodels.dataset_store import ingest
    from segmodels.versioning import connect

    cfg = load_config("ingest")
    lakefs = connect()
    lakefs.ensure_repository(args.repo, default_branch=cfg.lakefs.data_branch)
    start = time.perf_counter()
    result = ingest(
        lakefs,
        args.source,
        cfg.data,
        args.repo,
        cfg.lakefs.data_branch,
        cfg.lakefs.data_prefix,
        on_error=cfg.on_error,
        split_seed=cfg.split_seed,
        work_dir=Path(args.work),
    )
    seconds = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                "seconds": seconds,
                "uploaded": result.uploaded_files,
                "changed": result.changed,
                "images": result.stats.num_images,
                "peak_rss_mib": peak_kib / 1024,
            }
        )
    )


def run_worker(env: dict, source: Path, repo: str, work: Path) -> dict:
    command = [sys.executable, __file__, "--worker", "--source", str(source), "--repo", repo, "--work", str(work)]
    completed = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if completed.returncode:
        raise SystemExit(f"ingest worker failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--binary", action="store_true", help="{0, 255} masks without a class list")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--source", help=argparse.SUPPRESS)
    parser.add_argument("--repo", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)

    from embedded_lakefs import create_server

    small = max(1, args.images // 10)
    with tempfile.TemporaryDirectory(prefix="segmodels-bench-ingest-") as scratch:
        scratch = Path(scratch)
        server = create_server(scratch / "lakefs").start_in_thread()
        env = {key: value for key, value in os.environ.items() if not key.startswith("LAKECTL_")}
        env.update(
            {
                "LAKECTL_SERVER_ENDPOINT_URL": server.endpoint,
                "SEGMODELS_HOME": str(scratch / "home"),
                "LAKECTL_CREDENTIALS_ACCESS_KEY_ID": server.access_key_id,
                "LAKECTL_CREDENTIALS_SECRET_ACCESS_KEY": server.secret_access_key,
            }
        )
        try:
            start = time.perf_counter()
            large_source = write_source(scratch / "large", args.images, args.size, args.binary)
            small_source = write_source(scratch / "small", small, args.size, args.binary)
            print(
                f"wrote sources ({args.images} and {small} images of {args.size}x{args.size}) "
                f"in {time.perf_counter() - start:.1f}s"
            )
            first = run_worker(env, large_source, "bench-large", scratch / "work-large")
            again = run_worker(env, large_source, "bench-large", scratch / "work-large")
            cold = run_worker(env, large_source, "bench-large", scratch / "work-cold")
            baseline = run_worker(env, small_source, "bench-small", scratch / "work-small")
        finally:
            server.shutdown()
    assert first["changed"] and not again["changed"] and again["uploaded"] == 0 and not cold["changed"]
    ratio = again["seconds"] / first["seconds"]
    rss_ratio = first["peak_rss_mib"] / baseline["peak_rss_mib"]
    print(
        f"first ingest:   {args.images} images in {first['seconds']:.1f}s "
        f"= {args.images / first['seconds']:.1f} images/s "
        f"({first['uploaded']} files uploaded)"
    )
    print(
        f"re-ingest:      {again['seconds']:.2f}s, {again['uploaded']} uploaded, no commit "
        f"= {ratio:.1%} of the first (goal < 10%)"
    )
    print(
        f"re-ingest without the local cache: {cold['seconds']:.2f}s "
        f"= {cold['seconds'] / first['seconds']:.1%} of the first, {cold['uploaded']} uploaded"
    )
    print(
        f"peak RSS:       {first['peak_rss_mib']:.0f} MiB for {args.images} images "
        f"vs {baseline['peak_rss_mib']:.0f} MiB "
        f"for {small} = {rss_ratio:.2f}x (goal < 1.5x)"
    )


if __name__ == "__main__":
    main()
