"""The content-addressed local cache (``segmodels.versioning.cache``) on a data set of many small images.

Prepares a demo data set of ``--images`` images (tiny: it is the counts that matter), commits it to an embedded
lakeFS server, then a second commit in which ``--changed`` (1%) of the images are replaced. Prints, for the second
commit as a share of the first: the bytes downloaded from lakeFS and the disk the cache grew by (goal <= 2% each);
and the time to a first sample read through the dataset store (``using_dataset`` + ``SegmentationDataset``) on a
cold cache (an empty segmodels home) and on a warm one (the same commit again). Then an epoch (every train sample
of the first commit read once, in a shuffled order, one process) downloaded (``data.access=download``: the whole
data set first) vs streamed (``data.access=stream``, ``data.prefetch`` samples ahead) with the cache bounded at a
quarter of the data set, and streamed with a bound it fits under: a first epoch on an empty cache and a second
epoch after it, with the bytes each fetched from lakeFS. Everything lives in a temp dir.

    python benchmarks/data_cache.py [--images 10000] [--changed 0.01] [--image-size 16] [--prefetch 16]
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
from segmodels.data.streaming import PrefetchingSampler
from segmodels.dataset_store import using_dataset
from segmodels.versioning import LakeFS, LakeFSSettings, LakeFSUri
from segmodels.versioning.cache import MAX_GB_ENV
from segmodels.versioning.stream import streamed_dataset


def cache_bytes(home: Path) -> int:
    """Bytes of the cache's objects (the views are links to them)."""
    return sum(p.stat().st_size for p in (home / "cache" / "objects").rglob("*") if p.is_file())


def first_sample_seconds(lakefs: LakeFS, uri: LakeFSUri) -> float:
    """Seconds from nothing local to the first training sample of ``uri``'s data set."""
    start = time.perf_counter()
    with using_dataset(lakefs, uri) as root:
        SegmentationDataset(root, "train")[0]
    return time.perf_counter() - start


def read_epoch(dataset: SegmentationDataset, order: list[int], prefetch: int) -> float:
    """Seconds to read every sample of ``dataset`` once in ``order`` (``prefetch`` ahead, as training's sampler)."""
    start = time.perf_counter()
    for index in PrefetchingSampler(order, dataset, prefetch):
        dataset[index]
    return time.perf_counter() - start


def epochs(lakefs: LakeFS, uri: LakeFSUri, orders: list[list[int]], stream: bool, prefetch: int) -> list[float]:
    """Seconds of each epoch (one per order) over ``uri``'s train split on ``lakefs``'s cache, the first one
    counted from opening the data set (downloaded: the whole download included)."""
    start = time.perf_counter()
    if stream:
        with streamed_dataset(lakefs, uri) as (root, reader):
            dataset = SegmentationDataset(root, "train", files=reader)
            times = [read_epoch(dataset, order, prefetch) for order in orders]
    else:
        with using_dataset(lakefs, uri) as root:
            dataset = SegmentationDataset(root, "train")
            times = [read_epoch(dataset, order, prefetch) for order in orders]
    return [time.perf_counter() - start - sum(times[1:]), *times[1:]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--changed", type=float, default=0.01, help="share of images the second commit replaces")
    parser.add_argument("--image-size", type=int, default=16)
    parser.add_argument("--prefetch", type=int, default=16, help="data.prefetch of the streamed epochs")
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

            train_count = sum(1 for p in data.rglob("images/train/*") if p.is_file())
            orders = [random.Random(epoch).sample(range(train_count), train_count) for epoch in range(2)]
            data_bytes = sum(obj.size for obj in lakefs.list_objects("bench", first.ref, "data/"))
            runs = {}
            for name, stream, bound in [
                ("downloaded", False, None),
                ("streamed, bound 1/4 of the data", True, data_bytes // 4),
                ("streamed, bound above the data", True, None),
            ]:
                if bound:
                    os.environ[MAX_GB_ENV] = str(bound / 1e9)
                downloaded.clear()
                mode_home = tmp / f"home-{len(runs)}"  # an empty cache
                seconds = epochs(LakeFS(settings, home=mode_home), first, orders, stream, args.prefetch)
                os.environ.pop(MAX_GB_ENV, None)
                runs[name] = (seconds, sum(downloaded), cache_bytes(mode_home))
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
    print(f"an epoch of {train_count} train samples ({data_bytes / 1e6:.1f} MB of data), prefetch {args.prefetch}:")
    for name, (seconds, fetched, kept) in runs.items():
        print(
            f"  {name:32s} first epoch (cold) {seconds[0]:6.2f} s, second (warm) {seconds[1]:6.2f} s; "
            f"fetched {fetched / data_bytes:.2f}x the data, cache holds {kept / 1e6:.2f} MB"
        )


if __name__ == "__main__":
    main()
