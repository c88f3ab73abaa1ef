"""`dataset.yaml`: the description of a normalised data set (classes, ignore index, split counts, class statistics)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from segmodels.data.classes import ClassSpec, parse_classes
from segmodels.data.errors import DataValidationError
from segmodels.data.layout import SPLITS, Layout
from segmodels.data.safe_yaml import load_yaml
from segmodels.data.stats import CLASS_STATS_KEY, ClassStats


@dataclass(frozen=True)
class DatasetInfo:
    """Parsed `dataset.yaml`."""

    name: str
    classes: tuple[ClassSpec, ...]
    ignore_index: int
    splits: dict[str, int]  # images per split
    extra: dict = field(default_factory=dict)  # further keys, kept as written (e.g. source_format, class_stats)

    @property
    def num_classes(self) -> int:
        return max(spec.id for spec in self.classes) + 1

    @property
    def class_names(self) -> list[str]:
        by_id = {spec.id: spec.name for spec in self.classes}
        return [by_id.get(i, f"class_{i}") for i in range(self.num_classes)]

    @property
    def colors(self) -> list[tuple[int, int, int]]:
        by_id = {spec.id: spec.color for spec in self.classes}
        return [by_id.get(i, (0, 0, 0)) for i in range(self.num_classes)]

    @property
    def class_stats(self) -> dict[str, ClassStats] | None:
        """Per split (train, val, test) class statistics (see `segmodels.data.stats`), or None when `dataset.yaml`
        has none (ingested by an older segmodels); DataValidationError when they are malformed."""
        document = self.extra.get(CLASS_STATS_KEY)
        if document is None:
            return None
        if not isinstance(document, dict):
            raise DataValidationError(f"dataset.yaml `{CLASS_STATS_KEY}`: not a mapping of split to statistics")
        return {
            str(split): ClassStats.from_dict(value, self.num_classes, f"dataset.yaml `{CLASS_STATS_KEY}.{split}`")
            for split, value in document.items()
        }

    def to_dict(self) -> dict:
        """The `dataset.yaml` document (stable key order)."""
        document = {
            "name": self.name,
            "num_classes": self.num_classes,
            "ignore_index": self.ignore_index,
            "classes": [spec.to_dict() for spec in self.classes],
            "splits": {split: int(self.splits.get(split, 0)) for split in SPLITS},
            "num_images": sum(int(self.splits.get(split, 0)) for split in SPLITS),
        }
        document.update(self.extra)
        return document


def write_dataset_info(info: DatasetInfo, layout: Layout) -> Path:
    """Write the layout's `dataset.yaml` (stable key order, so equal info gives equal bytes)."""
    layout.dataset_file.write_text(yaml.safe_dump(info.to_dict(), sort_keys=False, default_flow_style=None))
    return layout.dataset_file


def load_dataset_info(root: Path) -> DatasetInfo:
    """Parse the `dataset.yaml` of the layout at root; raises DataValidationError naming the file when absent or
    malformed."""
    path = Layout(root).dataset_file
    if not path.is_file():
        raise DataValidationError(f"{path}: not found (is {root} a prepared data set?)")
    try:
        document = load_yaml(path.read_text())
    except yaml.YAMLError as error:
        raise DataValidationError(f"{path}: invalid YAML ({error.__class__.__name__})") from None
    if not isinstance(document, dict):
        raise DataValidationError(f"{path}: not a mapping")
    missing = [key for key in ("classes", "ignore_index") if key not in document]
    if missing:
        raise DataValidationError(f"{path}: no {' or '.join(f'`{key}`' for key in missing)}")
    known = {"name", "num_classes", "ignore_index", "classes", "splits", "num_images"}
    return DatasetInfo(
        name=str(document.get("name") or Path(root).name),
        classes=tuple(parse_classes(document["classes"])),
        ignore_index=int(document["ignore_index"]),
        splits={str(k): int(v) for k, v in (document.get("splits") or {}).items()},
        extra={k: v for k, v in document.items() if k not in known},
    )
