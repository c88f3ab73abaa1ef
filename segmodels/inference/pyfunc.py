"""MLflow pyfunc flavour over a model package: images in (arrays, or base64 PNG/JPEG in a DataFrame column
``image``), class-id masks out."""
from __future__ import annotations

import base64
import io
from importlib.metadata import version
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from PIL import Image

from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.types.schema import ParamSchema, ParamSpec

import segmodels
from segmodels.inference.predictor import InvalidInput

PACKAGE_ARTIFACT = "package"
IMAGE_COLUMN = "image"
MASK_COLUMN = "mask"
OUTPUT_FORMATS = ("png", "array")
# what the model needs to load and predict, pinned to the versions it was saved with; segmodels itself travels
# as code_paths (it is not on a package index)
RUNTIME_REQUIREMENTS = ("mlflow", "cloudpickle", "torch", "torchvision", "timm", "numpy", "pandas", "pillow", "pyyaml")
SIGNATURE = ModelSignature(
    inputs=None,  # any of the input forms below; a column schema would refuse arrays and lists
    outputs=None,
    params=ParamSchema([ParamSpec("batch_size", "long", 8), ParamSpec("output_format", "string", "png")]),
)


def decode_image(value) -> np.ndarray:
    """An RGB uint8 array from base64 text or raw bytes of a PNG/JPEG, or from an array-like."""
    if isinstance(value, str):
        try:
            value = base64.b64decode(value, validate=True)
        except ValueError as err:
            raise InvalidInput(f"image column value is not valid base64 ({err})") from None
    if isinstance(value, (bytes, bytearray)):
        try:
            with Image.open(io.BytesIO(value)) as image:
                return np.asarray(image.convert("RGB"))
        except OSError as err:
            raise InvalidInput(f"image bytes are not a readable PNG/JPEG ({err})") from None
    return np.asarray(value)


def encode_png(array: np.ndarray) -> str:
    """Base64 text of a lossless PNG of an image or class-id mask (uint8)."""
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


class SegmentationPyfunc(mlflow.pyfunc.PythonModel):
    """Serves a segmodels package.

    - ``pd.DataFrame`` with column ``image`` holding base64 PNG/JPEG strings, bytes, or image arrays / nested
      lists (JSON serving) -> ``pd.DataFrame`` with column ``mask``: the class-id mask at the image's size, as
      base64 PNG (param ``output_format="png"``, the default) or as a uint8 array (``"array"``);
    - a dict with key ``image`` (what ``{"inputs": {"image": [...]}}`` becomes when served): as the DataFrame;
    - a uint8 array [H,W,3] / [N,H,W,3], a list of arrays (sizes may differ), or an array / list of base64
      strings or encoded bytes -> a list of class-id masks [H,W], each at its input's size.
    Param ``batch_size`` (default 8) sets the inference batch.
    """

    def load_context(self, context) -> None:
        from segmodels.models import load_package

        self.model, self.spec = load_package(context.artifacts[PACKAGE_ARTIFACT])

    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None):
        """Masks for ``model_input`` (any form of the class docstring: ``pd.DataFrame`` is the hint MLflow takes
        without converting or validating the input); an input it cannot read raises an MlflowException of
        INVALID_PARAMETER_VALUE, which the scoring server answers as a 400 whose message is the reason."""
        try:
            return self._masks(model_input, params or {})
        except InvalidInput as error:
            raise MlflowException.invalid_parameter_value(str(error)) from None

    def _masks(self, model_input, params: dict[str, Any]):
        from segmodels.inference import predict

        batch_size = int(params.get("batch_size", 8))
        if isinstance(model_input, dict):  # {"inputs": {"image": ...}} when served: the column by itself
            if IMAGE_COLUMN not in model_input:
                raise InvalidInput(f"input needs the key {IMAGE_COLUMN!r}, got {list(model_input)}")
            values = model_input[IMAGE_COLUMN]
            model_input = pd.DataFrame({IMAGE_COLUMN: [values] if isinstance(values, (str, bytes)) else list(values)})
        if isinstance(model_input, pd.DataFrame):
            if IMAGE_COLUMN not in model_input.columns:
                raise InvalidInput(f"input DataFrame needs a column {IMAGE_COLUMN!r}, "
                                   f"got {list(model_input.columns)}")
            output_format = params.get("output_format", "png")
            if output_format not in OUTPUT_FORMATS:
                raise InvalidInput(f"output_format {output_format!r}: expected one of {OUTPUT_FORMATS}")
            images = [decode_image(v) for v in model_input[IMAGE_COLUMN]]
            masks = predict(self.model, self.spec, images, batch_size=batch_size)
            return pd.DataFrame({MASK_COLUMN: [encode_png(m) if output_format == "png" else m for m in masks]})
        if isinstance(model_input, np.ndarray) and model_input.dtype.kind in "OSU":  # encoded images, one a row
            images = [decode_image(v) for v in model_input.reshape(-1)]
        elif isinstance(model_input, np.ndarray) and model_input.ndim == 4:
            images = list(model_input)
        elif isinstance(model_input, np.ndarray):
            images = [model_input]
        else:
            images = [decode_image(v) for v in model_input]
        return predict(self.model, self.spec, images, batch_size=batch_size)


def _example_frame(spec) -> pd.DataFrame:
    height, width = spec.image_size
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    return pd.DataFrame({IMAGE_COLUMN: [encode_png(image)]})


def save_pyfunc_model(package_dir: str | Path, path: str | Path) -> Path:
    """Write the complete MLflow pyfunc model of a package into the new folder ``path`` (MLmodel, environment
    files, the wrapper, the package's weights, and the ``segmodels`` code as ``code_paths`` so it is
    self-contained), with a signature and an input example; returns ``path``."""
    from segmodels.models import load_spec

    package_dir = Path(package_dir)
    mlflow.pyfunc.save_model(
        path=str(path),
        python_model=str(Path(__file__).with_name("pyfunc_model.py")),  # models from code: nothing pickled
        artifacts={PACKAGE_ARTIFACT: str(package_dir)},
        code_paths=[str(Path(segmodels.__file__).parent)],
        signature=SIGNATURE,
        input_example=_example_frame(load_spec(package_dir)),
        pip_requirements=[f"{name}=={version(name).split('+')[0]}" for name in RUNTIME_REQUIREMENTS],
    )
    return Path(path)
