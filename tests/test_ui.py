"""``segmodels ui`` against a real chain (ingest, train 1 epoch, register, infer committing its predictions, then a
second ingest with two masks changed and one image added), served by uvicorn on a free port: HTTP-level checks of
every page and, in headless Chromium, the commit log, a grid of overlays, the diff and a model page."""

from __future__ import annotations

import io
import os
import re
import shutil
import socket
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import quote

import pytest
import requests
import uvicorn
from mlflow.tracking import MlflowClient
from PIL import Image
from test_compare import LocalChain, edit_mask

from segmodels.data import generate_demo_dataset
from segmodels.tracking import lineage
from segmodels.ui.app import create_app
from segmodels.ui.lakefs_reader import LakeFSReader
from segmodels.ui.thumbnails import ThumbnailCache
from segmodels.versioning import LakeFS, LakeFSSettings

pytestmark = pytest.mark.slow  # the module's chain trains a model (about 30 s on 2 loaded cores)
CHANGED = ("demo_00003", "demo_00007")
ADDED = "demo_extra"


def add_image(source: Path, name: str) -> None:
    """A copy of the first sample under a new name (a new image and mask)."""
    for folder, suffix in (("images", ".png"), ("masks", ".png")):
        shutil.copy(source / folder / f"demo_00000{suffix}", source / folder / f"{name}{suffix}")


@pytest.fixture(scope="module")
def chain(tmp_path_factory, lakefs_server):
    chain = LocalChain(tmp_path_factory.mktemp("ui"), lakefs_server)
    source = generate_demo_dataset(chain.root / "source", num_images=16, image_size=32, seed=5)
    chain.first = chain.ingest(source)
    chain.train_run = chain.train(0.003)
    chain.step("register", "--run_id", chain.train_run.info.run_id)
    data_uri = chain.first.data.tags[lineage.TAG_DATA_URI]
    chain.step(
        "infer",
        "--model_uri",
        "models:/segmodels/1",
        "--data_ref",
        data_uri,
        "--commit_predictions",
        "true",
        "--output_dir",
        str(chain.root / "predictions"),
        "batch_size=4",
    )
    chain.infer_run = chain.newest("infer")
    for name in CHANGED:
        edit_mask(source, name)
    add_image(source, ADDED)
    chain.second = chain.ingest(source)
    chain.commits = [run.data.tags[lineage.TAG_DATA_COMMIT] for run in (chain.first, chain.second)]
    return chain


