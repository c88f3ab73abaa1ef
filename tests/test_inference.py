"""Prediction on images of any size, visualisation, and the MLflow pyfunc flavour over a model package."""

from __future__ import annotations

import base64
import io
import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.exceptions import MlflowException
from PIL import Image

from segmodels.inference import InferenceOptions, predict
from segmodels.inference.pyfunc import encode_png, save_pyfunc_model
from segmodels.models import ModelSpec, create_model, load_package, save_package
from segmodels.visualize import colorize, overlay

PROJECT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    torch.manual_seed(0)
    model = create_model("unet", 3, encoder_name="resnet18", decoder_channels=[16, 16, 16, 8, 8]).eval()
    spec = ModelSpec.from_model(
        model,
        num_classes=3,
        class_names=["bg", "a", "b"],
        colors=[[0, 0, 0], [255, 0, 0], [0, 255, 0]],
        image_size=[32, 32],
    )
    return save_package(model, spec, tmp_path_factory.mktemp("pkg") / "package")


def test_predict_returns_masks_at_input_size(package):
    model, spec = load_package(package)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (40, 50, 3), dtype=np.uint8), rng.integers(0, 256, (32, 32), dtype=np.uint8)]
    masks = predict(model, spec, images, batch_size=1)
    assert [m.shape for m in masks] == [(40, 50), (32, 32)]
    assert all(m.dtype == np.uint8 and m.max() < 3 for m in masks)
    # same as the model's own arg-max on the normalised input when no resize is needed
    x = (
        torch.from_numpy(images[1]).float()[None, None].expand(1, 3, 32, 32) / 255
        - torch.tensor(spec.mean).view(1, 3, 1, 1)
    ) / torch.tensor(spec.std).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = model(x).argmax(1)[0].numpy()
    np.testing.assert_array_equal(masks[1], expected)


def test_a_batch_of_mixed_sizes_predicts_what_each_image_alone_does(package, monkeypatch):
    """Images of one size are resized back together (in slices bounded in bytes), in input order."""
    model, spec = load_package(package)
    rng = np.random.default_rng(1)
    shapes = [(40, 50, 3), (32, 32, 3), (40, 50, 3), (17, 90, 3), (40, 50, 3), (32, 32, 3), (64, 20, 3)]
    images = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in shapes]
    alone = [predict(model, spec, [image], batch_size=1)[0] for image in images]
    monkeypatch.setattr("segmodels.transforms.FULL_SIZE_LOGITS_BYTES", 2 * 4 * 3 * 40 * 50)
    for batch_size in (3, 7):
        together = predict(model, spec, images, batch_size=batch_size)
        assert [m.shape for m in together] == [s[:2] for s in shapes]
        for single, batched in zip(alone, together):
            np.testing.assert_array_equal(single, batched)


def test_colorize_and_overlay():
    mask = np.array([[0, 1], [2, 255]], dtype=np.uint8)
    colors = [[0, 0, 0], [255, 0, 0], [0, 255, 0]]
    rgb = colorize(mask, colors)
    assert rgb.shape == (2, 2, 3) and rgb[0, 1].tolist() == [255, 0, 0] and rgb[1, 1].tolist() == [0, 0, 0]
    blended = overlay(np.full((2, 2, 3), 100, np.uint8), mask, colors, alpha=0.5)
    assert blended[0, 1].tolist() == [178, 50, 50]
    with pytest.raises(ValueError, match="does not match"):
        overlay(np.zeros((3, 3, 3), np.uint8), mask, colors)


