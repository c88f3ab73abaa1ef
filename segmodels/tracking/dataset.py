"""MLflow side of ingest: statistics table and plot, validation report, and the data set as a run input.

What is logged here is redacted (:mod:`segmodels.redaction`): a data set named after its source, or a report
quoting it, never records the source's credentials."""

from __future__ import annotations

import io
from typing import Any

import mlflow
from mlflow.data.dataset import Dataset
from mlflow.data.dataset_source import DatasetSource
from mlflow.data.dataset_source_registry import register_dataset_source

from segmodels.data.card import dataset_card, summary_lines
from segmodels.data.info import DatasetInfo
from segmodels.data.stats import DatasetStats
from segmodels.redaction import redact_text, redact_value
from segmodels.visualize import pyplot

ARTIFACT_DIR = "data"
CARD_FILE = "dataset_card.html"


class LakeFSDatasetSource(DatasetSource):
    """A data set pinned at a lakeFS commit: `lakefs://<repo>/<commit_id>/<prefix>`."""

    def __init__(self, uri: str):
        self.uri = uri

    @staticmethod
    def _get_source_type() -> str:
        return "lakefs"

    def load(self, dst_path=None, lakefs=None) -> str:
        """Download the pinned prefix with the ``lakefs`` client and return the local folder.

        MLflow rebuilds a logged source from its dict alone and calls ``load()`` without arguments
        (``mlflow.data.get_source(run.inputs.dataset_inputs[0].dataset).load()``), so without ``lakefs`` the
        source connects as the pipeline steps do: ``segmodels.versioning.connect()``.
        """
        from segmodels.versioning import LakeFSUri, connect

        uri = LakeFSUri.parse(self.uri)
        client = lakefs or connect()
        return str(client.download_prefix(uri.repo, uri.ref, uri.path, dest=dst_path))

    @staticmethod
    def _can_resolve(raw_source: Any) -> bool:
        return isinstance(raw_source, str) and raw_source.startswith("lakefs://")

    @classmethod
    def _resolve(cls, raw_source: Any) -> LakeFSDatasetSource:
        return cls(str(raw_source))

    def to_dict(self) -> dict[str, Any]:
        return {"uri": self.uri}

    @classmethod
    def from_dict(cls, source_dict: dict[Any, Any]) -> LakeFSDatasetSource:
        return cls(source_dict["uri"])


register_dataset_source(LakeFSDatasetSource)


class LakeFSSegmentationData(Dataset):
    """The normalised segmentation data set at a lakeFS commit, as MLflow shows it under a run's data sets."""

    def __init__(self, uri: str, commit_id: str, info: DatasetInfo, stats: DatasetStats | None = None):
        self._commit_id = commit_id
        self._info = info
        self._stats = stats
        super().__init__(
            source=LakeFSDatasetSource(redact_text(uri)), name=redact_text(info.name), digest=commit_digest(commit_id)
        )

    def _compute_digest(self) -> str:
        return commit_digest(self._commit_id)

    @property
    def profile(self) -> dict:
        profile = {
            "num_classes": self._info.num_classes,
            "classes": self._info.class_names,
            "splits": dict(self._info.splits),
        }
        if self._stats is not None:
            profile.update(self._stats.summary())
        return profile

    @property
    def schema(self):
        return None

    def to_dict(self) -> dict[str, str]:
        import json

        config = super().to_dict()
        config["profile"] = json.dumps(self.profile)
        return redact_value(config)


def commit_digest(commit_id: str) -> str:
    """MLflow digest tied to the lakeFS commit (its first 16 hex digits; MLflow keeps digests short)."""
    return commit_id[:16]


def log_dataset_input(
    uri: str, commit_id: str, info: DatasetInfo, stats: DatasetStats | None = None, context: str = "ingest"
) -> None:
    """Record the pinned data set as an input of the active run (shown under the run's data sets)."""
    mlflow.log_input(LakeFSSegmentationData(uri, commit_id, info, stats), context=context)


def plot_dataset_stats(stats: DatasetStats, info: DatasetInfo):
    """Figure: class pixel frequencies (bars, class colours) and image sizes (scatter sized by count)."""
    plt = pyplot()
    table = stats.class_table(info.class_names, info.ignore_index)
    sizes = stats.size_table()
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    colors = [
        tuple(c / 255 for c in info.colors[i]) if i < info.num_classes else (0.6, 0.6, 0.6) for i in table["class_id"]
    ]
    left.bar(range(len(table["class_id"])), table["pixel_fraction"], color=colors, edgecolor="black", linewidth=0.5)
    left.set_xticks(range(len(table["class_id"])), table["class_name"], rotation=60, ha="right", fontsize=8)
    left.set_ylabel("fraction of pixels")
    left.set_title("class pixel frequencies")
    right.scatter(
        sizes["width"], sizes["height"], s=[20 + 200 * n / max(sizes["images"]) for n in sizes["images"]], alpha=0.6
    )
    right.set_xlabel("width (px)")
    right.set_ylabel("height (px)")
    right.set_title(f"image sizes ({stats.num_images} images, {len(sizes['width'])} distinct)")
    figure.tight_layout()
    return figure


def log_ingest(result) -> list[str]:
    """Log an IngestResult to the active MLflow run: stats tables and plot, the data-set card, the report when files
    were skipped, dataset.yaml, and the data set as an input whose source is the pinned URI and whose digest is the
    commit's. Returns the data set's summary lines (the card's too)."""
    plt = pyplot()
    mlflow.log_table(
        result.stats.class_table(result.info.class_names, result.info.ignore_index),
        f"{ARTIFACT_DIR}/class_frequencies.json",
    )
    mlflow.log_table(result.stats.size_table(), f"{ARTIFACT_DIR}/image_sizes.json")
    figure = plot_dataset_stats(result.stats, result.info)
    mlflow.log_figure(figure, f"{ARTIFACT_DIR}/statistics.png")
    plot = io.BytesIO()
    figure.savefig(plot, format="png", dpi=72)
    plt.close(figure)
    summary = summary_lines(result.info, result.stats, len(result.report))
    card = dataset_card(result.root, result.info, result.stats, summary, plot.getvalue())
    mlflow.log_text(redact_text(card), f"{ARTIFACT_DIR}/{CARD_FILE}")
    mlflow.log_dict(redact_value(result.info.to_dict()), f"{ARTIFACT_DIR}/dataset.yaml")
    if result.report:
        mlflow.log_text(redact_text(result.report.to_csv()), f"{ARTIFACT_DIR}/validation_report.csv")
        mlflow.log_dict(redact_value(result.report.to_dict()), f"{ARTIFACT_DIR}/validation_report.json")
    log_dataset_input(result.uri, result.commit_id, result.info, result.stats, context="ingest")
    return summary
