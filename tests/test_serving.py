"""Serving with ``mlflow models serve``: a real scoring-server subprocess serves ``models:/segmodels@champion``,
whose registered version's source is a ``lakefs://`` URI pinned to a commit of the embedded lakeFS server, read
through the ``lakefs`` artifact repository plugin. Every request form and every command the README's "Serving"
section shows is run here as written (the server command, the curl request, the decoding line, the Python
block), against a real photo (``../shared/realdata``) or, where that folder is absent, a generated 1280x720 one."""

from __future__ import annotations

import base64
import io
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest
import requests
import torch
from mlflow.tracking import MlflowClient
from PIL import Image

from segmodels.inference.pyfunc import encode_png, save_pyfunc_model
from segmodels.model_store import publish_model
from segmodels.models import ModelSpec, create_model, save_package
from segmodels.tracking import lineage
from segmodels.tracking.models import register_version
from segmodels.versioning import LakeFS, LakeFSSettings, LakeFSUri

pytestmark = pytest.mark.slow

PROJECT = Path(__file__).resolve().parents[1]
REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"
REAL_PHOTO = REALDATA / "human_seg" / "Training_Images" / "271.jpg"  # a 1200x793 RGB camera photo
MODEL_NAME = "segmodels"  # the README's name: its commands run here as written
NUM_CLASSES = 4
STARTUP_DEADLINE_S = 180.0
REQUEST_TIMEOUT_S = 120.0


# -- the README's "Serving" section ------------------------------------------------------------------------------
def serving_section() -> str:
    readme = (PROJECT / "README.md").read_text()
    match = re.search(r"^## Serving\n(.*?)(?=^## |\Z)", readme, flags=re.S | re.M)
    assert match, "README.md has no '## Serving' section"
    return match.group(1)


def section_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", serving_section(), flags=re.S)


def section_commands() -> list[str]:
    """The shell commands of the section's bash blocks, continuation lines joined."""
    return [
        line.strip()
        for block in section_blocks("bash")
        for line in block.replace("\\\n", " ").splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]


def readme_command(prefix: str) -> str:
    [command] = [command for command in section_commands() if command.startswith(prefix)]
    return command


