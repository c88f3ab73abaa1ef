"""Inference: ``predict(model, spec, images)``; the MLflow pyfunc flavour lives in ``segmodels.inference.pyfunc``."""
from .predictor import predict, predict_files, to_image_tensor

__all__ = ["predict", "predict_files", "to_image_tensor"]
