"""segmodels: reproducible image segmentation with lineage in lakeFS and MLflow."""

__version__ = "0.1.0"
