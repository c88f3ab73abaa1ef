"""Prediction on images of any size, visualisation, and the MLflow pyfunc flavour over a model package."""
from __future__ import annotations

import base64
import io
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.exceptions import MlflowException
from PIL import Image

from segmodels.inference import predict
from segmodels.inference.pyfunc import encode_png, save_pyfunc_model
from segmodels.models import ModelSpec, create_model, load_package, save_package
from segmodels.visualize import colorize, overlay

PROJECT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    torch.manual_seed(0)
    model = create_model("unet", 3, encoder_name="resnet18", decoder_channels=[16, 16, 16, 8, 8]).eval()
    spec = ModelSpec.from_model(model, num_classes=3, class_names=["bg", "a", "b"],
                                colors=[[0, 0, 0], [255, 0, 0], [0, 255, 0]], image_size=[32, 32])
    return save_package(model, spec, tmp_path_factory.mktemp("pkg") / "package")


def test_predict_returns_masks_at_input_size(package):
    model, spec = load_package(package)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (40, 50, 3), dtype=np.uint8), rng.integers(0, 256, (32, 32), dtype=np.uint8)]
    masks = predict(model, spec, images, batch_size=1)
    assert [m.shape for m in masks] == [(40, 50), (32, 32)]
    assert all(m.dtype == np.uint8 and m.max() < 3 for m in masks)
    # same as the model's own arg-max on the normalised input when no resize is needed
    x = (torch.from_numpy(images[1]).float()[None, None].expand(1, 3, 32, 32) / 255
         - torch.tensor(spec.mean).view(1, 3, 1, 1)) / torch.tensor(spec.std).view(1, 3, 1, 1)
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
    assert [np.asarray(Image.open(io.BytesIO(base64.b64decode(v)))).shape for v in by_key["mask"]] == [(24, 36), (30, 20)]
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
    script = ("import sys, numpy as np, mlflow\n"
              "from segmodels.inference.pyfunc import save_pyfunc_model\n"
              "path = save_pyfunc_model(sys.argv[1], sys.argv[2])\n"
              "mlflow.pyfunc.load_model(str(path)).predict(np.zeros((8, 8, 3), np.uint8))\n")
    result = subprocess.run([sys.executable, "-c", script, str(package), str(tmp_path / "mlflow-model")],
                            cwd=PROJECT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "type hint" not in result.stderr and "cloudpickle" not in result.stderr.lower(), result.stderr
    assert not list((tmp_path / "mlflow-model").glob("*.pkl"))
