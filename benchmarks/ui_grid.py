"""``segmodels ui``: a grid page of 100 overlays of 480x360 images, and memory for a commit of 100k images.

A data set is committed to an embedded lakeFS server through its catalog (before the server starts): ``--images``
(default 100) distinct 480x360 images with masks in the train split, then the same blobs again under new names up to
``--total`` (default 100,000) entries, so the commit holds that many images. The UI runs in this process (uvicorn on a
free port) and is read as a browser reads it (the HTML, then every picture on six connections):

* the first page of ``--page`` (100) overlays cold (thumbnails made) and warm (cached): wall time, and the warm time
  against the 2 s target;
* the same page deep in the commit (after image total - 2 * page) and, with ``tracemalloc``, the peak Python memory of
  rendering a page at the start and at that depth: a page reads one listing page of lakeFS, so both peaks are alike
  and far below what listing every image would take.

Prints the figures and PASS/FAIL lines; exits 0 (it is a report). Everything lives in a temp dir removed at the end.

    python benchmarks/ui_grid.py [--images 100] [--total 100000] [--page 100]
"""

from __future__ import annotations

import argparse
import io
import os
import re
import socket
import sys
import tempfile
import threading
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import requests
import uvicorn
import yaml
from PIL import Image

sys.path.insert(0, os.getcwd())  # the segmodels of the current directory, not the installed one
from mlflow.tracking import MlflowClient  # noqa: E402

from embedded_lakefs import create_server  # noqa: E402
from embedded_lakefs.blockstore import BlobStore  # noqa: E402
from embedded_lakefs.catalog import Catalog  # noqa: E402
from embedded_lakefs.records import Entry  # noqa: E402
from segmodels.ui.app import create_app  # noqa: E402
from segmodels.ui.lakefs_reader import LakeFSReader  # noqa: E402
from segmodels.ui.thumbnails import ThumbnailCache  # noqa: E402
from segmodels.versioning import LakeFS, LakeFSSettings  # noqa: E402

REPO = "uibench"
TARGET_S = 2.0
CLASSES = [
    {"id": 0, "name": "background", "color": [0, 0, 0]},
    {"id": 1, "name": "road", "color": [128, 64, 128]},
    {"id": 2, "name": "car", "color": [0, 0, 142]},
    {"id": 3, "name": "tree", "color": [107, 142, 35]},
]
BROWSER_CONNECTIONS = 6


def sample(seed: int) -> tuple[bytes, bytes]:
    """A 480x360 JPEG-like photo (PNG of noise and bands) and its 4-class mask."""
    rng = np.random.default_rng(seed)
    image = (rng.random((360, 480, 3)) * 80 + np.linspace(0, 150, 480)[None, :, None]).astype(np.uint8)
    mask = np.zeros((360, 480), np.uint8)
    mask[200:] = 1
    x, y = rng.integers(0, 380), rng.integers(150, 280)
    mask[y : y + 60, x : x + 100] = 2
    mask[20:150, rng.integers(0, 400) :][:, :60] = 3
    out = []
    for array in (image, mask):
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="PNG", compress_level=1)
        out.append(buffer.getvalue())
    return out[0], out[1]


def populate(data_dir: Path, distinct: int, total: int) -> float:
    """Commit ``total`` images (``distinct`` different ones, repeated) with masks and a dataset.yaml."""
    start = time.perf_counter()
    blobs = BlobStore(data_dir / "blobs", fsync=False)
    catalog = Catalog(data_dir / "lakefs.db", synchronous="OFF")
    catalog.create_repository(REPO, f"local://{REPO}", "main")
    stored = []
    for i in range(distinct):
        stored.append(tuple(blobs.write([data]) for data in sample(i)))
    document = {
        "name": "bench",
        "num_classes": len(CLASSES),
        "ignore_index": 255,
        "classes": CLASSES,
        "splits": {"train": total, "val": 0, "test": 0},
        "num_images": total,
    }
    info = blobs.write([yaml.safe_dump(document, sort_keys=False).encode()])

    def entries():
        yield Entry("data/dataset.yaml", info.address, info.checksum, info.size, 1_700_000_000, "text/yaml", {})
        for kind in ("images", "masks"):
            for i in range(total):
                blob = stored[i % distinct][kind == "masks"]
                yield Entry(
                    f"data/{kind}/train/img-{i:08d}.png",
                    blob.address,
                    blob.checksum,
                    blob.size,
                    1_700_000_000,
                    "image/png",
                    {},
                )

    catalog.stage_entries(REPO, "main", entries())
    catalog.commit(REPO, "main", "populate", "bench")
    return time.perf_counter() - start


