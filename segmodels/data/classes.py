"""Class declarations: names, ids and colours, parsed from config or class files."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from segmodels.data.errors import DataValidationError, clipped
from segmodels.data.safe_yaml import load_yaml

IGNORE_NAMES = ("__ignore__",)
CLASS_FILES = ("dataset.yaml", "classes.yaml", "classes.txt", "labels.txt", "class_names.txt")


@dataclass(frozen=True)
class ClassSpec:
    """One class of a data set: its mask id, name and display colour."""

    id: int
    name: str
    color: tuple[int, int, int]

    def to_dict(self) -> dict:
        return {"id": self.id, "name": self.name, "color": list(self.color)}


def voc_color(class_id: int) -> tuple[int, int, int]:
    """Colour of `class_id` in the Pascal VOC palette (also used as the default palette)."""
    r = g = b = 0
    c = class_id
    for shift in range(7, -1, -1):
        r |= ((c >> 0) & 1) << shift
        g |= ((c >> 1) & 1) << shift
        b |= ((c >> 2) & 1) << shift
        c >>= 3
    return (r, g, b)


def voc_palette() -> list[int]:
    """The 256-entry VOC palette, flat [r, g, b, r, g, b, ...] as PIL expects it."""
    return [channel for class_id in range(256) for channel in voc_color(class_id)]


def parse_classes(declared: Iterable) -> list[ClassSpec]:
    """Class specs from a list of names (ids in order) or of mappings with `name` and optional `id`/`color`."""
    specs = []
    for index, entry in enumerate(declared):
        if isinstance(entry, str):
            class_id, name, color = index, entry, None
        elif isinstance(entry, Mapping):
            if "name" not in entry:
                raise DataValidationError(f"class entry {clipped(dict(entry))} has no name")
            class_id, name, color = int(entry.get("id", index)), str(entry["name"]), entry.get("color")
        else:
            raise DataValidationError(f"class entry {clipped(entry)} is neither a name nor a mapping")
        color = tuple(int(c) for c in color) if color is not None else voc_color(class_id)
        specs.append(ClassSpec(class_id, name, color))
    return check_classes(specs)


def check_classes(specs: list[ClassSpec]) -> list[ClassSpec]:
    """Refuse empty, duplicate or out-of-range class declarations; return specs sorted by id."""
    if not specs:
        raise DataValidationError("no classes declared")
    ids = [spec.id for spec in specs]
    names = [spec.name for spec in specs]
    for label, values in (("id", ids), ("name", names)):
        duplicates = sorted({v for v in values if values.count(v) > 1}, key=str)
        if duplicates:
            raise DataValidationError(f"duplicate class {label}(s) in declaration: {clipped(duplicates)}")
    bad = [i for i in ids if not 0 <= i <= 254]
    if bad:
        raise DataValidationError(
            f"class ids {clipped(bad)} outside 0..254 (masks are 8-bit, 255 is reserved for ignore)"
        )
    return sorted(specs, key=lambda spec: spec.id)


def read_class_file(path: Path) -> list[ClassSpec]:
    """Classes from a YAML file (`classes:` list) or a text file (one name a line, labelme's `__ignore__` skipped)."""
    path = Path(path)
    if not path.is_file():
        raise DataValidationError(f"{path}: class file not found")
    if path.suffix in (".yaml", ".yml"):
        document = load_yaml(path.read_text()) or {}
        entries = document.get("classes") if isinstance(document, Mapping) else document
        if not entries:
            raise DataValidationError(f"{path}: no `classes` list")
        return parse_classes(entries)
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    return parse_classes([name for name in names if name not in IGNORE_NAMES])


def find_class_file(*folders: Path) -> Path | None:
    """First conventional class declaration file in folders (dataset.yaml, classes.yaml, *.txt lists)."""
    for folder in folders:
        for name in CLASS_FILES:
            if (Path(folder) / name).is_file():
                return Path(folder) / name
    return None