def test_pyfunc_model_is_self_contained_and_takes_every_documented_input_form(package, tmp_path):
    path = save_pyfunc_model(package, tmp_path / "mlflow-model")
    assert (path / "code" / "segmodels" / "models" / "package.py").is_file()
    requirements = (path / "requirements.txt").read_text()
    assert "torch==" in requirements and "segmodels" not in requirements  # segmodels travels as code_paths
    loaded = mlflow.pyfunc.load_model(str(path))
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (24, 36, 3), dtype=np.uint8)
    other = rng.integers(0, 256, (30, 20, 3), dtype=np.uint8)
    model, spec = load_package(package)
    expected, expected_other = predict(model, spec, [image, other])
    # through the pyfunc API (schema checks included): HxWx3, NxHxWx3, a list of arrays of different sizes
    np.testing.assert_array_equal(loaded.predict(image)[0], expected)
    batch = loaded.predict(np.stack([image, image]))
    assert len(batch) == 2 and all(np.array_equal(mask, expected) for mask in batch)
    masks = loaded.predict([image, other])
    assert [m.shape for m in masks] == [(24, 36), (30, 20)]
    np.testing.assert_array_equal(masks[1], expected_other)
    # a DataFrame of base64 PNG / JPEG in column "image": base64 PNG masks at each input's size
    buffer = io.BytesIO()
    Image.fromarray(other).save(buffer, format="JPEG")
    frame = pd.DataFrame({"image": [encode_png(image), base64.b64encode(buffer.getvalue()).decode()]})
    out = loaded.predict(frame)
    decoded = [np.asarray(Image.open(io.BytesIO(base64.b64decode(v)))) for v in out["mask"]]
    assert [m.shape for m in decoded] == [(24, 36), (30, 20)]
    np.testing.assert_array_equal(decoded[0], expected)
    arrays = loaded.predict(pd.DataFrame({"image": [image, image.tolist()]}), params={"output_format": "array"})
    np.testing.assert_array_equal(np.asarray(arrays["mask"][1]), expected)
    # as served: {"inputs": {"image": [...]}} arrives as a dict, {"inputs": ["<base64>", ...]} as a string array
    by_key = loaded.predict({"image": [encode_png(image), encode_png(other)]})
    shapes = [np.asarray(Image.open(io.BytesIO(base64.b64decode(v)))).shape for v in by_key["mask"]]
    assert shapes == [(24, 36), (30, 20)]
    from_strings = loaded.predict(np.array([encode_png(image), encode_png(other)]))
    np.testing.assert_array_equal(from_strings[1], expected_other)
    # an input it cannot read: an MlflowException of INVALID_PARAMETER_VALUE (a 400 when served) naming the reason
    with pytest.raises(MlflowException) as refused:
        loaded.predict(pd.DataFrame({"picture": [encode_png(image)]}))
    assert refused.value.error_code == "INVALID_PARAMETER_VALUE"
    assert refused.value.message == "input DataFrame needs a column 'image', got ['picture']"
    with pytest.raises(MlflowException, match=r"^image must be HxW, HxWx3 or HxWx4, got shape \(2, 3, 5\)$"):
        loaded.predict([np.zeros((2, 3, 5), np.uint8)])


