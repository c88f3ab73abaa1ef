"""Inference: ``predict(model, spec, images)``; the MLflow pyfunc flavour lives in ``segmodels.inference.pyfunc``."""

from .options import InferenceOptions, InvalidInput
from .predictor import predict, predict_files, to_image_tensor

__all__ = ["InferenceOptions", "InvalidInput", "predict", "predict_files", "to_image_tensor"]
