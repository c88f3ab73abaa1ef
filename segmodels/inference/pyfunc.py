"""MLflow pyfunc flavour over a model package: images in (arrays, or base64 PNG/JPEG in a DataFrame column
``image``), class-id masks out."""

from __future__ import annotations

import base64
import io
import os
from importlib.metadata import version
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.types.schema import ParamSchema, ParamSpec
from PIL import Image

import segmodels
from segmodels.data.formats.base import ReadLimits, open_image, read_limits
from segmodels.inference.options import InferenceOptions, InvalidInput

PACKAGE_ARTIFACT = "package"
IMAGE_COLUMN = "image"
MASK_COLUMN = "mask"
OUTPUT_FORMATS = ("png", "array")
BATCH_SIZES = (1, 1024)
MAX_PIXELS_ENV = "SEGMODELS_MAX_IMAGE_PIXELS"  # the serving limit of width x height; default: ingest's
MAX_BODY_ENV = "SEGMODELS_MAX_REQUEST_BYTES"  # the largest request body the served model parses
MAX_BODY_BYTES = 64 << 20
ECHO_END = "'. \nError: "  # where the scoring server's echo of a failed request ends and the reason starts
# what the model needs to load and predict, pinned to the versions it was saved with; segmodels itself travels
# as code_paths (it is not on a package index)
RUNTIME_REQUIREMENTS = ("mlflow", "cloudpickle", "torch", "torchvision", "timm", "numpy", "pandas", "pillow", "pyyaml")
DEFAULT_OPTIONS = InferenceOptions()
SIGNATURE = ModelSignature(
    inputs=None,  # any of the input forms below; a column schema would refuse arrays and lists
    outputs=None,
    params=ParamSchema(
        [
            ParamSpec("batch_size", "long", 8),
            ParamSpec("output_format", "string", "png"),
            ParamSpec("tta", "string", DEFAULT_OPTIONS.tta),
            ParamSpec("mode", "string", DEFAULT_OPTIONS.mode),
            ParamSpec("overlap", "double", DEFAULT_OPTIONS.overlap),
        ]
    ),
)


def env_limit(name: str, default: int) -> int:
    """The positive whole number in ``$name``, else ``default``; ValueError (one line) for anything else."""
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    if not value.isdigit() or int(value) <= 0:
        raise ValueError(f"{name}={value[:80]!r}: expected a positive whole number")
    return int(value)


def guard_scoring_server(max_body_bytes: int) -> None:
    """Make MLflow's scoring server refuse, with a 400 saying why, a request body above ``max_body_bytes`` before
    it is parsed (parsing JSON costs several times the body) and JSON nested past Python's recursion limit (a 500
    otherwise), and answer a refused request with the reason alone (it echoed the whole request before it).
    The server reads the whole body first and has no setting for either (``mlflow.pyfunc.scoring_server``:
    ``await request.body()``, then ``invocations``), so its ``invocations`` is wrapped; a hard cap on bodies
    needs a proxy in front (e.g. nginx ``client_max_body_size``)."""

    from mlflow.pyfunc import scoring_server

    parse = getattr(scoring_server.invocations, "__wrapped__", scoring_server.invocations)

    def invocations(data, content_type, model, input_schema):
        if len(data) > max_body_bytes:
            raise MlflowException.invalid_parameter_value(
                f"request body of {len(data)} bytes, above ${MAX_BODY_ENV}={max_body_bytes}"
            )
        try:
            return parse(data, content_type, model, input_schema)
        except MlflowException as error:  # the server prefixes the whole request: "Failed to predict data '...'"
            error.message = error.message.rsplit(ECHO_END, 1)[-1] if ECHO_END in error.message else error.message
            raise
        except RecursionError:
            raise MlflowException.invalid_parameter_value(
                "request JSON nested too deeply to parse (an image is at most 3 levels of lists)"
            ) from None

    invocations.__wrapped__ = parse
    scoring_server.invocations = invocations


def decode_image(value, max_pixels: int | None = None) -> np.ndarray:
    """An RGB uint8 array from base64 text or raw bytes of a PNG/JPEG, or from an array-like; an image of more than
    ``max_pixels`` (width x height) is refused, an encoded one from its header before any pixel is decoded."""
    if isinstance(value, str):
        try:
            value = base64.b64decode(value, validate=True)
        except ValueError as err:
            raise InvalidInput(f"image column value is not valid base64 ({err})") from None
    if isinstance(value, (bytes, bytearray)):
        try:
            with read_limits(ReadLimits(max_image_pixels=None)), open_image(bytes(value)) as image:
                check_pixels(image.width, image.height, max_pixels, "(refused before decoding)")
                return np.asarray(image.convert("RGB"))
        except OSError as err:
            raise InvalidInput(f"image bytes are not a readable PNG/JPEG ({err})") from None
    try:
        array = np.asarray(value)
    except (ValueError, RecursionError) as err:  # ragged or absurdly nested lists
        raise InvalidInput(f"image is not an array of pixels ({str(err)[:80]})") from None
    if array.ndim >= 2:
        check_pixels(array.shape[1], array.shape[0], max_pixels)
    return array


