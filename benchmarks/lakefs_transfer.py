"""Upload / download throughput through the embedded lakeFS server against a plain local copy of the same files.

Prints, for 1,000 files of 100 KB and 10 files of 50 MB: upload and download time, their ratio to a plain copy
(throughput of lakeFS / throughput of copy), the per-object overhead, and the time of a cached re-download.
Goals: large files >= 0.5x of a plain copy, per-object overhead < 3 ms, cached re-download < 5% of the first.

The plain copy (``shutil.copytree``) lands in the page cache and is not durable, whereas the server fsyncs every
object; so each data set also gets a second baseline, a durable copy (copy + fsync of each file), with the ratios
against it, and the time of md5 over the same bytes on one core: any lakeFS-compatible server that reports md5
checksums / ETags (and the client verifying them) must run it, so it bounds upload and download on this CPU.
Everything lives in a temp dir removed at the end.

The same files also go up and down through the server's S3 gateway with boto3 (one object per request, as the REST
path sends them, ``--workers`` threads), printed as a ratio to the REST path of the same run (goal >= 0.8x).

Last, one object of ``--large-mb`` MB downloaded whole (one GET) and as parallel byte ranges (the client's default
for large objects), the median of three each: straight from the local server, where both share this machine's
cores, and through a proxy pacing each connection to ``--connection-mb-s`` (as a distant server, where a round trip
bounds what one connection carries, and byte ranges on several connections are what make it faster).

The server runs in a process of its own, as the steps start it (``--in-process``: a thread of the benchmark's
process, where the clients' Python work and the server's take turns on one interpreter lock).

    python benchmarks/lakefs_transfer.py [--workers 8] [--no-fsync] [--in-process] [--large-mb 256]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Iterator
from urllib.parse import urlsplit

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

from embedded_lakefs import create_server
from embedded_lakefs.datadir import load_or_create_credentials, read_server_state
from segmodels.versioning import LakeFS, LakeFSSettings
from segmodels.versioning.client import RANGE_BYTES, RANGE_WORKERS
from segmodels.versioning.hashing import file_md5

DATASETS = {"1000 x 100 KB": (1000, 100 * 1024), "10 x 50 MB": (10, 50 * 1024 * 1024)}


def make_files(root: Path, count: int, size: int) -> int:
    root.mkdir(parents=True)
    block = os.urandom(min(size, 1 << 20))
    for i in range(count):
        with open(root / f"file-{i:05d}.bin", "wb") as out:
            remaining = size
            out.write(i.to_bytes(8, "little"))  # distinct content per file
            remaining -= 8
            while remaining:
                out.write(block[:remaining])
                remaining -= min(remaining, len(block))
    return count * size


def durable_copy(source: Path, dest: Path) -> None:
    """Copy every file of ``source`` and fsync it (and the folder), as a server storing durably must."""
    dest.mkdir(parents=True)
    for path in sorted(source.iterdir()):
        with open(path, "rb") as src, open(dest / path.name, "wb") as out:
            shutil.copyfileobj(src, out, 4 << 20)
            out.flush()
            os.fsync(out.fileno())
    fd = os.open(dest, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def md5_all(source: Path) -> None:
    for path in sorted(source.iterdir()):
        file_md5(path)


def s3_transfer(server, source: Path, prefix: str, workers: int, dest: Path) -> tuple[float, float]:
    """Seconds to upload ``source``'s files to ``bench/main/<prefix>`` through the S3 gateway and to download them
    back into ``dest``, each file one request, ``workers`` at a time."""
    s3 = boto3.client(
        "s3",
        endpoint_url=server.endpoint,
        aws_access_key_id=server.access_key_id,
        aws_secret_access_key=server.secret_access_key,
        region_name="us-east-1",
        config=Config(max_pool_connections=workers),
    )
    single = TransferConfig(multipart_threshold=1 << 40, use_threads=False)  # one PUT per file
    files = sorted(source.iterdir())
    dest.mkdir(parents=True)

    def run(fn) -> float:
        with ThreadPoolExecutor(workers) as pool:
            return timed(lambda: list(pool.map(fn, files)))

    up = run(lambda path: s3.upload_file(str(path), "bench", f"main/{prefix}/{path.name}", Config=single))

    def download(path: Path) -> None:  # one GET (download_file would HEAD first)
        body = s3.get_object(Bucket="bench", Key=f"main/{prefix}/{path.name}")["Body"]
        with open(dest / path.name, "wb") as out:
            shutil.copyfileobj(body, out, 4 << 20)

    down = run(download)
    return up, down


def ranged_vs_whole(client: LakeFS, work: Path, size: int, connection_mb_s: float) -> list[str]:
    """One object of ``size`` bytes downloaded whole and as ranges (median of three each): straight from the server,
    and through a proxy that lets each connection carry at most ``connection_mb_s`` MB/s (as a link whose round trip
    bounds what one TCP connection carries). Table rows."""
    make_files(work / "large", 1, size)
    client.upload_file("bench", "main", "large/one.bin", work / "large" / "file-00000.bin")
    commit = client.commit("bench", "main", "one large object")
    (obj,) = client.list_objects("bench", commit.id, "large/")
    rows = []
    with throttled(client.settings.endpoint, connection_mb_s) as slow_endpoint:
        slow = LakeFS(replace(client.settings, endpoint=slow_endpoint), home=client.home)
        for label, reader in (("local", client), (f"{connection_mb_s:g} MB/s per connection", slow)):
            times = {}
            for workers in (1, RANGE_WORKERS):
                runs = sorted(
                    timed(lambda w=workers: reader.download_object("bench", commit.id, obj, work / "large-down", w))
                    for _ in range(3)
                )
                times[workers] = runs[1]
            whole, ranged = times[1], times[RANGE_WORKERS]
            rows.append(f"{size / 1e6:>5.0f} MB, {label:<26}{whole:>10.3f}{ranged:>10.3f}{whole / ranged:>9.2f}x")
    shutil.rmtree(work / "large")
    return rows


@contextmanager
def throttled(endpoint: str, mb_per_s: float) -> Iterator[str]:
    """An endpoint that forwards to ``endpoint`` with each connection's answer paced to ``mb_per_s``."""
    upstream = urlsplit(endpoint)
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def pipe(source: socket.socket, dest: socket.socket, pace: float) -> None:
        with contextlib.suppress(OSError):
            while chunk := source.recv(64 << 10):
                dest.sendall(chunk)
                if pace:
                    time.sleep(len(chunk) / pace)
        for sock in (source, dest):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def accept() -> None:
        while not stop.is_set():
            try:
                downstream, _ = listener.accept()
            except OSError:
                return
            server = socket.create_connection((upstream.hostname, upstream.port))
            threading.Thread(target=pipe, args=(downstream, server, 0), daemon=True).start()
            threading.Thread(target=pipe, args=(server, downstream, mb_per_s * 1e6), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        listener.close()


@contextmanager
def embedded_server(data_dir: Path, fsync: bool, in_process: bool) -> Iterator[SimpleNamespace]:
    """The embedded server on ``data_dir`` (endpoint and keys): its own process, or a thread of this one."""
    if in_process:
        server = create_server(data_dir, fsync=fsync).start_in_thread()
        try:
            yield SimpleNamespace(
                endpoint=server.endpoint, access_key_id=server.access_key_id, secret_access_key=server.secret_access_key
            )
        finally:
            server.shutdown()
        return
    data_dir.mkdir(parents=True)
    keys = load_or_create_credentials(data_dir)
    command = [sys.executable, "-m", "embedded_lakefs", "--data-dir", str(data_dir)] + ["--no-fsync"] * (not fsync)
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while (state := read_server_state(data_dir)) is None or state.pid != process.pid:
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the embedded server on {data_dir} did not start (exit {process.poll()})")
            time.sleep(0.05)
        yield SimpleNamespace(
            endpoint=state.endpoint, access_key_id=keys.access_key_id, secret_access_key=keys.secret_access_key
        )
    finally:
        process.terminate()
        process.wait(timeout=60)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--no-fsync", action="store_true", help="server without fsync (not power-loss safe)")
    parser.add_argument("--large-mb", type=int, default=256, help="the object downloaded whole and as ranges")
    parser.add_argument("--in-process", action="store_true", help="the server on a thread of this process")
    parser.add_argument("--connection-mb-s", type=float, default=50, help="per-connection pace of the paced proxy")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lakefs-bench-") as tmp:
        work = Path(tmp)
        with embedded_server(work / "server", not args.no_fsync, args.in_process) as server:
            client = LakeFS(
                LakeFSSettings(server.endpoint, server.access_key_id, server.secret_access_key), home=work / "home"
            )
            client.ensure_repository("bench")
            print(
                f"embedded lakeFS at {server.endpoint} ({'a thread here' if args.in_process else 'its own process'}), "
                f"workers={args.workers}, fsync={not args.no_fsync}, cpus={os.cpu_count()}"
            )
            print(
                "goals: large files >= 0.5x of a plain copy, per-object overhead < 3 ms, "
                "cached re-download < 5% of the first"
            )
            print(
                f"{'data set':<15}{'copy s':>9}{'upload s':>10}{'up ratio':>10}{'download s':>12}"
                f"{'down ratio':>12}{'ms/object up':>14}{'cached s':>10}{'cached %':>10}"
            )
            extra: list[str] = []
            gateway: list[str] = []
            for name, (count, size) in DATASETS.items():
                source = work / "src" / name.replace(" ", "")
                total = make_files(source, count, size)
                copy_s = timed(lambda: shutil.copytree(source, work / "copy" / source.name))
                shutil.rmtree(work / "copy")
                durable_s = timed(lambda: durable_copy(source, work / "copy" / source.name))
                shutil.rmtree(work / "copy")
                md5_s = timed(lambda: md5_all(source))
                prefix = source.name
                up_s = timed(
                    lambda: client.upload_directory("bench", "main", source, prefix=prefix, workers=args.workers)
                )
                commit = client.commit("bench", "main", f"add {name}")
                down_s = timed(lambda: client.download_prefix("bench", commit.id, prefix, workers=args.workers))
                cached_s = timed(lambda: client.download_prefix("bench", commit.id, prefix, workers=args.workers))
                per_object_ms = max(0.0, up_s - copy_s) / count * 1000
                print(
                    f"{name:<15}{copy_s:>9.3f}{up_s:>10.3f}{copy_s / up_s:>9.2f}x{down_s:>12.3f}"
                    f"{copy_s / down_s:>11.2f}x{per_object_ms:>14.2f}{cached_s:>10.4f}"
                    f"{100 * cached_s / down_s:>9.2f}%"
                )
                print(
                    f"{'':<15}{total / copy_s / 1e6:>8.0f}M{total / up_s / 1e6:>9.0f}M{'':>10}"
                    f"{total / down_s / 1e6:>11.0f}M   (MB/s)"
                )
                extra.append(
                    f"{name:<15}{durable_s:>9.3f}{total / durable_s / 1e6:>8.0f}M{durable_s / up_s:>9.2f}x"
                    f"{durable_s / down_s:>11.2f}x{md5_s:>9.3f}{total / md5_s / 1e6:>8.0f}M"
                    f"{md5_s / up_s:>9.2f}x{md5_s / down_s:>11.2f}x"
                )
                s3_up_s, s3_down_s = s3_transfer(server, source, "s3-" + prefix, args.workers, work / "s3-down")
                gateway.append(
                    f"{name:<15}{up_s:>10.3f}{s3_up_s:>10.3f}{up_s / s3_up_s:>9.2f}x"
                    f"{down_s:>12.3f}{s3_down_s:>10.3f}{down_s / s3_down_s:>9.2f}x"
                )
                shutil.rmtree(work / "s3-down")
                shutil.rmtree(source)
                shutil.rmtree(client.home / "cache")
            print("\nbaselines: durable copy (copy + fsync per file) and md5 of the same bytes (1 core, page cache)")
            print(
                f"{'data set':<15}{'durable s':>9}{'MB/s':>9}{'up ratio':>10}{'down ratio':>11}{'md5 s':>9}"
                f"{'MB/s':>9}{'up/md5':>10}{'down/md5':>11}"
            )
            print("\n".join(extra))
            print(
                "(up/md5, down/md5: lakeFS throughput as a fraction of one core's md5 throughput, the bound of "
                "md5 checksums)"
            )
            print("\nS3 gateway (boto3, one request per file) against the REST path above; goal >= 0.8x")
            print(
                f"{'data set':<15}{'REST up':>10}{'S3 up':>10}{'ratio':>10}"
                f"{'REST down':>12}{'S3 down':>10}{'ratio':>10}"
            )
            print("\n".join(gateway))
            print(
                "\none large object: one whole GET against parallel byte ranges (median of 3); ratio > 1: ranges faster"
            )
            print(f"{'object':<35}{'whole s':>10}{'ranged s':>10}{'ratio':>10}")
            print("\n".join(ranged_vs_whole(client, work, args.large_mb * 1024 * 1024, args.connection_mb_s)))
            print(f"({RANGE_WORKERS} threads, {RANGE_BYTES >> 20} MiB ranges)")


if __name__ == "__main__":
    main()
