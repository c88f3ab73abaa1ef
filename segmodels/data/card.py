"""What an ingest made, told to people: the console summary and the data-set card, a self-contained HTML page
(class statistics plot, class legend, sample image/mask overlays per split; images inlined as PNG thumbnails)."""

from __future__ import annotations

import base64
import html
import io

import numpy as np
from PIL import Image

from segmodels.data.info import DatasetInfo
from segmodels.data.layout import SPLITS, Layout
from segmodels.data.stats import DatasetStats
from segmodels.visualize import overlay

SAMPLES_PER_SPLIT = 4
THUMBNAIL_PX = 160  # longest side of a card image
IGNORED_COLOR = (255, 255, 255)  # ignored pixels on the card (class colours may include black)


def summary_lines(info: DatasetInfo, stats: DatasetStats, skipped: int) -> list[str]:
    """The data set in a few lines: images per split, each class's pixel share per split, the ignored share,
    masks resized, files skipped, and binary masks read as two classes."""
    counts = ", ".join(f"{split} {stats.split_images.get(split, 0)}" for split in SPLITS)
    lines = [f"data set {info.name!r}: {stats.num_images} images ({counts}), {info.num_classes} classes"]
    shares = {split: _pixel_shares(stats, split) for split in SPLITS if stats.split_images.get(split)}
    header = " / ".join(shares)
    for class_id, name in enumerate(info.class_names):
        lines.append(
            f"  {name} ({class_id}): "
            + " / ".join(f"{s[class_id]:.1%}" for s in shares.values())
            + f" of the pixels ({header})"
        )
    ignored = " / ".join(f"{s[info.ignore_index]:.1%}" for s in shares.values())
    lines.append(f"  ignored ({info.ignore_index}): {ignored} ({header})")
    lines.append(f"  masks resized: {info.extra.get('masks_resized', 0)}; files skipped: {skipped}")
    binary = info.extra.get("binary_masks")
    if binary:
        mapped = ", ".join(f"{value} -> {name}" for value, name in binary["classes"].items())
        lines.append(f"  binary masks: {mapped} (as {binary['as']})")
    return lines


def _pixel_shares(stats: DatasetStats, split: str) -> np.ndarray:
    pixels = stats.by_split[split].pixels
    return pixels / max(int(pixels.sum()), 1)


def dataset_card(root, info: DatasetInfo, stats: DatasetStats, summary: list[str], plot_png: bytes | None) -> str:
    """The HTML card of the prepared data set at `root` (no external resources)."""
    layout = Layout(root)
    legend = (
        "".join(
            f'<span class="swatch" style="background:rgb{tuple(color)}"></span>{html.escape(name)} ({class_id}) '
            for class_id, (name, color) in enumerate(zip(info.class_names, info.colors))
        )
        + f'<span class="swatch" style="background:rgb{IGNORED_COLOR}"></span>ignored ({info.ignore_index})'
    )
    sections = []
    for split in SPLITS:
        images = layout.images(split)
        if not images:
            continue
        picked = [images[i] for i in np.linspace(0, len(images) - 1, min(SAMPLES_PER_SPLIT, len(images))).astype(int)]
        cells = "".join(_sample_cell(image, layout.mask_for(image), info) for image in picked)
        sections.append(f'<h2>{split} ({len(images)} images)</h2><div class="grid">{cells}</div>')
    plot = f'<img alt="class statistics" src="{_data_uri(plot_png)}">' if plot_png else ""
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>data set {html.escape(info.name)}</title>
<style>body{{font-family:sans-serif;margin:1.5em}} pre{{background:#f4f4f4;padding:.6em}}
.grid{{display:flex;flex-wrap:wrap;gap:8px}} figure{{margin:0}} figcaption{{font-size:12px}}
.swatch{{display:inline-block;width:12px;height:12px;margin:0 4px 0 10px;border:1px solid #333}}</style></head>
<body><h1>data set {html.escape(info.name)}</h1>
<pre>{html.escape(chr(10).join(summary))}</pre>
<p>classes: {legend}</p>
{plot}
{"".join(sections)}
</body></html>
"""


def _sample_cell(image_path, mask_path, info: DatasetInfo) -> str:
    """A figure: the image with its mask overlaid, as a thumbnail."""
    with Image.open(image_path) as image:
        image = image.convert("RGB")
        image.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
    with Image.open(mask_path) as mask:
        mask = np.asarray(mask.resize(image.size, Image.Resampling.NEAREST))
    colors = list(info.colors) + [(0, 0, 0)] * (info.ignore_index - info.num_classes) + [IGNORED_COLOR]
    blended = Image.fromarray(overlay(np.asarray(image), mask, colors[: max(info.num_classes, info.ignore_index + 1)]))
    buffer = io.BytesIO()
    blended.save(buffer, format="PNG")
    caption = html.escape(image_path.stem)
    return (
        f'<figure><img alt="{caption}" src="{_data_uri(buffer.getvalue())}"><figcaption>{caption}</figcaption></figure>'
    )


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