# -- a registered model in lakeFS, and the server --------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_photo(folder: Path) -> Path:
    """``folder/photo.jpg``: a real camera photo when ``../shared/realdata`` is there, else a generated 1280x720
    RGB picture (smooth gradients and noise, JPEG-encoded)."""
    photo = folder / "photo.jpg"
    if REAL_PHOTO.is_file():
        shutil.copyfile(REAL_PHOTO, photo)
    else:
        rows, cols = np.mgrid[0:720, 0:1280]
        noise = np.random.default_rng(0).integers(0, 40, (720, 1280, 3))
        image = np.stack([cols * 200 // 1280, rows * 200 // 720, (rows + cols) % 200], axis=-1) + noise
        Image.fromarray(image.astype(np.uint8)).save(photo, format="JPEG", quality=90)
    return photo


def register_tiny_model(lakefs: LakeFS, repo: str, folder: Path) -> str:
    """Build a small untrained model (no training: fast), commit its MLflow pyfunc folder to lakeFS and register it
    as ``segmodels@champion`` with the pinned ``lakefs://`` URI as source; returns that URI."""
    torch.manual_seed(0)
    model = create_model("unet", NUM_CLASSES, encoder_name="resnet18", decoder_channels=[16, 16, 16, 8, 8]).eval()
    spec = ModelSpec.from_model(
        model,
        num_classes=NUM_CLASSES,
        class_names=["background", "circle", "square", "triangle"],
        colors=[[0, 0, 0], [230, 25, 75], [60, 180, 75], [0, 130, 200]],
        image_size=[64, 64],
    )
    package = save_package(model, spec, folder / "package")
    model_dir = save_pyfunc_model(package, folder / "mlflow-model")
    lakefs.ensure_repository(repo)
    with mlflow.start_run() as run:
        uri = publish_model(
            lakefs, model_dir, repo, "models", "models", run.info.run_id, metadata={}, source_ref="main"
        )
    client = MlflowClient()
    version = register_version(client, MODEL_NAME, run.info.run_id, {lineage.TAG_MODEL_URI: str(uri)}, {})
    client.set_registered_model_alias(MODEL_NAME, "champion", version.version)
    return str(uri)


class Served:
    """What the server fixture hands the tests."""

    def __init__(self, url: str, env: dict[str, str], model_uri: str, photo: Path) -> None:
        self.url, self.env, self.model_uri, self.photo = url, env, model_uri, photo

    def post(self, body: dict) -> requests.Response:
        return requests.post(f"{self.url}/invocations", json=body, timeout=REQUEST_TIMEOUT_S)


def log_tail(log: Path, chars: int = 6000) -> str:
    return log.read_text(errors="replace")[-chars:] if log.is_file() else "(no log)"


def wait_until_up(proc: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_DEADLINE_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"mlflow models serve exited with {proc.returncode}; log tail:\n{log_tail(log)}")
        try:
            if requests.get(f"{url}/ping", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise AssertionError(f"mlflow models serve not up within {STARTUP_DEADLINE_S:.0f} s; log tail:\n{log_tail(log)}")


def stop(proc: subprocess.Popen) -> None:
    """End the server's process group (the CLI and the uvicorn it runs): SIGTERM, then SIGKILL."""
    if proc.poll() is not None:
        return
    for sig, grace in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture(scope="module")
def served(lakefs_server, tmp_path_factory):
    """``mlflow models serve -m models:/segmodels@champion --env-manager local`` as the README shows it,
    on a free port, over a sqlite store in a temp folder, reading the model from the session's embedded lakeFS."""
    folder = tmp_path_factory.mktemp("serving")
    env = {
        "LAKECTL_SERVER_ENDPOINT_URL": lakefs_server.endpoint,
        "LAKECTL_CREDENTIALS_ACCESS_KEY_ID": lakefs_server.access_key_id,
        "LAKECTL_CREDENTIALS_SECRET_ACCESS_KEY": lakefs_server.secret_access_key,
        "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}",
        "SEGMODELS_HOME": str(folder / "segmodels-home"),
    }
    lakefs = LakeFS(
        LakeFSSettings(lakefs_server.endpoint, lakefs_server.access_key_id, lakefs_server.secret_access_key),
        home=folder / "client-home",
    )
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
        try:
            model_uri = register_tiny_model(lakefs, f"serve-{os.getpid()}", folder)
        finally:
            mlflow.set_tracking_uri(None)

    argv = shlex.split(readme_command("mlflow models serve"))
    port = free_port()
    argv[:1] = [sys.executable, "-m", "mlflow"]
    argv[argv.index("-p") + 1] = str(port)
    argv += ["-h", "127.0.0.1"]
    # the CLI starts `uvicorn` from PATH, as in an activated virtual environment
    server_env = {**os.environ, **env, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    log = folder / "serve.log"
    url = f"http://127.0.0.1:{port}"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            argv,
            cwd=folder,
            env=server_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        wait_until_up(proc, url, log)
        yield Served(url, env, model_uri, make_photo(folder))
    finally:
        stop(proc)


# -- the tests -----------------------------------------------------------------------------------------------------
def b64_file(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode("ascii")


def decode_mask(value: str) -> np.ndarray:
    with Image.open(io.BytesIO(base64.b64decode(value, validate=True))) as image:
        assert image.format == "PNG" and image.mode == "L", (image.format, image.mode)
        return np.asarray(image)


def assert_mask(mask, height: int, width: int) -> np.ndarray:
    mask = np.asarray(mask)
    assert mask.shape == (height, width)
    assert np.issubdtype(mask.dtype, np.integer) and mask.min() >= 0 and mask.max() < NUM_CLASSES
    return mask


def test_the_registered_version_is_a_pinned_lakefs_uri(served):
    uri = LakeFSUri.parse(served.model_uri)
    assert re.fullmatch(r"[0-9a-f]{64}", uri.ref), f"not pinned to a commit: {served.model_uri}"
    client = MlflowClient(served.env["MLFLOW_TRACKING_URI"])
    assert client.get_model_version_by_alias(MODEL_NAME, "champion").source == served.model_uri


def test_a_photo_as_base64_png_and_jpeg_gets_masks_at_each_images_size(served):
    photo = np.asarray(Image.open(served.photo).convert("RGB"))
    height, width = photo.shape[:2]
    assert height * width >= 600 * 400, "a real-size photo"
    crop = photo[100:150, 200:270]
    response = served.post(
        {
            "dataframe_split": {
                "columns": ["image"],
                "data": [[encode_png(photo)], [b64_file(served.photo)], [encode_png(crop)]],
            }
        }
    )
    assert response.status_code == 200, response.text[:2000]
    body = response.json()
    assert list(body) == ["predictions"] and len(body["predictions"]) == 3
    assert all(list(row) == ["mask"] and isinstance(row["mask"], str) for row in body["predictions"])
    png, jpeg, small = (decode_mask(row["mask"]) for row in body["predictions"])
    assert_mask(png, height, width)
    assert_mask(jpeg, height, width)
    assert_mask(small, 50, 70)

    # the same rows as records, and the masks as arrays of class ids
    records = served.post({"dataframe_records": [{"image": encode_png(photo)}]})
    assert records.status_code == 200, records.text[:2000]
    np.testing.assert_array_equal(decode_mask(records.json()["predictions"][0]["mask"]), png)
    arrays = served.post(
        {
            "dataframe_split": {"columns": ["image"], "data": [[encode_png(photo)]]},
            "params": {"output_format": "array", "batch_size": 2},
        }
    )
    assert arrays.status_code == 200, arrays.text[:2000]
    np.testing.assert_array_equal(assert_mask(arrays.json()["predictions"][0]["mask"], height, width), png)


def test_images_as_nested_lists_are_served(served):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (24, 40, 3), dtype=np.uint8)
    other = rng.integers(0, 256, (24, 40, 3), dtype=np.uint8)
    # a DataFrame cell holding an HxWx3 list: a base64 PNG mask, or an array with output_format=array
    records = served.post({"dataframe_records": [{"image": image.tolist()}]})
    assert records.status_code == 200, records.text[:2000]
    expected = assert_mask(decode_mask(records.json()["predictions"][0]["mask"]), 24, 40)
    as_array = served.post({"dataframe_records": [{"image": image.tolist()}], "params": {"output_format": "array"}})
    np.testing.assert_array_equal(as_array.json()["predictions"][0]["mask"], expected)
    # "inputs": one HxWx3 image, or NxHxWx3 images of one size ("instances" alike): a list of HxW masks
    single = served.post({"inputs": image.tolist()})
    assert single.status_code == 200, single.text[:2000]
    [mask] = single.json()["predictions"]
    np.testing.assert_array_equal(mask, expected)
    for key in ("inputs", "instances"):
        batch = served.post({key: [image.tolist(), other.tolist()], "params": {"batch_size": 1}})
        assert batch.status_code == 200, batch.text[:2000]
        first, second = batch.json()["predictions"]
        np.testing.assert_array_equal(first, expected)
        assert_mask(second, 24, 40)


def test_base64_images_under_inputs_are_served(served):
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, size, dtype=np.uint8) for size in ((24, 40, 3), (30, 20, 3))]
    encoded = []
    for image in images:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        encoded.append(base64.b64encode(buffer.getvalue()).decode("ascii"))
    by_key = served.post({"inputs": {"image": encoded}})  # the column by itself: masks as base64 PNGs
    assert by_key.status_code == 200, by_key.text[:2000]
    masks = [decode_mask(row["mask"]) for row in by_key.json()["predictions"]]
    assert [mask.shape for mask in masks] == [(24, 40), (30, 20)]
    as_list = served.post({"inputs": encoded})  # a list of base64 strings: one HxW list per image
    assert as_list.status_code == 200, as_list.text[:2000]
    for mask, expected in zip(as_list.json()["predictions"], masks):
        np.testing.assert_array_equal(mask, expected)


def test_a_request_the_model_cannot_read_is_a_400_not_a_crash(served):
    """The reason is the answer's message (MLflow's scoring server prefixes the request it failed on), not a
    generic one with the reason buried in a stack trace."""
    response = served.post({"dataframe_split": {"columns": ["picture"], "data": [["x"]]}})
    assert response.status_code == 400, response.text[:2000]
    body = response.json()
    assert body["error_code"] == "INVALID_PARAMETER_VALUE"
    assert body["message"].endswith("input DataFrame needs a column 'image', got ['picture']"), body["message"]
    assert "Traceback" not in response.text
    garbage = served.post(
        {"dataframe_split": {"columns": ["image"], "data": [[base64.b64encode(b"not an image").decode()]]}}
    )
    assert garbage.status_code == 400 and "image bytes are not a readable PNG/JPEG" in garbage.json()["message"]
    assert requests.get(f"{served.url}/ping", timeout=10).status_code == 200


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_the_readme_curl_request_and_mask_decoding_work_as_written(served, tmp_path):
    shutil.copyfile(served.photo, tmp_path / "photo.jpg")
    port = served.url.rsplit(":", 1)[1]
    [request] = [command for command in section_commands() if "/invocations" in command]
    request = request.replace("127.0.0.1:5001", f"127.0.0.1:{port}")
    assert f"127.0.0.1:{port}/invocations" in request
    [decode] = [command for command in section_commands() if "mask.png" in command]
    # python3 as in the README's activated environment: this interpreter's folder first on PATH
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for command in (request, decode):
        result = subprocess.run(
            ["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=REQUEST_TIMEOUT_S
        )
        assert result.returncode == 0, f"{command}\n{result.stdout[-2000:]}{result.stderr[-2000:]}"
    height, width = np.asarray(Image.open(served.photo)).shape[:2]
    with Image.open(tmp_path / "mask.png") as mask:
        assert_mask(np.asarray(mask), height, width)


def test_the_readme_python_block_works_as_written(served, tmp_path, monkeypatch):
    for key, value in served.env.items():
        if key != "SEGMODELS_HOME":  # the isolated home the autouse fixture set
            monkeypatch.setenv(key, value)
    shutil.copyfile(served.photo, tmp_path / "photo.jpg")
    monkeypatch.chdir(tmp_path)
    [block] = section_blocks("python")
    namespace: dict = {}
    exec(compile(block, "README.md (Serving)", "exec"), namespace)  # noqa: S102 - the README's own example
    height, width = np.asarray(Image.open(served.photo)).shape[:2]
    image = namespace["image"]
    assert image.shape == (height, width, 3) and image.dtype == np.uint8
    assert_mask(namespace["mask"], height, width)
    assert [np.asarray(m).shape for m in namespace["masks"]] == [(height, width), (240, 320)]
    assert_mask(namespace["batch"][1], height, width)
    [array] = namespace["arrays"]
    np.testing.assert_array_equal(assert_mask(array, height, width), namespace["mask"])
    np.testing.assert_array_equal(decode_mask(namespace["out"]["mask"][0]), namespace["mask"])