def check_pixels(width: int, height: int, max_pixels: int | None, note: str = "") -> None:
    """InvalidInput naming the limit when a ``width`` x ``height`` image has more than ``max_pixels`` pixels."""
    if max_pixels is not None and width * height > max_pixels:
        raise InvalidInput(
            f"image of {width}x{height} = {width * height} pixels, above the limit of a served "
            f"image ${MAX_PIXELS_ENV}={max_pixels} {note}".rstrip()
        )


def encode_png(array: np.ndarray) -> str:
    """Base64 text of a lossless PNG of an image or class-id mask (uint8)."""
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def request_options(params: dict[str, Any]) -> tuple[int, str, InferenceOptions]:
    """``batch_size``, ``output_format`` and the :class:`InferenceOptions` of a request's params, each checked
    (InvalidInput, one line, otherwise)."""
    batch_size = params.get("batch_size", 8)
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, (int, np.integer))
        or not (BATCH_SIZES[0] <= batch_size <= BATCH_SIZES[1])
    ):
        raise InvalidInput(
            f"batch_size={str(batch_size)[:80]!r}: expected a whole number from {BATCH_SIZES[0]} to {BATCH_SIZES[1]}"
        )
    output_format = params.get("output_format", "png")
    if output_format not in OUTPUT_FORMATS:
        raise InvalidInput(f"output_format={str(output_format)[:80]!r}: expected one of {', '.join(OUTPUT_FORMATS)}")
    options = InferenceOptions(
        tta=params.get("tta", DEFAULT_OPTIONS.tta),
        mode=params.get("mode", DEFAULT_OPTIONS.mode),
        overlap=params.get("overlap", DEFAULT_OPTIONS.overlap),
    )
    return int(batch_size), output_format, options


class SegmentationPyfunc(mlflow.pyfunc.PythonModel):
    """Serves a segmodels package.

    - ``pd.DataFrame`` with column ``image`` holding base64 PNG/JPEG strings, bytes, or image arrays / nested
      lists (JSON serving) -> ``pd.DataFrame`` with column ``mask``: the class-id mask at the image's size, as
      base64 PNG (param ``output_format="png"``, the default) or as a uint8 array (``"array"``);
    - a dict with key ``image`` (what ``{"inputs": {"image": [...]}}`` becomes when served): as the DataFrame;
    - a uint8 array [H,W,3] / [N,H,W,3], a list of arrays (sizes may differ), or an array / list of base64
      strings or encoded bytes -> a list of class-id masks [H,W], each at its input's size.
    Params: ``batch_size`` (1 to 1024, default 8: images, or windows, a batch; images are decoded a batch at a
    time), ``tta`` (``false`` | ``hflip`` | ``flips``), ``mode`` (``auto`` | ``resize`` | ``sliding``) and
    ``overlap`` (0 to 0.75) as :class:`~segmodels.inference.options.InferenceOptions` documents them. An image of
    more than ``$SEGMODELS_MAX_IMAGE_PIXELS`` pixels (default: ingest's ``data.max_image_pixels``) is refused, and
    when served, a request body above ``$SEGMODELS_MAX_REQUEST_BYTES`` (64 MiB) (:func:`guard_scoring_server`).
    """

    def load_context(self, context) -> None:
        from segmodels.models import load_package

        self.max_pixels = env_limit(MAX_PIXELS_ENV, ReadLimits().max_image_pixels)
        guard_scoring_server(env_limit(MAX_BODY_ENV, MAX_BODY_BYTES))
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
        batch_size, output_format, options = request_options(params)
        if isinstance(model_input, dict):  # {"inputs": {"image": ...}} when served: the column by itself
            if IMAGE_COLUMN not in model_input:
                raise InvalidInput(f"input needs the key {IMAGE_COLUMN!r}, got {list(model_input)[:10]}")
            values = model_input[IMAGE_COLUMN]
            model_input = pd.DataFrame({IMAGE_COLUMN: [values] if isinstance(values, (str, bytes)) else list(values)})
        if isinstance(model_input, pd.DataFrame):
            if IMAGE_COLUMN not in model_input.columns:
                raise InvalidInput(
                    f"input DataFrame needs a column {IMAGE_COLUMN!r}, got {list(model_input.columns)[:10]}"
                )
            masks = self._predict(list(model_input[IMAGE_COLUMN]), batch_size, options)
            return pd.DataFrame({MASK_COLUMN: [encode_png(m) if output_format == "png" else m for m in masks]})
        if isinstance(model_input, np.ndarray) and model_input.dtype.kind in "OSU":  # encoded images, one a row
            values = list(model_input.reshape(-1))
        elif isinstance(model_input, np.ndarray) and model_input.ndim == 4:
            values = list(model_input)
        elif isinstance(model_input, np.ndarray):
            values = [model_input]
        else:
            values = list(model_input)
        return self._predict(values, batch_size, options)

    def _predict(self, values: list, batch_size: int, options: InferenceOptions) -> list[np.ndarray]:
        """The masks of ``values`` (encoded images or arrays), decoded and predicted ``batch_size`` at a time."""
        from segmodels.inference import predict

        masks: list[np.ndarray] = []
        for start in range(0, len(values), batch_size):
            images = [decode_image(value, self.max_pixels) for value in values[start : start + batch_size]]
            masks.extend(predict(self.model, self.spec, images, batch_size=batch_size, options=options))
        return masks


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