def test_saving_and_loading_the_pyfunc_model_warns_of_nothing(package, tmp_path):
    """No MLflow warning about the wrapper's ``predict`` type hints, nor about pickling it with cloudpickle: the
    model folder holds the wrapper's code (models from code), not a pickle."""
    script = (
        "import sys, numpy as np, mlflow\n"
        "from segmodels.inference.pyfunc import save_pyfunc_model\n"
        "path = save_pyfunc_model(sys.argv[1], sys.argv[2])\n"
        "mlflow.pyfunc.load_model(str(path)).predict(np.zeros((8, 8, 3), np.uint8))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(package), str(tmp_path / "mlflow-model")],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "type hint" not in result.stderr and "cloudpickle" not in result.stderr.lower(), result.stderr
    assert not list((tmp_path / "mlflow-model").glob("*.pkl"))


# -- serving: every param checked, bounded input -------------------------------------------------------------------


def header_only_png(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` and that holds no pixel data (what a bomb's header
    says, without the bytes)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IEND", b"")
    )


def served_in_process(loaded, body: str) -> tuple[int, str]:
    """What MLflow's scoring server answers a JSON ``body`` with (its /invocations handler: ``invocations``, an
    MlflowException as its HTTP status and message), in this process."""
    from mlflow.pyfunc import scoring_server

    try:
        result = scoring_server.invocations(body, "application/json", loaded, loaded.metadata.get_input_schema())
        return result.status, result.response
    except MlflowException as error:
        return error.get_http_status_code(), error.message


@pytest.fixture(scope="module")
def pyfunc_dir(package, tmp_path_factory) -> Path:
    return save_pyfunc_model(package, tmp_path_factory.mktemp("pyfunc") / "mlflow-model")


@pytest.mark.parametrize(
    "params,reason",
    [
        ({"batch_size": -1}, "batch_size='-1': expected a whole number from 1 to 1024"),
        ({"batch_size": 0}, "batch_size='0': expected a whole number from 1 to 1024"),
        ({"batch_size": 5000}, "batch_size='5000': expected a whole number from 1 to 1024"),
        ({"output_format": "gif"}, "output_format='gif': expected one of png, array"),
        ({"tta": "vflip"}, "tta='vflip': expected one of false, hflip, flips"),
        ({"mode": "tiles"}, "mode='tiles': expected one of auto, resize, sliding"),
        ({"overlap": 0.8}, "overlap='0.8': expected a number from 0 to 0.75"),
    ],
)
def test_every_serving_param_is_checked_and_a_bad_one_is_a_400_saying_which(pyfunc_dir, params, reason):
    """batch_size=-1 answered 200 with no prediction before; the answer is the reason alone (the server echoed the
    whole request before it)."""
    loaded = mlflow.pyfunc.load_model(str(pyfunc_dir))
    body = json.dumps({"inputs": {"image": [encode_png(np.zeros((20, 20, 3), np.uint8))]}, "params": params})
    assert served_in_process(loaded, body) == (400, reason)


def test_tta_mode_and_overlap_reach_predict_from_a_request(package, pyfunc_dir, monkeypatch):
    loaded = mlflow.pyfunc.load_model(str(pyfunc_dir))
    model, spec = load_package(package)
    image = np.random.default_rng(5).integers(0, 256, (90, 70, 3), dtype=np.uint8)
    options = InferenceOptions(tta="hflip", mode="sliding", overlap=0.25)
    [expected] = predict(model, spec, [image], options=options)
    seen = []

    def spy(*args, **kwargs):
        seen.append((kwargs["batch_size"], kwargs["options"]))
        return predict(*args, **kwargs)

    monkeypatch.setattr("segmodels.inference.predict", spy)
    status, response = served_in_process(
        loaded,
        json.dumps(
            {
                "inputs": {"image": [encode_png(image)]},
                "params": {"tta": "hflip", "mode": "sliding", "overlap": 0.25, "batch_size": 3},
            }
        ),
    )
    assert status == 200
    mask = json.loads(response)["predictions"][0]["mask"]
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(base64.b64decode(mask)))), expected)
    assert seen == [(3, options)]


def test_deeply_nested_json_and_an_oversized_body_are_400s_saying_why(pyfunc_dir, monkeypatch):
    """JSON nested 1000 deep was a 500 (RecursionError in the server's parser); a body above the cap is refused
    before it is parsed."""
    monkeypatch.setenv("SEGMODELS_MAX_REQUEST_BYTES", "5000")
    loaded = mlflow.pyfunc.load_model(str(pyfunc_dir))
    deep = "[" * 1000 + "1" + "]" * 1000
    assert served_in_process(loaded, '{"inputs": {"image": ' + deep + "}}") == (
        400,
        "request JSON nested too deeply to parse (an image is at most 3 levels of lists)",
    )
    big = json.dumps({"inputs": {"image": ["A" * 6000]}})
    assert served_in_process(loaded, big) == (
        400,
        f"request body of {len(big)} bytes, above $SEGMODELS_MAX_REQUEST_BYTES=5000",
    )


def test_a_served_image_above_the_pixel_limit_is_refused_from_its_header(pyfunc_dir, monkeypatch):
    """A 12000x12000 PNG cost +4.1 GB and 18 s when served; its header now says it is too large, before any pixel
    is decoded (this one holds none). The limit is ingest's (Pillow's 89478485) unless set for serving."""
    loaded = mlflow.pyfunc.load_model(str(pyfunc_dir))
    bomb = base64.b64encode(header_only_png(12000, 12000)).decode()
    assert served_in_process(loaded, json.dumps({"inputs": {"image": [bomb]}})) == (
        400,
        "image of 12000x12000 = 144000000 pixels, above the limit of a served image "
        "$SEGMODELS_MAX_IMAGE_PIXELS=89478485 (refused before decoding)",
    )
    monkeypatch.setenv("SEGMODELS_MAX_IMAGE_PIXELS", "300")
    strict = mlflow.pyfunc.load_model(str(pyfunc_dir))
    with pytest.raises(
        MlflowException,
        match=r"^image of 20x16 = 320 pixels, above the limit of a served image "
        r"\$SEGMODELS_MAX_IMAGE_PIXELS=300$",
    ):
        strict.predict([np.zeros((16, 20, 3), np.uint8)])
    with pytest.raises(MlflowException, match=r"20x16 = 320 pixels.*=300 \(refused before decoding\)$"):
        strict.predict(pd.DataFrame({"image": [encode_png(np.zeros((16, 20, 3), np.uint8))]}))
    assert strict.predict([np.zeros((15, 20, 3), np.uint8)])[0].shape == (15, 20)
    monkeypatch.setenv("SEGMODELS_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(ValueError, match=r"^SEGMODELS_MAX_IMAGE_PIXELS='lots': expected a positive whole number$"):
        mlflow.pyfunc.load_model(str(pyfunc_dir))
