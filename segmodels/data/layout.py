"""The normalised layout every part of segmodels reads: the one place its paths are spelled.

<root>/images/<split>/<name>.<ext>   images, copied byte for byte from the source
<root>/masks/<split>/<name>.png      8-bit class-id masks, one per image
<root>/manifest.csv                  every file with its checksum, size, split and kind
<root>/dataset.yaml                  classes, ignore index, split counts (written last)
"""

from __future__ import annotations

from pathlib import Path

SPLITS = ("train", "val", "test")


class Layout:
    """Paths of a normalised data set below `root`."""

    splits = SPLITS
    mask_suffix = ".png"

    def __init__(self, root):
        self.root = Path(root)
        self.images_dir = self.root / "images"
        self.masks_dir = self.root / "masks"
        self.dataset_file = self.root / "dataset.yaml"
        self.manifest_file = self.root / "manifest.csv"

    @property
    def entries(self) -> frozenset[str]:
        """Names of everything the layout holds directly below its root."""
        return frozenset(path.name for path in (self.images_dir, self.masks_dir, self.dataset_file, self.manifest_file))

    def image_path(self, split: str, file_name: str) -> Path:
        """Where image `file_name` (name and extension) of `split` lives."""
        return self.images_dir / split / file_name

    def mask_path(self, split: str, name: str) -> Path:
        """Where the mask of sample `name` of `split` lives."""
        return self.masks_dir / split / f"{name}{self.mask_suffix}"

    def mask_for(self, image: Path) -> Path:
        """The ground-truth mask of an image of this layout (which may be absent, e.g. for unlabelled data)."""
        image = Path(image)
        return self.mask_path(image.parent.name, image.stem)

    def images(self, split: str | None = None) -> list[Path]:
        """The images of `split` (of every split when None), sorted; none when the split is absent."""
        folders = [self.images_dir / split] if split else [self.images_dir / name for name in self.splits]
        return sorted(
            path
            for folder in folders
            if folder.is_dir()
            for path in folder.iterdir()
            if path.is_file() and not path.name.startswith(".")
        )

    def relative(self, path: Path) -> str:
        """`path` relative to the layout's root, with POSIX separators (as the manifest records it)."""
        return Path(path).relative_to(self.root).as_posix()
