"""The content-addressed local cache (``segmodels.versioning.cache``) on a data set of many small images.

Prepares a demo data set of ``--images`` images (tiny: it is the counts that matter), commits it to an embedded
lakeFS server, then a second commit in which ``--changed`` (1%) of the images are replaced. Prints, for the second
commit as a share of the first: the bytes downloaded from lakeFS and the disk the cache grew by (goal <= 2% each);
and the time to a first sample read through the dataset store (``using_dataset`` + ``SegmentationDataset``) on a
cold cache (an empty segmodels home) and on a warm one (the same commit again). Everything lives in a temp dir.

    python benchmarks/data_cache.py [--images 10000] [--changed 0.01] [--image-size 16]
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from pathlib import Path

from embedded_lakefs import create_server
from segmodels.config import load_config
from segmodels.data import SegmentationDataset, generate_demo_dataset, prepare_dataset
from segmodels.dataset_store import using_dataset
from segmodels.versioning import LakeFS, LakeFSSettings, LakeFSUri


def cache_bytes(home: Path) -> int:
    """Bytes of the cache's objects (the views are links to them)."""
    return sum(p.stat().st_size for p in (home / "cache" / "objects").rglob("*") if p.is_file())


def first_sample_seconds(lakefs: LakeFS, uri: LakeFSUri) -> float:
    """Seconds from nothing local to the first training sample of ``uri``'s data set."""
    start = time.perf_counter()
    with using_dataset(lakefs, uri) as root:
        SegmentationDataset(root, "train")[0]
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--changed", type=float, default=0.01, help="share of images the second commit replaces")
    parser.add_argument("--image-size", type=int, default=16)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="segmodels-bench-cache-") as tmp:
        tmp = Path(tmp)
        started = time.perf_counter()
        source = generate_demo_dataset(tmp / "source", num_images=args.images, image_size=args.image_size)
        cfg = load_config("ingest", ["data.val_fraction=0.1", "data.test_fraction=0.0"])
        data = prepare_dataset(source, tmp / "data", cfg.data, on_error=cfg.on_error, split_seed=0).root
        print(f"prepared {args.images} images of {args.image_size}px in {time.perf_counter() - started:.1f} s")

        server = create_server(tmp / "lakefs").start_in_thread()
        try:
            settings = LakeFSSettings(server.endpoint, server.access_key_id, server.secret_access_key)
            uploader = LakeFS(settings, home=tmp / "uploader-home")
            uploader.ensure_repository("bench")
            uploader.upload_directory("bench", "main", data, prefix="data", workers=8)
            first = LakeFSUri("bench", uploader.commit("bench", "main", "first").id, "data")
            images = sorted(p for p in data.rglob("images/*/*") if p.is_file())
            changed = random.Random(0).sample(images, max(1, round(len(images) * args.changed)))
            for image in changed:  # another image of the same size: one object per changed file
                image.write_bytes(image.read_bytes() + os.urandom(16))
            uploader.upload_directory("bench", "main", data, prefix="data", workers=8)
            second = LakeFSUri("bench", uploader.commit("bench", "main", "second").id, "data")
            files = sum(1 for p in data.rglob("*") if p.is_file())
            print(f"{files} files in the data set, {len(changed)} images changed by the second commit")

            home = tmp / "home"
            lakefs = LakeFS(settings, home=home)
            downloaded: list[int] = []
            real = LakeFS.download_object

            def counting(self, repo, ref, obj, local_file):
                downloaded.append(obj.size)
                return real(self, repo, ref, obj, local_file)

            LakeFS.download_object = counting
            cold = first_sample_seconds(lakefs, first)
            first_bytes, first_disk = sum(downloaded), cache_bytes(home)
            downloaded.clear()
            warm = first_sample_seconds(lakefs, first)
            second_s = first_sample_seconds(lakefs, second)
            second_bytes, second_disk = sum(downloaded), cache_bytes(home) - first_disk
            LakeFS.download_object = real
        finally:
            server.shutdown()

    print(f"first commit:  downloaded {first_bytes / 1e6:.2f} MB, cache {first_disk / 1e6:.2f} MB")
    print(
        f"second commit: downloaded {second_bytes / 1e6:.3f} MB ({100 * second_bytes / first_bytes:.2f}% of the "
        f"first, goal <= 2%), cache grew {second_disk / 1e6:.3f} MB ({100 * second_disk / first_disk:.2f}%, "
        "goal <= 2%)"
    )
    print(
        f"time to a first sample: cold {cold:.2f} s, warm {warm:.3f} s ({cold / warm:.0f}x faster), "
        f"second commit on the warm cache {second_s:.2f} s"
    )


if __name__ == "__main__":
    main()
