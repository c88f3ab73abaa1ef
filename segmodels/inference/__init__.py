"""Inference: ``predict(model, spec, images)``; the MLflow pyfunc flavour lives in ``segmodels.inference.pyfunc``."""
from .predictor import InvalidInput, predict, predict_files, to_image_tensor

__all__ = ["InvalidInput", "predict", "predict_files", "to_image_tensor"]