def pictures(html: str) -> list[str]:
    return [src.replace("&amp;", "&") for src in re.findall(r'<img[^>]* src="([^"]+)"', html)]


def load_page(session: requests.Session, url: str, path: str) -> tuple[float, int]:
    """Seconds to fetch the page and every picture on it (six at a time, as a browser), and the picture count."""
    start = time.perf_counter()
    html = session.get(url + path, timeout=300).text
    sources = pictures(html)

    def fetch(src: str) -> None:
        response = session.get(url + src, timeout=300)
        assert response.status_code == 200, (src, response.status_code)

    with ThreadPoolExecutor(BROWSER_CONNECTIONS) as pool:
        list(pool.map(fetch, sources))
    return time.perf_counter() - start, len(sources)


def peak_memory(session: requests.Session, url: str, path: str) -> int:
    """Peak traced Python memory (bytes) while rendering the page's HTML."""
    tracemalloc.reset_peak()
    session.get(url + path, timeout=300)
    return tracemalloc.get_traced_memory()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=100, help="distinct 480x360 images (default 100)")
    parser.add_argument("--total", type=int, default=100_000, help="images in the commit (default 100000)")
    parser.add_argument("--page", type=int, default=100, help="overlays on a page (default 100)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        populated = populate(work / "lakefs", args.images, max(args.total, args.images))
        server = create_server(work / "lakefs", fsync=False).start_in_thread()
        settings = LakeFSSettings(server.endpoint, server.access_key_id, server.secret_access_key)
        app = create_app(
            LakeFSReader(LakeFS(settings, home=work / "home")),
            MlflowClient(f"sqlite:///{work / 'mlflow.db'}"),
            ThumbnailCache(work / "thumbnails"),
        )
        listener = socket.create_server(("127.0.0.1", 0))
        web = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        threading.Thread(target=web.run, kwargs={"sockets": [listener]}, daemon=True).start()
        while not web.started:
            time.sleep(0.05)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        first = f"/repos/{REPO}/commits/main?split=train&amount={args.page}"
        deep = first + f"&after=data/images/train/img-{max(0, args.total - 2 * args.page):08d}.png"
        with requests.Session() as session:
            cold, count = load_page(session, url, first)
            warm = min(load_page(session, url, first)[0] for _ in range(3))
            deep_cold = load_page(session, url, deep)[0]
            deep_warm = min(load_page(session, url, deep)[0] for _ in range(3))
            tracemalloc.start()
            peaks = [peak_memory(session, url, path) for path in (first, deep)]
            tracemalloc.stop()
        web.should_exit = True
        server.shutdown()
    print(f"commit of {args.total} images ({args.images} distinct 480x360) populated in {populated:.1f} s")
    print(
        f"first page, {count} pictures ({count // 2} overlays): cold {cold:.2f} s, warm {warm:.2f} s "
        f"({warm / TARGET_S:.2f} of the {TARGET_S:g} s target)"
    )
    print(f"page after image {args.total - 2 * args.page}: cold {deep_cold:.2f} s, warm {deep_warm:.2f} s")
    print(f"peak Python memory rendering a page: first {peaks[0] / 2**20:.1f} MiB, deep {peaks[1] / 2**20:.1f} MiB")
    print(
        f"{'PASS' if warm <= TARGET_S else 'FAIL'}: a page of {count // 2} overlays renders warm in "
        f"{warm:.2f} s <= {TARGET_S:g} s"
    )
    bounded = peaks[1] <= 2 * peaks[0] + 2**20
    print(
        f"{'PASS' if bounded else 'FAIL'}: memory of a page deep in {args.total} images stays at that of the first "
        f"page ({peaks[1] / 2**20:.1f} vs {peaks[0] / 2**20:.1f} MiB)"
    )


if __name__ == "__main__":
    main()