@pytest.fixture(scope="module")
def ui(chain, lakefs_server, tmp_path_factory):
    """The app on a free 127.0.0.1 port (uvicorn in a thread), over the chain's store and server."""
    settings = LakeFSSettings(lakefs_server.endpoint, lakefs_server.access_key_id, lakefs_server.secret_access_key)
    cache = ThumbnailCache(tmp_path_factory.mktemp("thumbnails"))
    app = create_app(LakeFSReader(LakeFS(settings)), MlflowClient(chain.env["MLFLOW_TRACKING_URI"]), cache)
    listener = socket.create_server(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    yield SimpleNamespace(url=f"http://127.0.0.1:{listener.getsockname()[1]}", chain=chain, cache=cache)
    server.should_exit = True
    thread.join(timeout=30)


def get(ui, path: str, status: int = 200) -> requests.Response:
    response = requests.get(ui.url + path, timeout=120, allow_redirects=True)
    assert response.status_code == status, (path, response.status_code, response.text[:500])
    return response


def image_sources(html: str) -> list[str]:
    return [src.replace("&amp;", "&") for src in re.findall(r'<img[^>]* src="([^"]+)"', html)]


# -- HTTP ------------------------------------------------------------------------------------------------------


def test_commit_log_lists_both_ingests_with_the_runs_and_model_that_used_them(ui):
    chain = ui.chain
    html = get(ui, f"/repos/{chain.repo}").text
    first, second = chain.commits
    assert html.index(second[:12]) < html.index(first[:12])  # newest first
    assert chain.train_run.info.run_id[:8] in html and chain.first.info.run_id[:8] in html
    assert "model segmodels/1" in html and "@champion" in html
    assert "source" in html and "images" in html  # the commit metadata
    assert f'href="/repos/{chain.repo}"' in get(ui, f"/?prefix={chain.repo[:5]}").text


def test_repositories_are_found_by_name_prefix_and_paged_with_it(ui):
    """The shared server holds the repositories of many tests: a prefix finds one, and "more" keeps the prefix."""
    repo = ui.chain.repo
    found = get(ui, f"/?prefix={repo}").text
    assert re.findall(r'href="/repos/([^"]+)"', found) == [repo] and f'value="{repo}"' in found
    assert "no repository starts with zz-none" in get(ui, "/?prefix=zz-none").text

    def every_page(path: str) -> list[str]:
        names = []
        for _ in range(1000):
            html = get(ui, path).text
            names += re.findall(r'href="/repos/([^"]+)"', html)
            more = re.search(r'<a href="\?([^"]*)">more</a>', html)
            if not more:
                return names
            path = "/?" + more.group(1).replace("&amp;", "&")
        raise AssertionError("more than 1000 pages")

    everything = every_page("/?amount=1000")
    assert repo in everything and everything == sorted(set(everything))
    assert every_page("/?amount=2") == everything  # pages of 2, each "more" going on after the last
    family = repo[:3]  # "ui-": this module's chains
    assert every_page(f"/?prefix={family}&amount=1") == [name for name in everything if name.startswith(family)]
    get(ui, "/?amount=0", status=400)


def test_grid_shows_a_page_of_images_with_mask_overlays_that_load(ui):
    chain = ui.chain
    html = get(ui, f"/repos/{chain.repo}/commits/{chain.commits[0]}?split=train&amount=5").text
    sources = image_sources(html)
    photos = [src for src in sources if "/image?" in src]
    masks = [src for src in sources if "/mask?" in src]
    assert len(photos) == len(masks) == 5 and 'id="next-page"' in html
    for src in photos + masks:
        response = get(ui, src)
        picture = Image.open(io.BytesIO(response.content))
        assert picture.size == (32, 32)  # smaller than a thumbnail: as stored
    assert "circle" in html and "pixel share" in html
    cached = {path.name for path in ui.cache.root.rglob("*") if path.is_file()}
    assert sum("-image-" in name for name in cached) >= 5 and sum("-mask-" in name for name in cached) >= 5


def test_grid_pages_through_a_split_once_each_and_stops_at_its_end(ui):
    chain = ui.chain
    page = f"/repos/{chain.repo}/commits/{chain.commits[1]}"
    path, names, pages = page + "?split=train&amount=5", [], 0
    while path:
        html = get(ui, path).text
        names += re.findall(r'<span class="caption">([^<]+)</span>', html)
        pages += 1
        found = re.findall(r'href="([^"]+)" id="next-page"', html)
        path = page + found[0].replace("&amp;", "&") if found else ""  # a link relative to the page
    assert pages == 3 and len(names) == len(set(names)) == 13 and ADDED in names  # 12 + the added image
    whole = get(ui, page + "?split=train&amount=13").text  # a page that ends exactly at the split's end
    assert len(re.findall(r'<span class="caption">', whole)) == 13 and 'id="next-page"' not in whole


def test_grid_filtered_by_class_shows_only_images_holding_it(ui):
    chain = ui.chain
    html = get(ui, f"/repos/{chain.repo}/commits/{chain.commits[0]}?split=val&cls=1").text
    assert "no images with class 1" in html  # the val split has no circle (0.0% of its pixels)
    html = get(ui, f"/repos/{chain.repo}/commits/{chain.commits[0]}?split=train&cls=1").text
    assert image_sources(html)


def test_sample_page_shows_image_mask_and_overlay_at_full_size(ui):
    chain = ui.chain
    listing = get(ui, f"/repos/{chain.repo}/commits/{chain.commits[0]}?split=train&amount=1").text
    [link] = re.findall(r'href="(/repos/[^"]+/sample\?[^"]+)"', listing)
    html = get(ui, link.replace("&amp;", "&")).text
    assert len(image_sources(html)) == 4 and "size=0" in html and "overlay" in html


def test_diff_of_two_commits_shows_exactly_the_two_changed_masks_and_the_added_image(ui):
    chain = ui.chain
    first, second = chain.commits
    html = get(ui, f"/repos/{chain.repo}/diff?left={first}&right={second}").text
    changed = re.findall(r'class="change changed" data-sample="([^"]+)"', html)
    added = re.findall(r'class="change added" data-sample="([^"]+)"', html)
    assert sorted(changed) == sorted(CHANGED) and added == [ADDED]
    assert 'class="change removed"' not in html
    assert "circle" in html and " pp" in html  # class-share change
    for src in image_sources(html):
        get(ui, src)


def test_model_page_shows_curves_config_and_predictions_sorted_by_iou(ui):
    chain = ui.chain
    html = get(ui, "/models/segmodels/1").text
    assert chain.train_run.info.run_id in html and "learning curves" in html.lower()
    assert "optimizer" in html and chain.commits[0][:12] in html
    get(ui, f"/runs/{chain.train_run.info.run_id}/artifact?path=learning_curves.png")
    ious = [float(value) for value in re.findall(r'<td class="iou">([0-9.]+)</td>', html)]
    assert ious and ious == sorted(ious)  # worst first
    for src in image_sources(html):
        get(ui, src)
    best_first = get(ui, f"/runs/{chain.train_run.info.run_id}?sort=iou_desc").text
    assert [float(v) for v in re.findall(r'<td class="iou">([0-9.]+)</td>', best_first)] == sorted(ious, reverse=True)


def test_compare_page_names_the_data_change(ui):
    chain = ui.chain
    a, b = (f"lakefs://{chain.repo}/{commit}/data" for commit in chain.commits)
    html = get(ui, f"/compare?a={quote(a)}&b={quote(b)}").text
    assert "2 changed" in html and "1 added" in html


@pytest.mark.parametrize(
    "path, status",
    [
        ("/repos/NOT_A_REPO", 400),
        ("/repos/nosuchrepo1", 404),
        ("/repos/{repo}/commits/{bad}", 400),
        ("/repos/{repo}/commits/{missing}", 404),
        ("/thumb/{repo}/{commit}/image?path=../etc/passwd", 400),
        ("/thumb/{repo}/{commit}/image?path=data/images/train/nope.png", 404),
        ("/repos/{repo}/commits/{commit}/sample?path=data/dataset.yaml", 400),
        ("/runs/0123456789abcdef", 404),
        ("/models/segmodels/99", 404),
        ("/runs/{run}/artifact?path=config/train.yaml", 404),
        ("/repos/{repo}/commits/{commit}?amount=many", 400),
        ("/repos/{repo}/commits/{commit}?amount=100000", 400),
        ("/thumb/{repo}/{commit}/image?path=data/" + "x" * 2000, 400),
    ],
)
def test_bad_repository_ref_or_path_is_a_400_or_404_page_with_one_line(ui, path, status):
    chain = ui.chain
    url = path.format(
        repo=chain.repo, bad=quote("a b"), missing="f" * 64, commit=chain.commits[0], run=chain.train_run.info.run_id
    )
    html = get(ui, url, status=status).text
    [message] = re.findall(r'<p class="error">(.*?)</p>', html, re.S)
    assert "\n" not in message.strip() and len(message) <= 200


def test_no_page_shows_a_credential(ui, lakefs_server):
    chain = ui.chain
    for path in (
        "/",
        f"/repos/{chain.repo}",
        f"/repos/{chain.repo}/commits/{chain.commits[0]}",
        "/models/segmodels/1",
        f"/repos/{chain.repo}/diff?left={chain.commits[0]}&right={chain.commits[1]}",
    ):
        html = get(ui, path).text
        assert lakefs_server.secret_access_key not in html and lakefs_server.access_key_id not in html


# -- a real browser ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not chromium or not driver_path:
        pytest.skip("headless Chromium is absent (apt-get install -y chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(argument)
    from selenium.webdriver.chrome.service import Service

    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    driver.set_page_load_timeout(120)
    yield driver
    driver.quit()


@pytest.fixture
def screenshots(tmp_path) -> Path:
    folder = Path(os.environ.get("SEGMODELS_TEST_ARTIFACTS") or tmp_path) / "ui-screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def load(browser, url: str) -> None:
    """Open ``url`` and wait until every picture on it has loaded or failed."""
    browser.get(url)
    deadline = time.monotonic() + 60
    while not browser.execute_script("return Array.from(document.images).every(i => i.complete)"):
        assert time.monotonic() < deadline, f"pictures of {url} still loading"
        time.sleep(0.1)


def loaded_sizes(browser, selector: str) -> list[tuple[int, int]]:
    return [
        tuple(size)
        for size in browser.execute_script(
            f"return Array.from(document.querySelectorAll({selector!r})).map(i => [i.naturalWidth, i.naturalHeight])"
        )
    ]


def test_browser_commit_log_lists_the_ingest_commit(ui, browser, screenshots):
    load(browser, f"{ui.url}/repos/{ui.chain.repo}")
    rows = browser.execute_script(
        "return Array.from(document.querySelectorAll('tr.commit')).map(r => r.dataset.commit)"
    )
    assert ui.chain.commits[0] in rows and ui.chain.commits[1] in rows
    browser.save_screenshot(str(screenshots / "commit-log.png"))


def test_browser_grid_loads_every_overlay_and_the_slider_changes_the_mask_opacity(ui, browser, screenshots):
    from selenium.webdriver.common.by import By

    load(browser, f"{ui.url}/repos/{ui.chain.repo}/commits/{ui.chain.commits[1]}?split=train")
    photos, masks = loaded_sizes(browser, ".grid img.photo"), loaded_sizes(browser, ".grid img.mask")
    assert len(photos) == len(masks) == 13  # 12 training images and the one added
    assert set(photos) == set(masks) == {(32, 32)}
    assert not browser.find_elements(By.CSS_SELECTOR, "img.broken")
    browser.execute_script(
        "const s = document.getElementById('opacity'); s.value = 90;s.dispatchEvent(new Event('input'))"
    )
    opacity = browser.execute_script("return getComputedStyle(document.querySelector('.grid img.mask')).opacity")
    assert float(opacity) == pytest.approx(0.9)
    browser.save_screenshot(str(screenshots / "grid.png"))


def test_browser_diff_shows_exactly_the_three_changes(ui, browser, screenshots):
    first, second = ui.chain.commits
    load(browser, f"{ui.url}/repos/{ui.chain.repo}/diff?left={first}&right={second}")
    changes = browser.execute_script(
        "return Array.from(document.querySelectorAll('.change')).map(c => [c.className, c.dataset.sample])"
    )
    assert sorted(changes) == sorted(
        [["change changed", CHANGED[0]], ["change changed", CHANGED[1]], ["change added", ADDED]]
    )
    assert all(width > 0 for width, _ in loaded_sizes(browser, ".change img"))
    browser.save_screenshot(str(screenshots / "diff.png"))


def test_browser_model_page_shows_curves_and_predictions(ui, browser, screenshots):
    load(browser, f"{ui.url}/models/segmodels/1")
    [curves] = loaded_sizes(browser, "img.curves")
    assert curves[0] > 100
    predictions = loaded_sizes(browser, "table.predictions img")
    assert predictions and len(predictions) % 3 == 0 and all(width > 0 for width, _ in predictions)
    assert not browser.find_elements("css selector", "img.broken")
    browser.save_screenshot(str(screenshots / "model.png"))


def test_ui_on_a_busy_port_is_one_line_and_exit_1(capsys):
    from segmodels.cli import main

    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        with pytest.raises(SystemExit) as exited:
            main(["ui", "--port", str(port)])
    assert exited.value.code == 1
    expected = f"segmodels ui: error: cannot listen on 127.0.0.1:{port}: Address already in use\n"
    assert capsys.readouterr().err == expected


def test_compare_page_of_a_model_version_and_its_train_run(ui):
    chain = ui.chain
    html = get(ui, f"/compare?a={quote('models:/segmodels@champion')}&b={chain.train_run.info.run_id}").text
    assert "A: model segmodels/1 @champion" in html and "validated on the same data commit" in html
    html = get(ui, f"/compare?a={quote('models:/segmodels/7')}&b={chain.train_run.info.run_id}", status=400).text
    assert "models:/segmodels/7" in html


def test_mlflow_links_only_for_a_tracking_server_and_without_user_info():
    from segmodels.ui.views import mlflow_ui_url

    assert mlflow_ui_url("sqlite:///x/mlflow.db", "1", "abc") == ""
    assert (
        mlflow_ui_url("https://user:pass@mlflow.example.com:5000/", "1", "abc")
        == "https://mlflow.example.com:5000/#/experiments/1/runs/abc"
    )
