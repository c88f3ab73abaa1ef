"""Metadata operations of the embedded lakeFS server at data-set scale (N committed objects in one repository).

Prints, for each N (default 1,000, 100,000 and 1,000,000), the time to populate the repository (through the catalog,
before the server starts) and the median over the repeats, timed by a lakefs-sdk client over HTTP (so including the
sdk's parsing of the answer), of: commit of 10 changed objects (the commit call only), diff of that commit against
its parent (full page), 3-way merge into main of a branch with 10 changed objects (main got a 1-object commit
meanwhile; the merge call only), list of a page of 1000 objects from the middle of the repository, stat of one
object, and the growth of the metadata database per commit of 10 (used pages of ``lakefs.db`` after a WAL
checkpoint, plus the WAL, before the uploads and after the commit). Then the ratios N_max / N_min of the times
and the goals with PASS / FAIL: N_max times within 3x of the N_min times, commit of 10 < 50 ms, database growth
per commit of 10 < 100 KB. Exits 0 whatever the results (it is a report). Everything lives in a temp dir removed
at the end.

segmodels is imported from the current directory first, so running it from another checkout measures that code:

    python benchmarks/lakefs_scale.py [--sizes 1000,100000,1000000] [--repeats 5]
    cd /other/checkout && python /work/main/benchmarks/lakefs_scale.py --sizes 1000,10000 --repeats 3
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path

import lakefs_sdk
from lakefs_sdk.client import LakeFSClient

sys.path.insert(0, os.getcwd())  # the segmodels of the current directory, not the installed one
import segmodels  # noqa: E402
from embedded_lakefs import create_server  # noqa: E402
from embedded_lakefs.catalog import Catalog, Entry  # noqa: E402

REPO = "scale"
CHANGES = 10
PAGE = 1000
KEY_ID, SECRET = "AKIASCALEBENCH", "scale-bench-secret"
OPERATIONS = ("commit", "diff", "merge", "list", "stat")
MAX_RATIO, MAX_COMMIT_MS, MAX_GROWTH_KB = 3.0, 50.0, 100.0


def path_of(i: int) -> str:
    """Object ``i`` of the data set: shards of 1000 images, so the sorted position of a path is ``i``."""
    return f"datasets/scale/images/{i // 1000:04d}/img-{i:08d}.png"


def entries(n: int):
    """The ``n`` populated entries, generated one at a time (their blobs do not exist, and are never read)."""
    for i in range(n):
        key = b"%d" % i
        yield Entry(
            path=path_of(i),
            address=hashlib.sha256(key).hexdigest(),
            checksum=hashlib.md5(key).hexdigest(),
            size=100_000 + i * 7919 % 900_000,
            mtime=1_700_000_000 + i,
            content_type="image/png",
            metadata={},
        )


def populate(db_path: Path, n: int) -> float:
    """Create the repository with ``n`` committed objects through the catalog; returns the seconds taken."""
    start = time.perf_counter()
    catalog = Catalog(db_path, synchronous="OFF")
    catalog.create_repository(REPO, f"local://{REPO}", "main")
    if hasattr(catalog, "stage_entries"):
        catalog.stage_entries(REPO, "main", entries(n))
    else:  # older catalogs: one transaction per entry
        for entry in entries(n):
            catalog.put_entry(REPO, "main", entry)
    catalog.commit(REPO, "main", "populate", "bench")
    return time.perf_counter() - start


def used_db_bytes(data_dir: Path) -> int:
    """Bytes the metadata database uses: its non-free pages after a WAL checkpoint, plus what is left in the WAL."""
    with closing(sqlite3.connect(data_dir / "lakefs.db")) as conn:
        busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        if busy:
            raise RuntimeError("WAL checkpoint blocked")
        pages, free, page_size = (
            conn.execute(f"PRAGMA {name}").fetchone()[0] for name in ("page_count", "freelist_count", "page_size")
        )
    wal = data_dir / "lakefs.db-wal"
    return (pages - free) * page_size + (wal.stat().st_size if wal.exists() else 0)


def timed(fn) -> tuple[float, object]:
    """Milliseconds ``fn()`` took, and its result."""
    start = time.perf_counter()
    result = fn()
    return (time.perf_counter() - start) * 1000, result


def upload_changes(sdk: LakeFSClient, branch: str, indexes, tag: str) -> None:
    for i in indexes:
        sdk.objects_api.upload_object(REPO, branch, path_of(i), content=f"{tag} {i}".encode())


def commit(sdk: LakeFSClient, branch: str, message: str):
    return sdk.commits_api.commit(REPO, branch, lakefs_sdk.CommitCreation(message=message))


def measure(sdk: LakeFSClient, data_dir: Path, n: int, repeat: int) -> dict[str, float]:
    """One round of every operation on the repository of ``n`` objects: milliseconds, and growth in KB."""
    spread = [k * n // CHANGES for k in range(CHANGES)]
    result = {}

    before = used_db_bytes(data_dir)
    upload_changes(sdk, "main", [(i + repeat + 1) % n for i in spread], f"commit {repeat}")
    result["commit"], new = timed(lambda: commit(sdk, "main", f"change {CHANGES} (round {repeat})"))
    result["growth"] = (used_db_bytes(data_dir) - before) / 1024

    result["diff"], diff = timed(
        lambda: sdk.refs_api.diff_refs(REPO, left_ref=new.parents[0], right_ref=new.id, amount=PAGE)
    )
    if len(diff.results) != CHANGES:
        raise RuntimeError(f"diff of {CHANGES} changes gave {len(diff.results)} results")

    branch = f"merge-{repeat}"
    sdk.branches_api.create_branch(REPO, lakefs_sdk.BranchCreation(name=branch, source="main"))
    upload_changes(sdk, branch, [(i + repeat + 2) % n for i in spread], f"merge {repeat}")
    commit(sdk, branch, f"change {CHANGES} on {branch}")
    upload_changes(sdk, "main", [(n // (2 * CHANGES) + repeat) % n], f"main {repeat}")
    commit(sdk, "main", "change 1 on main")
    result["merge"], _ = timed(
        lambda: sdk.refs_api.merge_into_branch(
            REPO, source_ref=branch, destination_branch="main", merge=lakefs_sdk.Merge(message=f"merge {branch}")
        )
    )

    start = max(0, min(n // 2 + repeat, n - PAGE))
    after = path_of(start - 1) if start else "datasets/"
    result["list"], listing = timed(lambda: sdk.objects_api.list_objects(REPO, ref="main", amount=PAGE, after=after))
    if len(listing.results) != min(PAGE, n):
        raise RuntimeError(f"list of a page of {PAGE} gave {len(listing.results)} results")
    result["stat"], _ = timed(lambda: sdk.objects_api.stat_object(REPO, "main", path_of((n // 3 + repeat) % n)))
    return result


def run_size(work: Path, n: int, repeats: int) -> dict[str, float]:
    """Populate a repository of ``n`` objects, serve it, and return the medians (plus the populate seconds)."""
    data_dir = work / f"n{n}"
    data_dir.mkdir()
    populate_s = populate(data_dir / "lakefs.db", n)
    server = create_server(data_dir, access_key_id=KEY_ID, secret_access_key=SECRET, fsync=True).start_in_thread()
    try:
        sdk = LakeFSClient(lakefs_sdk.Configuration(host=server.endpoint + "/api/v1", username=KEY_ID, password=SECRET))
        sdk.objects_api.list_objects(REPO, ref="main", amount=PAGE)  # connects, warms the sdk up
        rounds = [measure(sdk, data_dir, n, r) for r in range(repeats)]
    finally:
        server.shutdown()
    medians = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
    medians["populate"] = populate_s
    return medians


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,100000,1000000", help="comma-separated numbers of objects")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    if sizes[0] < PAGE:
        parser.error(f"sizes must be at least {PAGE} (a full page to list)")
    bulk = hasattr(Catalog, "stage_entries")
    print(
        f"segmodels from {Path(segmodels.__file__).parent}, populate with "
        f"{'Catalog.stage_entries' if bulk else 'Catalog.put_entry per entry (no stage_entries)'}, "
        f"fsync=True, cpus={os.cpu_count()}, repeats={args.repeats} (medians)"
    )
    print(
        f"goals: N={sizes[-1]:,} times within {MAX_RATIO:g}x of N={sizes[0]:,}, commit of {CHANGES} < "
        f"{MAX_COMMIT_MS:g} ms, DB growth per commit of {CHANGES} < {MAX_GROWTH_KB:g} KB"
    )
    print(
        f"{'objects':>11}{'populate s':>12}{'commit ms':>11}{'diff ms':>10}{'merge ms':>10}{'list ms':>10}"
        f"{'stat ms':>10}{'growth KB':>11}"
    )
    results = {}
    with tempfile.TemporaryDirectory(prefix="lakefs-scale-") as tmp:
        for n in sizes:
            m = results[n] = run_size(Path(tmp), n, args.repeats)
            print(
                f"{n:>11,}{m['populate']:>12.2f}{m['commit']:>11.1f}{m['diff']:>10.1f}{m['merge']:>10.1f}"
                f"{m['list']:>10.1f}{m['stat']:>10.1f}{m['growth']:>11.1f}",
                flush=True,
            )
    first, last = results[sizes[0]], results[sizes[-1]]
    ratios = {op: last[op] / first[op] for op in OPERATIONS}
    print(
        f"{'ratio':>11}{'':>12}"
        + "".join(f"{ratios[op]:>{w}.2f}x" for op, w in zip(OPERATIONS, (10, 9, 9, 9, 9)))
        + f"   (N={sizes[-1]:,} / N={sizes[0]:,})"
    )

    print("\ngoals:")
    for op in OPERATIONS:
        print(
            f"  {op:<7} N={sizes[-1]:,} within {MAX_RATIO:g}x of N={sizes[0]:,}: {ratios[op]:6.2f}x  "
            f"{verdict(ratios[op] <= MAX_RATIO)}"
        )
    worst_commit = max(m["commit"] for m in results.values())
    worst_growth = max(m["growth"] for m in results.values())
    print(
        f"  commit of {CHANGES} < {MAX_COMMIT_MS:g} ms at every N: worst {worst_commit:.1f} ms  "
        f"{verdict(worst_commit < MAX_COMMIT_MS)}"
    )
    print(
        f"  DB growth per commit of {CHANGES} < {MAX_GROWTH_KB:g} KB at every N: worst {worst_growth:.1f} KB  "
        f"{verdict(worst_growth < MAX_GROWTH_KB)}"
    )


if __name__ == "__main__":
    main()
