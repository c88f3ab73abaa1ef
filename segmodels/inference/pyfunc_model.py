"""The file MLflow's models-from-code saves and runs to build the pyfunc model: the model folder holds this code,
not a pickled object (no cloudpickle warning, nothing unpickled on load)."""

import mlflow

from segmodels.inference.pyfunc import SegmentationPyfunc

mlflow.models.set_model(SegmentationPyfunc())
