"""Data: source formats, validation, the normalised layout and the torch Dataset (reading and writing local files;
putting data sets into lakeFS is `segmodels.dataset_store`)."""

from segmodels.data.balance import median_frequency_weights
from segmodels.data.classes import ClassSpec
from segmodels.data.demo import generate_demo_dataset
from segmodels.data.errors import DataValidationError, Issue, ValidationReport
from segmodels.data.formats import create_reader, detect_format, list_formats, register_format
from segmodels.data.info import DatasetInfo, load_dataset_info
from segmodels.data.layout import Layout
from segmodels.data.prepare import PreparedDataset, prepare_dataset
from segmodels.data.stats import ClassStats, DatasetStats


def __getattr__(name: str):
    """SegmentationDataset is imported on first use, so reading and ingesting data never loads torch."""
    if name == "SegmentationDataset":
        from segmodels.data.dataset import SegmentationDataset

        return SegmentationDataset
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ClassSpec",
    "ClassStats",
    "DataValidationError",
    "DatasetInfo",
    "DatasetStats",
    "Issue",
    "Layout",
    "PreparedDataset",
    "SegmentationDataset",
    "ValidationReport",
    "create_reader",
    "detect_format",
    "generate_demo_dataset",
    "list_formats",
    "median_frequency_weights",
    "load_dataset_info",
    "prepare_dataset",
    "register_format",
]
